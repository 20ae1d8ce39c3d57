//! The template against the README: its step-by-step `az` path, its parameter table, and
//! the checkov findings it justifies.

use crate::model::{Seg, Template};
use crate::{app_settings, expr, expression, parameter_default, parameter_of, read, readme, render, template};
use serde_json::Value;
use std::collections::BTreeSet;

/// The template and the README's step-by-step `az` path deploy the same app: the runtime,
/// instance memory, maximum and always-ready instances of `az functionapp create`,
/// identity-based deployment storage, the `perInstanceConcurrency` of `az functionapp scale
/// config set` (kept in the parameter's default only), the Azure Managed Redis access policy
/// assignment, the Redis app settings both ways, and the one-template section's parameter
/// table.
#[test]
fn template_and_the_readme_az_steps_agree() {
    let t = template();
    let text = read("README.md");
    let steps = readme::az_commands(readme::section(&text, "## Package and deploy"));
    let mut errors = create_step(&t, &steps);
    errors.extend(always_ready(&t, &steps));
    errors.extend(per_instance_concurrency(&t, &text));
    errors.extend(access_policy(&t, &steps));
    errors.extend(redis_settings(&t, &text));
    errors.extend(parameter_table(&t, &text));
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

fn function_app_config(t: &Template) -> &Value {
    &t.resource("Microsoft.Web/sites").json["properties"]["functionAppConfig"]
}

/// `az functionapp create`: runtime, instance memory, maximum instances (the parameters'
/// defaults), and deployment storage read with an identity.
fn create_step(t: &Template, steps: &[Vec<String>]) -> Vec<String> {
    let mut errors = Vec::new();
    let config = function_app_config(t);
    let create = steps
        .iter()
        .find(|c| readme::is_command(c, "az functionapp create"))
        .expect("the README creates the app with az functionapp create");
    let runtime = readme::option(create, "--runtime");
    if runtime != [config["runtime"]["name"].as_str().unwrap_or_default()] {
        errors.push(format!(
            "README --runtime {runtime:?}, template {}",
            config["runtime"]["name"]
        ));
    }
    for (option, key) in [
        ("--instance-memory", "instanceMemoryMB"),
        ("--maximum-instance-count", "maximumInstanceCount"),
    ] {
        let default = parameter_default(t, &config["scaleAndConcurrency"][key]);
        let readme: Option<i64> = readme::option(create, option).first().and_then(|v| v.parse().ok());
        if readme.is_none_or(|n| default != n) {
            errors.push(format!(
                "README {option} {readme:?}, the template's {key} defaults to {default}"
            ));
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
    errors
}

/// Always-ready HTTP instances: given at create time or with `always-ready set` in the
/// steps (none otherwise), the template's `alwaysReady` is `http` with the parameter whose
/// default is that number.
fn always_ready(t: &Template, steps: &[Vec<String>]) -> Vec<String> {
    const PARAMETER: &str = "alwaysReadyHttpInstances";
    let mut errors = Vec::new();
    let readme: Option<i64> = steps.iter().find_map(|c| {
        let values = if readme::is_command(c, "az functionapp create") {
            readme::option(c, "--always-ready-instances")
        } else if readme::is_command(c, "az functionapp scale config always-ready set") {
            readme::option(c, "--settings")
        } else {
            Vec::new()
        };
        values.iter().find_map(|v| v.strip_prefix("http=")?.parse().ok())
    });
    let wiring = expression(&function_app_config(t)["scaleAndConcurrency"]["alwaysReady"]);
    let variable = wiring
        .call("variables")
        .and_then(|a| a.first()?.str())
        .and_then(|v| t.variables().get(v));
    let mut nodes = Vec::new();
    let value = variable.map(expression);
    if let Some(e) = &value {
        e.walk(&mut nodes);
    }
    if !(nodes.iter().any(|x| x.parameter() == Some(PARAMETER)) && nodes.iter().any(|x| x.str() == Some("http"))) {
        errors.push(format!("alwaysReady is not http with {PARAMETER}"));
    }
    let default = &t.parameters()[PARAMETER]["defaultValue"];
    if *default != readme.unwrap_or(0) {
        errors.push(format!(
            "README always-ready http {readme:?}, the template defaults to {default}"
        ));
    }
    errors
}

/// perInstanceConcurrency: the site takes the parameter, so the parameter's default is the
/// one place the number lives. The README's `az functionapp scale config set ...
/// perInstanceConcurrency=N` line (code block or inline), once the measured recommendation
/// adds it, must give that N; while the README has no such line there is nothing to compare
/// and only the wiring is checked.
fn per_instance_concurrency(t: &Template, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let http = &function_app_config(t)["scaleAndConcurrency"]["triggers"]["http"]["perInstanceConcurrency"];
    if parameter_of(http).as_deref() != Some("perInstanceConcurrency") {
        errors.push(format!("perInstanceConcurrency is {http}, not the parameter"));
    }
    let recommended = readme::per_instance_concurrency(text);
    let default = parameter_default(t, http);
    if recommended.len() > 1 || recommended.first().is_some_and(|n| default != *n) {
        errors.push(format!(
            "README perInstanceConcurrency {recommended:?}, the template defaults to {default}"
        ));
    }
    errors
}

/// `az redisenterprise database access-policy-assignment create`: the database, the
/// assignment's name and the policy are the template's.
fn access_policy(t: &Template, steps: &[Vec<String>]) -> Vec<String> {
    let mut errors = Vec::new();
    let assign = steps
        .iter()
        .find(|c| readme::is_command(c, "az redisenterprise database access-policy-assignment create"))
        .expect("the README gives the identity an access policy on Azure Managed Redis");
    let access = t.resource("Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments");
    let segments: Vec<String> = access
        .id
        .names
        .iter()
        .map(|s| match s {
            Seg::Lit(l) => l.clone(),
            Seg::Expr(e) => render(e),
        })
        .collect();
    let policy = access.json["properties"]["accessPolicyName"].as_str().map(String::from);
    for (option, value) in [
        ("--database-name", segments.get(1).cloned()),
        ("--access-policy-assignment-name", segments.get(2).cloned()),
        ("--access-policy-name", policy),
    ] {
        let readme = readme::option(assign, option);
        if readme.first().map(|s| s.to_string()) != value {
            errors.push(format!("README {option} {readme:?}, template {value:?}"));
        }
    }
    errors
}

/// App settings: every one the README's identity steps set is in the template, and every
/// Redis setting of the template is one those steps set or that section names (the
/// user-assigned identity's `Redis__clientId`), and one the handler reads (the README's
/// Settings table).
fn redis_settings(t: &Template, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let section = readme::section(text, "### Give the app a managed identity and Redis data access");
    let mut readme_settings = BTreeSet::new();
    for c in readme::az_commands(section) {
        if readme::is_command(&c, "az functionapp config appsettings set") {
            for s in readme::option(&c, "--settings") {
                readme_settings.insert(s.split('=').next().unwrap_or_default().to_string());
            }
        }
    }
    let named = readme::code_names(section, "Redis__");
    let template_settings: BTreeSet<String> = app_settings(t).into_keys().collect();
    let handler_settings = readme::settings_table(text);
    if readme_settings.is_empty() {
        errors.push("the README's identity section sets no app settings".into());
    }
    for s in readme_settings.difference(&template_settings) {
        errors.push(format!("the README's steps set {s}, the template does not"));
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
    errors
}

/// The one-template section's parameter table lists every parameter, with the template's
/// default where that is a plain value.
fn parameter_table(t: &Template, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let section = readme::section(text, "### Deploy everything with one template");
    let mut listed = BTreeSet::new();
    for row in readme::table_rows(section).iter().filter(|r| r.len() >= 2) {
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
    for p in t.parameters().keys().filter(|p| !listed.contains(*p)) {
        errors.push(format!("parameter {p} is not in the README's parameter table"));
    }
    errors
}
