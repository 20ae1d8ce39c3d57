//! The function app as the Functions host reads it: `host.json` and one
//! `function.json` per function folder.
//!
//! Follows docs/azure.md "The Functions host and a custom handler": host.json
//! `customHandler` (`description.defaultExecutablePath`, `arguments`,
//! `workingDirectory`, `enableForwardingHttpRequest`,
//! `enableProxyingHttpRequest`, `port`) and `extensions.http.routePrefix`
//! (default `api`); function.json `httpTrigger` (`authLevel`, default
//! `function`; `methods`, all if absent; `route`, the function name if
//! absent; an `http` out binding) and `timerTrigger` (`schedule`,
//! `runOnStartup`, `useMonitor`, `%Setting%` expanding an app setting).
//! Proxying and forwarding apply only to a function with exactly one
//! `httpTrigger` in and one `http` out; with both flags set, proxying wins.
//!
//! Function folders sit next to `host.json` in a deployed app; this
//! repository keeps them in `function-app/` (flattened by
//! [`crate::package`]), and both layouts are read.

use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The folder holding the function folders in this repository's layout.
pub const FUNCTIONS_DIR: &str = "function-app";

/// `host.json` and the functions of an app.
#[derive(Debug, Clone)]
pub struct AppManifest {
    /// The app root (the folder holding `host.json`).
    pub root: PathBuf,
    /// The folder holding the function folders (`function-app/` or the root).
    pub functions_dir: PathBuf,
    /// What `host.json` says about the custom handler and HTTP.
    pub host: HostSettings,
    /// The functions, sorted by name.
    pub functions: Vec<Function>,
}

/// The parts of `host.json` a local host needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// `extensions.http.routePrefix` (default `api`), without slashes.
    pub route_prefix: String,
    /// `customHandler.description.defaultExecutablePath`.
    pub executable: String,
    /// `customHandler.description.arguments`.
    pub arguments: Vec<String>,
    /// How HTTP requests reach the handler, from the two `customHandler` flags.
    pub http_mode: HttpMode,
    /// `http_mode` is not [`HttpMode::Envelope`]: a forwardable function gets
    /// the original request, by either flag (what `devhost invoke` needs).
    pub forwarding: bool,
    /// `customHandler.port`, when fixed.
    pub port: Option<u16>,
}

/// How the host passes an HTTP request to the handler (for a function with
/// one `httpTrigger` in and one `http` out; any other gets the envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// Neither flag: `POST /<Function>` with `Data.req`, answered in `Outputs`.
    Envelope,
    /// `enableForwardingHttpRequest` (legacy): the request, body buffered.
    Forwarding,
    /// `enableProxyingHttpRequest`: the host's YARP proxy streams the request
    /// and the answer; wins when both flags are set.
    Proxying,
}

/// One function folder.
#[derive(Debug, Clone)]
pub struct Function {
    /// The folder name: the function's name (`POST /<name>` for envelopes).
    pub name: String,
    /// Its trigger.
    pub trigger: Trigger,
    /// Every binding, as written.
    pub bindings: Vec<Value>,
}

/// What starts a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An `httpTrigger`.
    Http(HttpTrigger),
    /// A `timerTrigger`.
    Timer(TimerTrigger),
    /// Any other trigger (queue, blob, …): only invoked by hand locally.
    Other {
        /// The binding type, e.g. `queueTrigger`.
        kind: String,
        /// The binding name (the key in the envelope's `Data`).
        binding: String,
    },
}

/// An HTTP trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// The trigger binding's name (`req`): the key in the envelope's `Data`.
    pub binding: String,
    /// The route template without the prefix, e.g. `cache/{key}`.
    pub route: String,
    /// Allowed methods, upper case; `None` allows all.
    pub methods: Option<Vec<String>>,
    /// `authLevel` (lower case; not enforced locally, as with `func start`).
    pub auth_level: String,
    /// The `http` out binding's name (`res`, or `$return`), if any.
    pub out_binding: Option<String>,
    /// Exactly one `httpTrigger` in and one `http` out: the host proxies or
    /// forwards the request as is when host.json enables either.
    pub forwardable: bool,
}

/// A timer trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTrigger {
    /// The binding name (`myTimer`): the key in the envelope's `Data`.
    pub binding: String,
    /// `schedule` as written (NCRONTAB, TimeSpan, or `%Setting%`).
    pub schedule: String,
    /// `runOnStartup`.
    pub run_on_startup: bool,
    /// `useMonitor` when written.
    pub use_monitor: Option<bool>,
}

impl AppManifest {
    /// Reads `<root>/host.json` and every `<functions dir>/<Name>/function.json`.
    pub fn load(root: &Path) -> anyhow::Result<AppManifest> {
        let host_path = root.join("host.json");
        let text = std::fs::read_to_string(&host_path)
            .with_context(|| format!("reading {} (is this a function app root?)", host_path.display()))?;
        let host_json: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", host_path.display()))?;
        let host = HostSettings::from_json(&host_json).with_context(|| format!("in {}", host_path.display()))?;
        let nested = root.join(FUNCTIONS_DIR);
        let functions_dir = if nested.is_dir() { nested } else { root.to_path_buf() };
        let mut functions = Vec::new();
        let entries =
            std::fs::read_dir(&functions_dir).with_context(|| format!("listing {}", functions_dir.display()))?;
        for entry in entries {
            let dir = entry?.path();
            let file = dir.join("function.json");
            if !file.is_file() {
                continue;
            }
            let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let json: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            functions.push(Function::from_json(name, &json).with_context(|| format!("in {}", file.display()))?);
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(AppManifest {
            root: root.to_path_buf(),
            functions_dir,
            host,
            functions,
        })
    }

    /// The function named `name` (case-insensitive, as the host matches).
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// `/<prefix>/<route>` (or `/<route>` with an empty prefix).
    pub fn http_path(&self, route: &str) -> String {
        let route = route.trim_matches('/');
        match self.host.route_prefix.as_str() {
            "" => format!("/{route}"),
            p => format!("/{p}/{route}"),
        }
    }
}

impl HostSettings {
    /// Reads the custom handler and HTTP parts of a host.json document.
    pub fn from_json(v: &Value) -> anyhow::Result<HostSettings> {
        let ch = &v["customHandler"];
        let Some(executable) = ch["description"]["defaultExecutablePath"].as_str() else {
            bail!("customHandler.description.defaultExecutablePath is missing (not a custom handler app?)");
        };
        let port = match &ch["port"] {
            Value::Null => None,
            p => Some(
                p.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .context("customHandler.port must be a port number")?,
            ),
        };
        let arguments = ch["description"]["arguments"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let prefix = v["extensions"]["http"]["routePrefix"].as_str().unwrap_or("api");
        let flag = |name: &str| ch[name] == Value::Bool(true);
        let http_mode = if flag("enableProxyingHttpRequest") {
            HttpMode::Proxying
        } else if flag("enableForwardingHttpRequest") {
            HttpMode::Forwarding
        } else {
            HttpMode::Envelope
        };
        Ok(HostSettings {
            route_prefix: prefix.trim_matches('/').to_string(),
            executable: executable.to_string(),
            arguments,
            http_mode,
            forwarding: http_mode != HttpMode::Envelope,
            port,
        })
    }
}

impl Function {
    /// Reads a function.json document of the function `name`.
    pub fn from_json(name: String, v: &Value) -> anyhow::Result<Function> {
        let bindings = v["bindings"].as_array().context("no bindings array")?.clone();
        let is = |b: &Value, t: &str| b["type"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(t));
        let is_in = |b: &Value| b["direction"].as_str().is_some_and(|d| d.eq_ignore_ascii_case("in"));
        let triggers: Vec<&Value> = bindings
            .iter()
            .filter(|b| {
                is_in(b)
                    && b["type"]
                        .as_str()
                        .is_some_and(|t| t.to_ascii_lowercase().ends_with("trigger"))
            })
            .collect();
        let [t] = triggers[..] else {
            bail!("needs exactly one trigger binding, has {}", triggers.len());
        };
        let binding = t["name"]
            .as_str()
            .context("the trigger binding has no name")?
            .to_string();
        let trigger = if is(t, "httpTrigger") {
            let outs: Vec<&Value> = bindings.iter().filter(|b| is(b, "http")).collect();
            Trigger::Http(HttpTrigger {
                binding,
                route: route_template(t["route"].as_str().unwrap_or(&name))?,
                methods: t["methods"].as_array().map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_uppercase)
                        .collect()
                }),
                auth_level: t["authLevel"].as_str().unwrap_or("function").to_ascii_lowercase(),
                out_binding: outs.first().and_then(|b| b["name"].as_str()).map(String::from),
                forwardable: bindings.len() == 2 && outs.len() == 1,
            })
        } else if is(t, "timerTrigger") {
            Trigger::Timer(TimerTrigger {
                binding,
                schedule: t["schedule"]
                    .as_str()
                    .context("timerTrigger has no schedule")?
                    .to_string(),
                run_on_startup: t["runOnStartup"] == Value::Bool(true),
                use_monitor: t["useMonitor"].as_bool(),
            })
        } else {
            let kind = t["type"].as_str().unwrap_or_default().to_string();
            Trigger::Other { kind, binding }
        };
        Ok(Function {
            name,
            trigger,
            bindings,
        })
    }
}

/// A route template without its outer slashes, checked to hold only literal
/// segments and `{name}` parameters: the local host does not implement
/// ASP.NET's other forms, and would rather say so than match differently.
fn route_template(route: &str) -> anyhow::Result<String> {
    let route = route.trim_matches('/');
    for segment in route.split('/') {
        let name = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        let ok = match name {
            Some(name) => plain(name),
            None => !segment.contains(['{', '}']),
        };
        anyhow::ensure!(
            ok,
            "route {route:?}: the local host supports literal segments and {{name}} parameters only, not {segment:?}"
        );
    }
    Ok(route.to_string())
}

/// Expands each `%Name%` in `value` with the app setting `Name` from
/// `lookup`, as the host resolves binding expressions; an unknown or empty
/// setting is an error naming it.
pub fn expand_settings(value: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            bail!("unbalanced % in {value:?}");
        };
        let name = &after[..end];
        match lookup(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => bail!("{value:?} refers to app setting {name}, which is not set"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
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

    /// Each flag picks its mode, and with both set proxying wins (docs/azure.md).
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
}
