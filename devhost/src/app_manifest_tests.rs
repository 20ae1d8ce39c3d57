use super::*;
use serde_json::json;

fn host() -> Value {
    json!({
        "version": "2.0",
        "customHandler": {
            "description": {"defaultExecutablePath": "handler", "workingDirectory": "", "arguments": ["-v"]},
            "enableForwardingHttpRequest": true
        },
        "extensions": {"http": {"routePrefix": "api"}}
    })
}

/// The repository's own app loads: the handler, proxying on, its functions, routes and timer.
#[test]
fn reads_the_repository_app() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let m = AppManifest::load(root).unwrap();
    assert!(m.functions_dir.ends_with(FUNCTIONS_DIR));
    assert_eq!(m.host.executable, "handler");
    assert_eq!(m.host.http_mode, HttpMode::Proxying, "host.json turns proxying on");
    assert!(m.host.forwarding);
    let names: Vec<&str> = m.functions.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"CacheHealthCheck") && names.contains(&"Quickstart"),
        "{names:?}"
    );
    let Trigger::Http(q) = &m.function("quickstart").unwrap().trigger else {
        panic!("http")
    };
    assert_eq!(m.http_path(&q.route), "/api/quickstart");
    assert!(q.forwardable);
    let Trigger::Timer(t) = &m.function("CacheHealthCheck").unwrap().trigger else {
        panic!("timer")
    };
    assert_eq!(t.binding, "myTimer");
    assert_eq!(t.schedule.split_whitespace().count(), 6);
}

/// host.json defaults (route prefix, no fixed port) and its refusals (no custom handler).
#[test]
fn host_json_defaults_and_errors() {
    let h = HostSettings::from_json(&host()).unwrap();
    assert_eq!(h.route_prefix, "api");
    assert_eq!(h.arguments, ["-v"]);
    assert_eq!(h.port, None);
    let mut v = host();
    v["extensions"] = json!({});
    v["customHandler"]["port"] = json!(7100);
    v["customHandler"]["enableForwardingHttpRequest"] = json!(false);
    let h = HostSettings::from_json(&v).unwrap();
    assert_eq!(
        (h.route_prefix.as_str(), h.port, h.forwarding, h.http_mode),
        ("api", Some(7100), false, HttpMode::Envelope)
    );
    v["customHandler"]["enableProxyingHttpRequest"] = json!(true);
    assert!(HostSettings::from_json(&v).unwrap().forwarding);
    assert!(HostSettings::from_json(&json!({"version": "2.0"})).is_err());
}

/// Each flag picks its mode, and with both set proxying wins (AZURE-FACTS).
#[test]
fn host_json_http_mode() {
    let mode = |forward: bool, proxy: bool| {
        let mut v = host();
        v["customHandler"]["enableForwardingHttpRequest"] = json!(forward);
        v["customHandler"]["enableProxyingHttpRequest"] = json!(proxy);
        HostSettings::from_json(&v).unwrap().http_mode
    };
    assert_eq!(mode(false, false), HttpMode::Envelope);
    assert_eq!(mode(true, false), HttpMode::Forwarding);
    assert_eq!(mode(false, true), HttpMode::Proxying);
    assert_eq!(mode(true, true), HttpMode::Proxying);
}

/// function.json triggers: HTTP (route, methods, out binding, forwardable or not), other kinds, none.
#[test]
fn function_json_triggers() {
    let f = Function::from_json(
        "Item".into(),
        &json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}),
    )
    .unwrap();
    let Trigger::Http(h) = f.trigger else { panic!("http") };
    assert_eq!(
        (h.route.as_str(), h.methods, h.auth_level.as_str()),
        ("Item", None, "function")
    );
    assert!(!h.forwardable, "no http out binding");

    let with_queue = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get", "Post"]},
        {"type": "http", "direction": "out", "name": "$return"},
        {"type": "queue", "direction": "out", "name": "msg"}]});
    let Trigger::Http(h) = Function::from_json("X".into(), &with_queue).unwrap().trigger else {
        panic!()
    };
    assert_eq!(h.methods.unwrap(), ["GET", "POST"]);
    assert_eq!(h.out_binding.as_deref(), Some("$return"));
    assert!(!h.forwardable, "other bindings: envelope");

    let q = json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "item"}]});
    let t = Function::from_json("Q".into(), &q).unwrap().trigger;
    assert_eq!(
        t,
        Trigger::Other {
            kind: "queueTrigger".into(),
            binding: "item".into()
        }
    );
    assert!(Function::from_json("N".into(), &json!({"bindings": []})).is_err());
}

/// Route templates are literal segments and `{name}` parameters; ASP.NET's
/// other forms are turned down by name rather than matched differently.
#[test]
fn route_templates_beyond_plain_parameters_are_refused() {
    let http = |route: &str| {
        let b = json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "route": route}]});
        Function::from_json("F".into(), &b)
    };
    for ok in ["cache/{key}", "/cache/{key}/incr/", "ping"] {
        assert!(http(ok).is_ok(), "{ok}");
    }
    for form in [
        "opt/{id?}",
        "items/{kind=all}",
        "files/{*path}",
        "items/{id:int}",
        "a{b}",
    ] {
        let err = format!("{:#}", http(form).unwrap_err());
        assert!(err.contains("{name} parameters only"), "{form}: {err}");
    }
}

/// `%Setting%` in a schedule expands from the app settings; a missing or unbalanced one is an error.
#[test]
fn expands_app_settings_in_schedules() {
    let lookup = |k: &str| (k == "HealthSchedule").then(|| "0 */1 * * * *".to_string());
    assert_eq!(expand_settings("%HealthSchedule%", lookup).unwrap(), "0 */1 * * * *");
    assert_eq!(expand_settings("0 0 * * * *", lookup).unwrap(), "0 0 * * * *");
    let err = expand_settings("%Missing%", lookup).unwrap_err();
    assert!(err.to_string().contains("Missing"), "{err}");
    assert!(expand_settings("%Open", lookup).is_err());
}
