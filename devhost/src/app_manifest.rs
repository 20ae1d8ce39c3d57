//! The function app as the Functions host reads it: `host.json` and one
//! `function.json` per function folder.
//!
//! Follows AZURE-FACTS "The Functions host and a custom handler": host.json
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
#[path = "app_manifest_tests.rs"]
mod tests;
