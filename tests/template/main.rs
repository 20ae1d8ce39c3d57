//! Offline checks of infra/azuredeploy.json, the ARM template that deploys the whole app
//! (README: Deploy everything with one template): against Azure's published REST API specs
//! (trimmed extracts in tests/data/arm/, made by extract.py there), against itself
//! (references, dependencies), and against the README's step-by-step `az` path.
//!
//! What needs the network or a download stays outside: `.ci/check-template` runs the Azure
//! CLI's parser and checkov on the template.

mod expr;
mod model;
mod pattern;
mod readme;
mod spec;

use expr::{Expr, KNOWN_FUNCTIONS};
use model::{Template, BUILT_IN_TYPES};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const SITE: &str = "Microsoft.Web/sites";
const PLAN: &str = "Microsoft.Web/serverfarms";
const IDENTITY: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
const STORAGE: &str = "Microsoft.Storage/storageAccounts";
const CONTAINER: &str = "Microsoft.Storage/storageAccounts/blobServices/containers";
const INSIGHTS: &str = "Microsoft.Insights/components";
const CACHE: &str = "Microsoft.Cache/redisEnterprise";
const DATABASE: &str = "Microsoft.Cache/redisEnterprise/databases";
const ACCESS: &str = "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments";
const ROLE: &str = "Microsoft.Authorization/roleAssignments";
const BLOB_DATA_OWNER: &str = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b";
const METRICS_PUBLISHER: &str = "3913510d-42f4-4e42-8a64-420c390055eb";

/// App settings Flex Consumption refuses (docs/azure.md, Hosting plans), and the prefix of
/// a family of them.
const FLEX_FORBIDDEN: &[&str] = &[
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
];
const FLEX_FORBIDDEN_PREFIX: &str = "WEBSITE_CONTENT";

/// The repository; `TEMPLATE_TEST_ROOT` points the tests at a copy instead, which is how a
/// broken template or README is shown to fail them without touching the work tree.
fn root() -> PathBuf {
    std::env::var_os("TEMPLATE_TEST_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn template() -> Template {
    Template::load(&read("infra/azuredeploy.json"))
}

fn extracts() -> BTreeMap<String, Value> {
    spec::load_extracts(&root().join("tests/data/arm"))
}

/// The expression a template value holds; panics on a plain value.
fn expression(v: &Value) -> Expr {
    match v.as_str().and_then(expr::parse_value) {
        Some(Ok(e)) => e,
        _ => panic!("{v} is not an expression"),
    }
}

/// Whether `value` is `reference(<a resource of type ty>, ...).member`.
fn reference_to(t: &Template, value: &Value, ty: &str, member: &str) -> bool {
    let Some(Ok(Expr::Member(base, m))) = value.as_str().and_then(expr::parse_value) else {
        return false;
    };
    m == member
        && base
            .call("reference")
            .and_then(|args| t.referenced(args.first()?))
            .is_some_and(|i| t.resources[i].ty.eq_ignore_ascii_case(ty))
}

/// Whether `value` is `resourceId(...)` of the one resource of type `ty`.
fn id_of_the(t: &Template, value: &Value, ty: &str) -> bool {
    let Some(Ok(e)) = value.as_str().and_then(expr::parse_value) else {
        return false;
    };
    t.id_of(&e)
        .and_then(|(id, scope)| t.find(&id, scope.as_ref()))
        .is_some_and(|i| t.resources[i].ty.eq_ignore_ascii_case(ty))
}

/// The site's app settings by name.
fn app_settings(t: &Template) -> BTreeMap<String, Value> {
    let site = t.resource(SITE);
    site.json["properties"]["siteConfig"]["appSettings"]
        .as_array()
        .expect("appSettings")
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["value"].clone()))
        .collect()
}

/// The default of the parameter a value is `[parameters('x')]` of (`Null` for any other
/// value: the caller reports it).
fn parameter_default(t: &Template, value: &Value) -> Value {
    parameter_of(value)
        .and_then(|p| t.parameters().get(&p))
        .map_or(Value::Null, |p| p["defaultValue"].clone())
}

/// `x` for a value `[parameters('x')]`.
fn parameter_of(value: &Value) -> Option<String> {
    match value.as_str().and_then(expr::parse_value) {
        Some(Ok(e)) => e.parameter().map(String::from),
        _ => None,
    }
}

/// Every resource type and apiVersion the template uses is one Azure publishes: each has an
/// extract from a stable spec of Azure/azure-rest-api-specs listing a PUT for that type,
/// and no extract is left over from a type or version the template no longer uses.
#[test]
fn every_resource_type_and_api_version_is_in_the_published_specs() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &t.resources {
        if let Err(e) = spec::entry(&extracts, r) {
            errors.push(e);
        }
        used.entry(spec::extract_key(r)).or_default().insert(r.ty.clone());
    }
    for (key, extract) in &extracts {
        let api_version = extract["apiVersion"].as_str().unwrap_or_default();
        let sources = extract["sources"].as_array().cloned().unwrap_or_default();
        let own = sources.first().and_then(|s| s["path"].as_str()).unwrap_or_default();
        if !own.contains(&format!("/stable/{api_version}/")) {
            errors.push(format!("{key}: {own} is not the stable spec of {api_version}"));
        }
        for s in &sources {
            let commit = s["commit"].as_str().unwrap_or_default();
            if s["repository"] != "Azure/azure-rest-api-specs"
                || commit.len() != 40
                || !commit.chars().all(|c| c.is_ascii_hexdigit())
            {
                errors.push(format!("{key}: source {s} names no repository commit"));
            }
        }
        let types: BTreeSet<String> = extract["resourceTypes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        match used.get(key) {
            None => errors.push(format!("{key}: the template uses nothing from it")),
            Some(u) if *u != types => errors.push(format!("{key}: describes {types:?}, the template uses {u:?}")),
            _ => {}
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Each resource's body is what its PUT takes: required properties present, every property
/// one the spec has and not read-only, values (literal, or parameters and variables with
/// their allowed values) of the spec's type and among its enum values, recursively through
/// every object the template sets.
#[test]
fn resource_bodies_have_the_required_properties_of_the_right_types() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    for r in &t.resources {
        match spec::entry(&extracts, r) {
            Ok(entry) => errors.extend(spec::check_body(&t, r, entry)),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Resource names fit the name segments of their PUT paths: the right number of levels,
/// fixed segments (`default`) as the spec has them, literal names matching the spec's
/// pattern (the access policy assignment's `^[A-Za-z0-9]{1,60}$`), and name parameters
/// declaring lengths within the spec's.
#[test]
fn resource_names_follow_the_specs_name_rules() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    for r in &t.resources {
        if let Ok(entry) = spec::entry(&extracts, r) {
            errors.extend(spec::check_name(&t, r, entry));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The name patterns are matched as the specs mean them (look-ahead, groups, classes), so
/// the name test above can fail.
#[test]
fn spec_name_patterns_match_as_the_specs_mean() {
    let cases = [
        ("^[A-Za-z0-9]{1,60}$", "funcapp", true),
        ("^[A-Za-z0-9]{1,60}$", "func-app", false),
        ("^[A-Za-z0-9]{1,60}$", "", false),
        ("^[A-Za-z0-9]{1,60}$", &"a".repeat(61), false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "redis-x1-y", true),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "default", true),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "a--b", false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "-a", false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", &"a".repeat(61), false),
        ("^[a-z0-9]+$", "st0abc", true),
        ("^[a-z0-9]+$", "St0abc", false),
        (r"^[-\w\._\(\)]+$", "my_rg-1.(x)", true),
        (r"^[-\w\._\(\)]+$", "my rg", false),
    ];
    for (p, text, want) in cases {
        assert_eq!(pattern::is_match(p, text), Ok(want), "{p} on {text:?}");
    }
}

/// Every `parameters(...)` and `variables(...)` names a declared one, every `resourceId`,
/// `extensionResourceId`, `reference` and `scope` names a resource the template declares (or
/// a built-in role definition), `reference` asks for the declared apiVersion, every function
/// is one ARM has, and every parameter and variable is used.
#[test]
fn every_reference_resolves_and_every_parameter_is_used() {
    let t = template();
    let mut errors = Vec::new();
    let mut used_parameters = BTreeSet::new();
    let mut used_variables = BTreeSet::new();
    for (at, e) in t.all_expressions() {
        let mut nodes = Vec::new();
        e.walk(&mut nodes);
        for node in nodes {
            let Expr::Call(name, args) = node else {
                continue;
            };
            if !KNOWN_FUNCTIONS.contains(&name.as_str()) {
                errors.push(format!("{at}: {name}() is not an ARM function this template knows"));
            }
            let first = args.first().and_then(Expr::str);
            match name.as_str() {
                "parameters" => match first {
                    Some(p) if t.parameters().contains_key(p) => {
                        if !at.starts_with(&format!("$.parameters.{p}.")) {
                            used_parameters.insert(p.to_string());
                        }
                    }
                    _ => errors.push(format!("{at}: undeclared parameter in {node:?}")),
                },
                "variables" => match first {
                    Some(v) if t.variables().contains_key(v) => {
                        if !at.starts_with(&format!("$.variables.{v}")) {
                            used_variables.insert(v.to_string());
                        }
                    }
                    _ => errors.push(format!("{at}: undeclared variable in {node:?}")),
                },
                "resourceid" | "subscriptionresourceid" | "extensionresourceid" => match t.id_of(node) {
                    None => errors.push(format!("{at}: cannot read {node:?}")),
                    Some((id, scope)) => {
                        let built_in = BUILT_IN_TYPES.iter().any(|b| b.eq_ignore_ascii_case(&id.ty));
                        if !built_in && t.find(&id, scope.as_ref()).is_none() {
                            errors.push(format!("{at}: no declared resource is {node:?}"));
                        }
                    }
                },
                "reference" => match args.first().and_then(|a| t.referenced(a)) {
                    None => errors.push(format!("{at}: {node:?} names no declared resource")),
                    Some(i) => {
                        let declared = &t.resources[i].api_version;
                        if let Some(v) = args.get(1).and_then(Expr::str) {
                            if v != declared {
                                errors.push(format!(
                                    "{at}: reference asks for {v}, the resource is deployed with {declared}"
                                ));
                            }
                        }
                    }
                },
                _ => {}
            }
        }
    }
    for r in &t.resources {
        if let Some(scope) = &r.scope {
            if t.find(scope, None).is_none() {
                errors.push(format!("{}: its scope names no declared resource", r.label()));
            }
        }
    }
    for p in t.parameters().keys() {
        if !used_parameters.contains(p) {
            errors.push(format!("parameter {p} is never used"));
        }
    }
    for v in t.variables().keys() {
        if !used_variables.contains(v) {
            errors.push(format!("variable {v} is never used"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// `dependsOn` names declared resources and forms no cycle, and each resource depends
/// (directly or through others) on every declared resource it points at: its parent, its
/// scope, and those its body names with `resourceId` or `reference`.
#[test]
fn depends_on_names_declared_resources_and_forms_no_cycle() {
    let t = template();
    let mut errors = Vec::new();
    let n = t.resources.len();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in t.resources.iter().enumerate() {
        for d in r.json["dependsOn"].as_array().into_iter().flatten() {
            let target = match d.as_str().and_then(expr::parse_value) {
                Some(Ok(e)) => t.id_of(&e).and_then(|(id, scope)| t.find(&id, scope.as_ref())),
                _ => d
                    .as_str()
                    .and_then(|name| t.resources.iter().position(|x| x.json["name"].as_str() == Some(name))),
            };
            match target {
                Some(j) if j == i => errors.push(format!("{} depends on itself", r.label())),
                Some(j) => edges[i].push(j),
                None => errors.push(format!("{}: dependsOn {d} names no declared resource", r.label())),
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|&i| t.resources[i].label()).collect();
        errors.push(format!("dependsOn cycle: {}", names.join(" -> ")));
    } else {
        for (i, r) in t.resources.iter().enumerate() {
            let reachable = reachable(&edges, i);
            for needed in needs(&t, i) {
                if !reachable.contains(&needed) {
                    errors.push(format!(
                        "{} points at {} but does not depend on it",
                        r.label(),
                        t.resources[needed].label()
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A cycle of the graph, as the resources on it, first repeated last.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for &j in &edges[i] {
            if state[j] == 1 {
                let from = stack.iter().position(|&s| s == j).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, edges, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; edges.len()];
    (0..edges.len()).find_map(|i| {
        (state[i] == 0)
            .then(|| visit(i, edges, &mut state, &mut Vec::new()))
            .flatten()
    })
}

fn reachable(edges: &[Vec<usize>], from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = edges[from].clone();
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(&edges[i]);
        }
    }
    seen
}

/// The declared resources resource `i` must be deployed after.
fn needs(t: &Template, i: usize) -> BTreeSet<usize> {
    let r = &t.resources[i];
    let mut out = BTreeSet::new();
    if let Some(scope) = &r.scope {
        out.extend(t.find(scope, None));
    }
    // The nearest declared ancestor (a container's storage account: blobServices/default
    // exists without being declared).
    let mut ty = r.ty.as_str();
    let mut names = &r.id.names[..];
    while let Some((parent, _)) = ty.rsplit_once('/').filter(|(p, _)| p.contains('/')) {
        ty = parent;
        names = &names[..names.len().saturating_sub(1)];
        let id = model::Id {
            ty: ty.to_string(),
            names: names.to_vec(),
        };
        if let Some(j) = t.find(&id, r.scope.as_ref()) {
            out.insert(j);
            break;
        }
    }
    let mut found = Vec::new();
    let _ = expr::expressions(&r.body(), "$", &mut found);
    for (_, e) in found {
        let mut nodes = Vec::new();
        e.walk(&mut nodes);
        for node in nodes {
            if let Some(args) = node.call("reference") {
                out.extend(args.first().and_then(|a| t.referenced(a)));
            } else if let Some((id, scope)) = t.id_of(node) {
                out.extend(t.find(&id, scope.as_ref()));
            }
        }
    }
    out.remove(&i);
    out
}

/// The app is a Flex Consumption custom handler that reaches its storage, Application
/// Insights and Azure Managed Redis with its user-assigned identity, and nothing takes a key:
/// the plan and runtime Flex wants, no app setting Flex refuses, HTTPS and TLS 1.2 only,
/// identity-based AzureWebJobsStorage and deployment storage, the Redis settings the
/// handler reads pointing at the cache and the identity its access policy names.
#[test]
fn the_app_is_a_flex_custom_handler_reaching_everything_with_its_identity() {
    let t = template();
    let site = t.resource(SITE);
    let plan = t.resource(PLAN);
    let props = &site.json["properties"];
    let config = &props["functionAppConfig"];
    let settings = app_settings(&t);
    let identity_id = |v: &Value| id_of_the(&t, v, IDENTITY);
    let mut errors = Vec::new();
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            errors.push(what.to_string());
        }
    };

    expect(
        plan.json["sku"]["name"] == "FC1" && plan.json["sku"]["tier"] == "FlexConsumption",
        "plan is FC1 FlexConsumption",
    );
    expect(plan.json["properties"]["reserved"] == true, "plan is Linux (reserved)");
    expect(
        site.json["kind"] == "functionapp,linux",
        "site kind is functionapp,linux",
    );
    expect(id_of_the(&t, &props["serverFarmId"], PLAN), "site runs on the plan");
    expect(
        config["runtime"]["name"] == "custom" && config["runtime"]["version"] == "1.0",
        "runtime is custom 1.0",
    );
    expect(props["httpsOnly"] == true, "httpsOnly");
    expect(props["siteConfig"]["minTlsVersion"] == "1.2", "minTlsVersion 1.2");
    expect(props["siteConfig"]["ftpsState"] == "Disabled", "FTP disabled");

    for name in settings.keys() {
        let forbidden = FLEX_FORBIDDEN.contains(&name.as_str())
            || name.starts_with(FLEX_FORBIDDEN_PREFIX)
            || name == "AzureWebJobsStorage";
        expect(
            !forbidden,
            &format!("app setting {name} is not allowed on Flex or takes a key"),
        );
    }

    let identities = site.json["identity"]["userAssignedIdentities"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    expect(
        site.json["identity"]["type"] == "UserAssigned",
        "site identity is user-assigned",
    );
    expect(
        identities.len() == 1 && identities.keys().all(|k| identity_id(&Value::from(k.as_str()))),
        "site has the declared identity",
    );
    let storage = &config["deployment"]["storage"];
    expect(
        storage["type"] == "blobContainer",
        "deployment storage is a blob container",
    );
    expect(
        storage["authentication"]["type"] == "UserAssignedIdentity",
        "deployment storage uses the identity",
    );
    expect(
        identity_id(&storage["authentication"]["userAssignedIdentityResourceId"]),
        "deployment storage names the identity",
    );
    let container = t.resource(CONTAINER);
    let url = expression(&storage["value"]);
    let mut url_nodes = Vec::new();
    url.walk(&mut url_nodes);
    let container_name = container.id.names.last().cloned();
    expect(
        url_nodes.iter().any(|n| Some(t.seg(n)) == container_name)
            && url_nodes.iter().any(|n| matches!(n, Expr::Member(_, m) if m == "blob")),
        "deployment storage URL is the storage blob endpoint and the declared container",
    );

    let storage_account = t.resource(STORAGE);
    expect(
        settings.get("AzureWebJobsStorage__accountName") == Some(&storage_account.json["name"]),
        "AzureWebJobsStorage__accountName is the storage account",
    );
    expect(
        settings.get("AzureWebJobsStorage__credential") == Some(&Value::from("managedidentity")),
        "AzureWebJobsStorage__credential is managedidentity",
    );
    let client_id = |name: &str| {
        settings
            .get(name)
            .is_some_and(|v| reference_to(&t, v, IDENTITY, "clientId"))
    };
    expect(
        client_id("AzureWebJobsStorage__clientId"),
        "AzureWebJobsStorage__clientId is the identity's",
    );
    let sa = &storage_account.json["properties"];
    expect(
        sa["allowSharedKeyAccess"] == false && sa["allowBlobPublicAccess"] == false,
        "storage takes no shared key and no public blob access",
    );
    expect(sa["minimumTlsVersion"] == "TLS1_2", "storage TLS 1.2");
    expect(
        container.json["properties"]["publicAccess"] == "None",
        "container is private",
    );

    let insights = t.resource(INSIGHTS);
    expect(
        settings
            .get("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .is_some_and(|v| reference_to(&t, v, INSIGHTS, "ConnectionString")),
        "APPLICATIONINSIGHTS_CONNECTION_STRING is the component's",
    );
    if insights.json["properties"]["DisableLocalAuth"] == true {
        let auth = settings
            .get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
            .map(expression);
        let mut nodes = Vec::new();
        if let Some(a) = &auth {
            a.walk(&mut nodes);
        }
        expect(
            nodes.iter().any(|n| n.str().is_some_and(|s| s.contains("Authorization=AAD")))
                && nodes.iter().any(|n| matches!(n, Expr::Member(_, m) if m == "clientId")),
            "with local auth off, the host sends telemetry with the identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)",
        );
        expect(
            role_for_identity(&t, INSIGHTS, METRICS_PUBLISHER),
            "the identity is Monitoring Metrics Publisher on the component",
        );
    }
    expect(
        role_for_identity(&t, STORAGE, BLOB_DATA_OWNER),
        "the identity is Storage Blob Data Owner on the storage account",
    );

    expect(
        settings
            .get("Redis__redisHostName")
            .is_some_and(|v| reference_to(&t, v, CACHE, "hostName")),
        "Redis__redisHostName is the cache's host name",
    );
    expect(
        settings
            .get("Redis__principalId")
            .is_some_and(|v| reference_to(&t, v, IDENTITY, "principalId")),
        "Redis__principalId is the identity's object id",
    );
    expect(
        client_id("Redis__clientId"),
        "Redis__clientId is the identity's client id",
    );
    let access = t.resource(ACCESS);
    expect(
        access.json["properties"]["accessPolicyName"] == "default",
        "access policy is `default`",
    );
    expect(
        settings.get("Redis__principalId") == Some(&access.json["properties"]["user"]["objectId"]),
        "the access policy is for the principal the handler signs in as",
    );
    let cache = &t.resource(CACHE).json["properties"];
    let db = &t.resource(DATABASE).json["properties"];
    expect(cache["minimumTlsVersion"] == "1.2", "cache TLS 1.2");
    expect(db["clusteringPolicy"] == "OSSCluster", "OSS cluster policy");
    expect(
        db["port"] == 10000 && db["clientProtocol"] == "Encrypted",
        "TLS on port 10000",
    );
    expect(
        db["accessKeysAuthentication"] == "Disabled",
        "access keys off: Entra ID only",
    );
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Whether a role assignment gives the identity `role` on the one resource of type `ty`.
fn role_for_identity(t: &Template, ty: &str, role: &str) -> bool {
    t.resources_of(ROLE).iter().any(|r| {
        let p = &r.json["properties"];
        let on = r
            .scope
            .as_ref()
            .and_then(|s| t.find(s, None))
            .is_some_and(|i| t.resources[i].ty.eq_ignore_ascii_case(ty));
        let mut nodes = Vec::new();
        let definition = expression(&p["roleDefinitionId"]);
        definition.walk(&mut nodes);
        let is_role = nodes.iter().any(|n| {
            n.str() == Some(role)
                || n.call("variables")
                    .and_then(|a| a.first()?.str())
                    .is_some_and(|v| t.variables().get(v) == Some(&Value::from(role)))
        });
        on && is_role
            && reference_to(t, &p["principalId"], IDENTITY, "principalId")
            && p["principalType"] == "ServicePrincipal"
    })
}

/// The outputs give the app's URL (`https://` and its default host name) and the cache's
/// host name.
#[test]
fn outputs_give_the_app_url_and_the_cache_host_name() {
    let t = template();
    let outputs = &t.json["outputs"];
    let url = expression(&outputs["functionAppUrl"]["value"]);
    let args = url.call("format").expect("functionAppUrl is format(...)");
    assert_eq!(args[0].str(), Some("https://{0}"));
    assert!(reference_to(
        &t,
        &Value::from(format!("[{}]", render(&args[1]))),
        SITE,
        "defaultHostName"
    ));
    assert!(reference_to(&t, &outputs["redisHostName"]["value"], CACHE, "hostName"));
    assert_eq!(outputs["functionAppUrl"]["type"], "string");
    assert_eq!(outputs["redisHostName"]["type"], "string");
}

/// An expression back as ARM text.
fn render(e: &Expr) -> String {
    match e {
        Expr::Str(s) => format!("'{}'", s.replace('\'', "''")),
        Expr::Int(i) => i.to_string(),
        Expr::Call(name, args) => format!("{name}({})", args.iter().map(render).collect::<Vec<_>>().join(", ")),
        Expr::Member(base, m) => format!("{}.{m}", render(base)),
        Expr::Index(base, i) => format!("{}[{}]", render(base), render(i)),
    }
}

/// The template and the README's step-by-step `az` path deploy the same app: the runtime,
/// instance memory, maximum and always-ready instances of `az functionapp create`,
/// identity-based deployment storage, the Azure Managed Redis access policy assignment,
/// the `perInstanceConcurrency` of `az functionapp scale config set` (kept in the
/// parameter's default only), and the Redis app settings both ways.
#[test]
fn template_and_the_readme_az_steps_agree() {
    let t = template();
    let text = read("README.md");
    let deploy = readme::section(&text, "## Package and deploy");
    let steps = readme::az_commands(deploy);
    let site = t.resource(SITE);
    let config = &site.json["properties"]["functionAppConfig"];
    let scale = &config["scaleAndConcurrency"];
    let mut errors = Vec::new();

    let create = steps
        .iter()
        .find(|c| readme::is_command(c, "az functionapp create"))
        .expect("the README creates the app with az functionapp create");
    let number = |words: &[String], option: &str| -> Option<i64> {
        readme::option(words, option)
            .first()
            .map(|v| v.parse().unwrap_or_else(|e| panic!("{option} {v}: {e}")))
    };
    if readme::option(create, "--runtime") != [config["runtime"]["name"].as_str().unwrap_or_default()] {
        errors.push(format!(
            "--runtime {:?} vs runtime {}",
            readme::option(create, "--runtime"),
            config["runtime"]["name"]
        ));
    }
    for (option, key) in [
        ("--instance-memory", "instanceMemoryMB"),
        ("--maximum-instance-count", "maximumInstanceCount"),
    ] {
        let default = parameter_default(&t, &scale[key]);
        match number(create, option) {
            Some(n) if default == n => {}
            readme => errors.push(format!(
                "README {option} {readme:?}, the template's {key} defaults to {default}"
            )),
        }
    }
    let readme_auth = readme::option(create, "--deployment-storage-auth-type");
    let auth = config["deployment"]["storage"]["authentication"]["type"]
        .as_str()
        .unwrap_or_default();
    if !matches!(
        readme_auth.as_slice(),
        ["SystemAssignedIdentity" | "UserAssignedIdentity"]
    ) || !auth.ends_with("Identity")
    {
        errors.push(format!(
            "deployment storage: README {readme_auth:?}, template {auth}: both must use an identity"
        ));
    }

    // Always ready: given at create time or with `always-ready set` in the steps, else none.
    let always_ready: Option<i64> = steps.iter().find_map(|c| {
        let values = if readme::is_command(c, "az functionapp create") {
            readme::option(c, "--always-ready-instances")
        } else if readme::is_command(c, "az functionapp scale config always-ready set") {
            readme::option(c, "--settings")
        } else {
            Vec::new()
        };
        values.iter().find_map(|v| v.strip_prefix("http=")?.parse().ok())
    });
    let always_ready_parameter = "alwaysReadyHttpInstances";
    let wiring = expression(&scale["alwaysReady"]);
    let mut nodes = Vec::new();
    wiring.walk(&mut nodes);
    let variable = wiring
        .call("variables")
        .and_then(|a| a.first()?.str())
        .map(|v| t.variables()[v].clone());
    let wired = variable
        .map(|v| expression(&v))
        .map(|e| {
            let mut n = Vec::new();
            e.walk(&mut n);
            n.iter().any(|x| x.parameter() == Some(always_ready_parameter)) && n.iter().any(|x| x.str() == Some("http"))
        })
        .unwrap_or(false);
    if !wired {
        errors.push(format!("alwaysReady is not http={always_ready_parameter}"));
    }
    let default = t.parameters()[always_ready_parameter]["defaultValue"].clone();
    if default != always_ready.unwrap_or(0) {
        errors.push(format!(
            "README always-ready http {always_ready:?}, the template defaults to {default}"
        ));
    }

    // perInstanceConcurrency: the site takes the parameter, so its default is the one place
    // the number lives. The README's `az functionapp scale config set ...
    // perInstanceConcurrency=N` line, once the measured recommendation adds it, must give the
    // same N; until that line exists there is nothing to compare, and only the wiring is
    // checked.
    let http = &scale["triggers"]["http"]["perInstanceConcurrency"];
    if parameter_of(http).as_deref() != Some("perInstanceConcurrency") {
        errors.push(format!("perInstanceConcurrency is {http}, not the parameter"));
    }
    let recommended = readme::per_instance_concurrency(&text);
    let default = parameter_default(&t, http);
    match recommended.len() {
        0 => {}
        1 if recommended.first().is_some_and(|n| default == *n) => {}
        _ => errors.push(format!(
            "README perInstanceConcurrency {recommended:?}, the template defaults to {default}"
        )),
    }

    // The Azure Managed Redis access policy assignment.
    let assign = steps
        .iter()
        .find(|c| readme::is_command(c, "az redisenterprise database access-policy-assignment create"))
        .expect("the README gives the identity an access policy on Azure Managed Redis");
    let access = t.resource(ACCESS);
    let segments: Vec<String> = access
        .id
        .names
        .iter()
        .map(|s| match s {
            model::Seg::Lit(l) => l.clone(),
            model::Seg::Expr(e) => render(e),
        })
        .collect();
    for (option, value) in [
        ("--database-name", segments.get(1).cloned()),
        ("--access-policy-assignment-name", segments.get(2).cloned()),
        (
            "--access-policy-name",
            access.json["properties"]["accessPolicyName"].as_str().map(String::from),
        ),
    ] {
        if readme::option(assign, option).first().map(|s| s.to_string()) != value {
            errors.push(format!(
                "README {option} {:?}, template {value:?}",
                readme::option(assign, option)
            ));
        }
    }

    // App settings: every one the README's steps set is in the template, and every Redis
    // setting of the template is one the steps set or the identity section names.
    let identity_section = readme::section(&text, "### Give the app a managed identity and Redis data access");
    let mut readme_settings = BTreeSet::new();
    for c in readme::az_commands(identity_section) {
        if readme::is_command(&c, "az functionapp config appsettings set") {
            for s in readme::option(&c, "--settings") {
                readme_settings.insert(s.split('=').next().unwrap_or_default().to_string());
            }
        }
    }
    let named = readme::code_names(identity_section, "Redis__");
    let template_settings: BTreeSet<String> = app_settings(&t).into_keys().collect();
    let handler_settings = readme::settings_table(&text);
    if readme_settings.is_empty() {
        errors.push("the README's identity section sets no app settings".into());
    }
    for s in &readme_settings {
        if !template_settings.contains(s) {
            errors.push(format!("the README's steps set {s}, the template does not"));
        }
    }
    for s in template_settings.iter().filter(|s| s.starts_with("Redis__")) {
        if !readme_settings.contains(s) && !named.contains(s) {
            errors.push(format!("the template sets {s}, the README's steps do not"));
        }
        if !handler_settings.contains(s) {
            errors.push(format!(
                "the template sets {s}, which is not in the README's Settings table"
            ));
        }
    }

    // The one-template section's parameter table: every parameter, with the template's
    // default where that is a plain value.
    let one_template = readme::section(&text, "### Deploy everything with one template");
    let rows = readme::table_rows(one_template);
    let mut listed = BTreeSet::new();
    for row in rows.iter().filter(|r| r.len() >= 2) {
        let Some(name) = readme::code_names(&row[0], "").into_iter().next() else {
            continue;
        };
        let Some(p) = t.parameters().get(&name) else {
            continue;
        };
        listed.insert(name.clone());
        let default = &p["defaultValue"];
        if default.as_str().and_then(expr::parse_value).is_none() {
            let want = default.as_str().map_or_else(|| default.to_string(), String::from);
            if !readme::code_names(&row[1], "").contains(&want) {
                errors.push(format!(
                    "README gives {name} the default {}, the template {want}",
                    row[1]
                ));
            }
        }
    }
    for p in t.parameters().keys() {
        if !listed.contains(p) {
            errors.push(format!("parameter {p} is not in the README's parameter table"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The checkov findings `.ci/check-template` accepts are the ones the README justifies.
#[test]
fn checkov_justifications_are_the_readmes() {
    let script = readme::checkov_ids(&read(".ci/check-template"));
    let text = read("README.md");
    let justified = readme::checkov_ids(readme::section(&text, "### Deploy everything with one template"));
    assert!(
        !script.is_empty(),
        ".ci/check-template lists no accepted checkov findings"
    );
    assert_eq!(
        script, justified,
        ".ci/check-template accepts these, the README justifies those"
    );
}
