//! What the template deploys, as the handler and Flex Consumption need it: the plan and
//! runtime, and storage, telemetry and Redis each reached with the app's user-assigned
//! identity, no key anywhere.

use crate::expr::Expr;
use crate::model::Template;
use crate::{app_settings, expression, id_of_the, reference_to, render, template, Expect};
use serde_json::Value;

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

/// The app runs on Flex Consumption as a custom handler: an FC1 Linux plan, a
/// `functionapp,linux` site on it with runtime `custom` 1.0, HTTPS only, TLS 1.2, FTP off, and
/// none of the app settings Flex refuses (nor a storage connection string).
#[test]
fn the_app_runs_on_flex_consumption_as_a_custom_handler() {
    let t = template();
    let site = t.resource(SITE);
    let plan = &t.resource(PLAN).json;
    let props = &site.json["properties"];
    let runtime = &props["functionAppConfig"]["runtime"];
    let mut expect = Expect::default();
    expect.that(
        plan["sku"]["name"] == "FC1" && plan["sku"]["tier"] == "FlexConsumption",
        "plan is FC1 FlexConsumption",
    );
    expect.that(plan["properties"]["reserved"] == true, "plan is Linux (reserved)");
    expect.that(
        site.json["kind"] == "functionapp,linux",
        "site kind is functionapp,linux",
    );
    expect.that(id_of_the(&t, &props["serverFarmId"], PLAN), "site runs on the plan");
    expect.that(
        runtime["name"] == "custom" && runtime["version"] == "1.0",
        "runtime is custom 1.0",
    );
    expect.that(props["httpsOnly"] == true, "httpsOnly");
    expect.that(props["siteConfig"]["minTlsVersion"] == "1.2", "minTlsVersion 1.2");
    expect.that(props["siteConfig"]["ftpsState"] == "Disabled", "FTP disabled");
    for name in app_settings(&t).keys() {
        let forbidden = FLEX_FORBIDDEN.contains(&name.as_str())
            || name.starts_with(FLEX_FORBIDDEN_PREFIX)
            || name == "AzureWebJobsStorage";
        expect.that(
            !forbidden,
            &format!("app setting {name} is not allowed on Flex or takes a key"),
        );
    }
    expect.done();
}

/// The app's only identity is the declared user-assigned one, and with it the app reads its
/// package (deployment storage `UserAssignedIdentity`, the storage blob endpoint and the
/// declared container) and the host uses its storage (`AzureWebJobsStorage__*`), as Storage
/// Blob Data Owner of an account that takes no shared key and no public access.
#[test]
fn storage_and_the_package_are_reached_with_the_identity() {
    let t = template();
    let site = t.resource(SITE);
    let settings = app_settings(&t);
    let storage = &site.json["properties"]["functionAppConfig"]["deployment"]["storage"];
    let account = t.resource(STORAGE);
    let container = t.resource(CONTAINER);
    let identities = site.json["identity"]["userAssignedIdentities"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut expect = Expect::default();
    expect.that(
        site.json["identity"]["type"] == "UserAssigned",
        "site identity is user-assigned",
    );
    expect.that(
        identities.len() == 1
            && identities
                .keys()
                .all(|k| id_of_the(&t, &Value::from(k.as_str()), IDENTITY)),
        "site has the declared identity, and only it",
    );
    expect.that(
        storage["type"] == "blobContainer",
        "deployment storage is a blob container",
    );
    expect.that(
        storage["authentication"]["type"] == "UserAssignedIdentity"
            && id_of_the(
                &t,
                &storage["authentication"]["userAssignedIdentityResourceId"],
                IDENTITY,
            ),
        "deployment storage is read with the identity",
    );
    let mut url = Vec::new();
    let value = expression(&storage["value"]);
    value.walk(&mut url);
    expect.that(
        url.iter().any(|n| Some(t.seg(n)) == container.id.names.last().cloned())
            && url.iter().any(|n| matches!(n, Expr::Member(_, m) if m == "blob")),
        "deployment storage URL is the storage blob endpoint and the declared container",
    );
    expect.that(
        settings.get("AzureWebJobsStorage__accountName") == Some(&account.json["name"]),
        "AzureWebJobsStorage__accountName is the storage account",
    );
    expect.that(
        settings.get("AzureWebJobsStorage__credential") == Some(&Value::from("managedidentity")),
        "AzureWebJobsStorage__credential is managedidentity",
    );
    expect.that(
        settings
            .get("AzureWebJobsStorage__clientId")
            .is_some_and(|v| reference_to(&t, v, IDENTITY, "clientId")),
        "AzureWebJobsStorage__clientId is the identity's",
    );
    let p = &account.json["properties"];
    expect.that(
        p["allowSharedKeyAccess"] == false && p["allowBlobPublicAccess"] == false,
        "storage takes no shared key and no public blob access",
    );
    expect.that(p["minimumTlsVersion"] == "TLS1_2", "storage TLS 1.2");
    expect.that(
        container.json["properties"]["publicAccess"] == "None",
        "container is private",
    );
    expect.that(
        role_for_identity(&t, STORAGE, BLOB_DATA_OWNER),
        "the identity is Storage Blob Data Owner on the storage account",
    );
    expect.done();
}

/// Telemetry goes to the Application Insights component, and with its local (key)
/// authentication off, the host signs in with the identity
/// (`APPLICATIONINSIGHTS_AUTHENTICATION_STRING`), which is Monitoring Metrics Publisher on it.
#[test]
fn telemetry_reaches_application_insights_with_the_identity() {
    let t = template();
    let settings = app_settings(&t);
    let mut expect = Expect::default();
    expect.that(
        settings
            .get("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .is_some_and(|v| reference_to(&t, v, INSIGHTS, "ConnectionString")),
        "APPLICATIONINSIGHTS_CONNECTION_STRING is the component's",
    );
    expect.that(
        t.resource(INSIGHTS).json["properties"]["DisableLocalAuth"] == true,
        "the component takes no instrumentation key alone",
    );
    let mut auth = Vec::new();
    let value = settings
        .get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
        .map(expression);
    if let Some(e) = &value {
        e.walk(&mut auth);
    }
    expect.that(
        auth.iter()
            .any(|n| n.str().is_some_and(|s| s.contains("Authorization=AAD")))
            && auth
                .iter()
                .any(|n| reference_to(&t, &Value::from(format!("[{}]", render(n))), IDENTITY, "clientId")),
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING signs in with the identity's client id",
    );
    expect.that(
        role_for_identity(&t, INSIGHTS, METRICS_PUBLISHER),
        "the identity is Monitoring Metrics Publisher on the component",
    );
    expect.done();
}

/// The handler reaches Azure Managed Redis with the identity and nothing else: the settings
/// it reads name the cache's host name and the identity's object and client ids, the access
/// policy assignment gives that same object id the `default` policy, and the cache takes TLS
/// 1.2 on port 10000, OSS cluster policy, access keys off.
#[test]
fn the_handler_signs_in_to_azure_managed_redis_with_the_identity() {
    let t = template();
    let settings = app_settings(&t);
    let access = &t.resource(ACCESS).json["properties"];
    let cache = &t.resource(CACHE).json["properties"];
    let db = &t.resource(DATABASE).json["properties"];
    let mut expect = Expect::default();
    let setting =
        |name: &str, ty: &str, member: &str| settings.get(name).is_some_and(|v| reference_to(&t, v, ty, member));
    expect.that(
        setting("Redis__redisHostName", CACHE, "hostName"),
        "Redis__redisHostName is the cache's host name",
    );
    expect.that(
        setting("Redis__principalId", IDENTITY, "principalId"),
        "Redis__principalId is the identity's object id",
    );
    expect.that(
        setting("Redis__clientId", IDENTITY, "clientId"),
        "Redis__clientId is the identity's client id",
    );
    expect.that(
        access["accessPolicyName"] == "default",
        "the access policy is `default`",
    );
    expect.that(
        settings.get("Redis__principalId") == Some(&access["user"]["objectId"]),
        "the access policy is for the principal the handler signs in as",
    );
    expect.that(cache["minimumTlsVersion"] == "1.2", "cache TLS 1.2");
    expect.that(db["clusteringPolicy"] == "OSSCluster", "OSS cluster policy");
    expect.that(
        db["port"] == 10000 && db["clientProtocol"] == "Encrypted",
        "TLS on port 10000",
    );
    expect.that(
        db["accessKeysAuthentication"] == "Disabled",
        "access keys off: Entra ID only",
    );
    expect.done();
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
    let host = Value::from(format!("[{}]", render(&args[1])));
    assert!(reference_to(&t, &host, SITE, "defaultHostName"));
    assert!(reference_to(&t, &outputs["redisHostName"]["value"], CACHE, "hostName"));
    assert_eq!(outputs["functionAppUrl"]["type"], "string");
    assert_eq!(outputs["redisHostName"]["type"], "string");
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
