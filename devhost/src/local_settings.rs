//! `local.settings.json` in the Functions Core Tools format, merged with the
//! environment as `func start` merges them, and the choice between the
//! built-in local cache and a real one.
//!
//! Format: `{"IsEncrypted": false, "Values": {"NAME": "value", …}, "Host":
//! {"LocalHttpPort": 7071, …}, "ConnectionStrings": {…}}`. `Values` become
//! the handler's environment, except names already set (non-empty) in the
//! environment, which win (Core Tools prints "Skipping '`<name>`' from local settings as
//! it's already defined in current environment variables"). An encrypted
//! file (`func settings encrypt`) cannot be read here. Follows docs/azure.md
//! "Deploy": `local.settings.json` holds local app settings and stays out of
//! git.

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file name, in the app root.
pub const FILE_NAME: &str = "local.settings.json";

#[derive(Deserialize)]
struct FileFormat {
    #[serde(rename = "IsEncrypted", default)]
    is_encrypted: bool,
    #[serde(rename = "Values", default)]
    values: BTreeMap<String, Value>,
    #[serde(rename = "Host", default)]
    host: BTreeMap<String, Value>,
}

/// What `local.settings.json` holds (empty when there is no file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSettings {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// `Values`, as strings.
    pub values: BTreeMap<String, String>,
    /// `Host.LocalHttpPort`.
    pub local_http_port: Option<u16>,
}

impl LocalSettings {
    /// Reads `<app_root>/local.settings.json`; no file gives empty settings.
    pub fn load(app_root: &Path) -> anyhow::Result<LocalSettings> {
        let path = app_root.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalSettings::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut s = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        s.path = Some(path);
        Ok(s)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> anyhow::Result<LocalSettings> {
        let f: FileFormat = serde_json::from_str(text).context("not in the local.settings.json format")?;
        if f.is_encrypted {
            bail!("IsEncrypted is true; decrypt it with `func settings decrypt` or write the values in clear");
        }
        let mut values = BTreeMap::new();
        for (k, v) in f.values {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => continue,
                _ => bail!("Values.{k} must be a string"),
            };
            values.insert(k, v);
        }
        let local_http_port = match f.host.get("LocalHttpPort") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .context("Host.LocalHttpPort must be a port number")?,
            ),
        };
        Ok(LocalSettings {
            path: None,
            values,
            local_http_port,
        })
    }
}

/// The environment plus `Values`, the environment winning.
#[derive(Debug, Clone, Default)]
pub struct MergedSettings {
    /// `Values` entries not already in the environment: add these to the handler's environment.
    pub from_file: BTreeMap<String, String>,
    /// `Values` names skipped because the environment sets them.
    pub skipped: Vec<String>,
    env: BTreeMap<String, String>,
}

impl MergedSettings {
    /// Merges `file` with the environment as seen through `env`.
    pub fn merge(file: &LocalSettings, env: impl Fn(&str) -> Option<String>) -> MergedSettings {
        let mut m = MergedSettings::default();
        for (k, v) in &file.values {
            match env(k).filter(|e| !e.is_empty()) {
                Some(e) => {
                    m.skipped.push(k.clone());
                    m.env.insert(k.clone(), e);
                }
                None => {
                    m.from_file.insert(k.clone(), v.clone());
                }
            }
        }
        for k in CACHE_SETTINGS {
            if let Some(e) = env(k) {
                m.env.insert(k.to_string(), e);
            }
        }
        m
    }

    /// A setting's value (empty counts as unset, as the handler reads it).
    pub fn get(&self, name: &str) -> Option<String> {
        self.from_file
            .get(name)
            .or_else(|| self.env.get(name))
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    /// Which cache the handler will use.
    pub fn cache_target(&self) -> CacheTarget {
        if let Some(conn) = self.get("Redis") {
            let endpoint = conn.split(',').next().unwrap_or_default().trim().to_string();
            return CacheTarget::Real(format!("{endpoint} (access key from the Redis connection string)"));
        }
        match self.get("Redis__redisHostName") {
            Some(host) => {
                let port = self.get("Redis__port").map(|p| format!(":{p}")).unwrap_or_default();
                CacheTarget::Real(format!("{host}{port} (Microsoft Entra ID)"))
            }
            None => CacheTarget::Local,
        }
    }
}

/// The settings that pick the cache; checked in the environment even when
/// `local.settings.json` does not name them.
const CACHE_SETTINGS: [&str; 3] = ["Redis", "Redis__redisHostName", "Redis__port"];

/// Settings that would point a handler at another cache or identity; the
/// local run removes them and sets its own.
pub const CONNECTION_SETTINGS: [&str; 10] = [
    "Redis",
    "Redis__redisHostName",
    "Redis__port",
    "Redis__ssl",
    "Redis__principalId",
    "Redis__clientId",
    "Redis__tenantId",
    "Redis__clientSecret",
    "Redis__credential",
    "Redis__scope",
];

/// Where the cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTarget {
    /// No cache configured: start the built-in local `redis-server` and identity endpoint.
    Local,
    /// A real cache, described without secrets (`host:port (how)`).
    Real(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_core_tools_format() {
        let s = LocalSettings::parse(
            r#"{"IsEncrypted": false,
                "Values": {"FUNCTIONS_WORKER_RUNTIME": "custom", "AzureWebJobsStorage": "",
                           "Redis__redisHostName": "c.redis.cache.windows.net", "N": 5, "B": true},
                "Host": {"LocalHttpPort": 7072, "CORS": "*"}, "ConnectionStrings": {}}"#,
        )
        .unwrap();
        assert_eq!(s.values["FUNCTIONS_WORKER_RUNTIME"], "custom");
        assert_eq!(s.values["N"], "5");
        assert_eq!(s.values["B"], "true");
        assert_eq!(s.local_http_port, Some(7072));
        let err = LocalSettings::parse(r#"{"IsEncrypted": true, "Values": {}}"#).unwrap_err();
        assert!(format!("{err:#}").contains("func settings decrypt"));
        assert!(LocalSettings::parse(r#"{"Values": {"X": {"a": 1}}}"#).is_err());
    }

    /// The repository's example parses, names every connection setting, and
    /// copied as is runs the built-in cache.
    #[test]
    fn the_example_file_is_complete_and_local() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join("local.settings.example.json")).unwrap();
        let s = LocalSettings::parse(&text).unwrap();
        assert_eq!(s.values["FUNCTIONS_WORKER_RUNTIME"], "custom");
        assert_eq!(s.local_http_port, Some(7071));
        for name in CONNECTION_SETTINGS
            .iter()
            .chain(&["SSL_CERT_FILE", "Redis__tokenRefreshOffsetSeconds"])
        {
            assert!(s.values.contains_key(*name), "{name} missing from the example");
        }
        assert_eq!(MergedSettings::merge(&s, |_| None).cache_target(), CacheTarget::Local);
        let ignored = std::fs::read_to_string(root.join(".gitignore")).unwrap();
        assert!(
            ignored.lines().any(|l| l.trim_start_matches('/') == FILE_NAME),
            "{FILE_NAME} is gitignored"
        );
    }

    #[test]
    fn environment_wins_and_picks_the_cache() {
        let file = LocalSettings::parse(r#"{"Values": {"Redis__redisHostName": "", "LOG_FORMAT": "json"}}"#).unwrap();
        let none = |_: &str| None;
        let m = MergedSettings::merge(&file, none);
        assert_eq!(m.cache_target(), CacheTarget::Local, "empty counts as unset");
        assert_eq!(m.from_file["LOG_FORMAT"], "json");

        let env = |k: &str| match k {
            "Redis__redisHostName" => Some("c.redis.azure.net".to_string()),
            "LOG_FORMAT" => Some(String::new()),
            _ => None,
        };
        let m = MergedSettings::merge(&file, env);
        assert_eq!(m.skipped, ["Redis__redisHostName"]);
        assert_eq!(
            m.from_file["LOG_FORMAT"], "json",
            "an empty variable counts as unset, as in Core Tools"
        );
        assert_eq!(
            m.cache_target(),
            CacheTarget::Real("c.redis.azure.net (Microsoft Entra ID)".into())
        );

        let file = LocalSettings::parse(r#"{"Values": {"Redis": "h:6380,password=SECRET,ssl=True"}}"#).unwrap();
        let CacheTarget::Real(d) = MergedSettings::merge(&file, none).cache_target() else {
            panic!("a connection string is a real cache")
        };
        assert!(d.starts_with("h:6380 ") && !d.contains("SECRET"), "{d}");
    }
}
