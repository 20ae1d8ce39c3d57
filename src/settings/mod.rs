//! App settings, read once at start into typed structs.
//!
//! The names follow the Azure Functions Redis extension's identity-based
//! connection with the connection name `Redis` (`Redis__redisHostName`, …), so
//! an app that already uses that extension keeps its settings. A missing or
//! contradictory setting is a [`SettingsError`] whose message is one line
//! naming the setting.

use crate::secret::Secret;

mod connection_string;
mod credential;

pub(crate) use connection_string::parse_connection_string;
pub(crate) use credential::choose_credential;
pub use credential::{Authority, CredentialChoice};
use std::path::PathBuf;
use std::time::Duration;

/// Default Entra ID scope for Azure Cache for Redis and Azure Managed Redis.
pub(crate) const DEFAULT_SCOPE: &str = "https://redis.azure.com/.default";
/// Default refresh offset, as in Microsoft's quickstart.
pub(crate) const DEFAULT_REFRESH_OFFSET: Duration = Duration::from_secs(300);
/// Default largest value accepted by `PUT /api/cache/{key}`.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Everything the handler reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the cache is and how to authenticate to it.
    pub redis: RedisSettings,
    /// Deadlines for every outside call.
    pub deadlines: Deadlines,
    /// `CACHE_MAX_VALUE_BYTES`: largest value a PUT may store (default 1 MiB).
    pub max_value_bytes: usize,
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`, else `FUNCTIONS_HTTPWORKER_PORT`, else 8080.
    pub listen_port: u16,
    /// `HANDLER_DRAIN_SECONDS`: how long in-flight requests may finish after SIGTERM (default 10).
    pub drain: Duration,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`: names this process in probe keys and logs.
    pub worker_id: String,
    /// `WEBSITE_SITE_NAME`: the function app's name (`local` when unset),
    /// which names the key the timer's last result is kept under.
    pub app_name: String,
    /// `WEBSITE_INSTANCE_ID`: the instance this process runs on (else the
    /// machine's host name), shown beside the timer's last result.
    pub instance_id: String,
}

/// The cache endpoint and its authentication.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `Redis__redisHostName`, or the host of the `Redis` connection string.
    pub host: String,
    /// `Redis__port`: 10000 for `*.redis.azure.net`, else 6380.
    pub port: u16,
    /// `Redis__ssl`: TLS on (default) or off.
    pub tls: bool,
    /// `SSL_CERT_FILE`: extra trusted CAs (PEM), added to the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// `Redis__clusterMode`: whether the cache is a cluster (default: ask it).
    pub cluster_mode: ClusterMode,
    /// `Redis__maintenanceNotifications`: which maintenance notifications
    /// the connections ask for (default: by host name).
    pub notifications: NotificationSetting,
    /// How the connection authenticates.
    pub auth: AuthSettings,
}

/// `Redis__clusterMode`: how the handler learns whether the cache is a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// `auto`: the first connection asks (`INFO cluster`, `cluster_enabled:1`).
    #[default]
    Auto,
    /// `standalone`: one endpoint (Azure Cache for Redis without
    /// clustering, Azure Managed Redis with the Enterprise policy).
    Standalone,
    /// `cluster`: an OSS cluster (Azure Managed Redis's OSS policy,
    /// clustered Premium).
    Cluster,
}

impl ClusterMode {
    fn parse(value: &str) -> Result<Self, SettingsError> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "standalone" => Ok(Self::Standalone),
            "cluster" => Ok(Self::Cluster),
            _ => Err(bad("Redis__clusterMode", "must be auto, standalone or cluster")),
        }
    }
}

/// `Redis__maintenanceNotifications`: which announcements of maintenance
/// the connections ask the cache for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotificationSetting {
    /// `auto`: `AzureRedisEvents` for `*.redis.cache.windows.net`, Redis's
    /// maintenance notifications for `*.redis.azure.net`, none for other
    /// names.
    #[default]
    Auto,
    /// `on`: both, whatever the host name.
    On,
    /// `off`: neither.
    Off,
}

impl NotificationSetting {
    fn parse(value: &str) -> Result<Self, SettingsError> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            _ => Err(bad("Redis__maintenanceNotifications", "must be auto, on or off")),
        }
    }
}

/// How the handler authenticates to Redis.
#[derive(Debug, Clone)]
pub enum AuthSettings {
    /// Microsoft Entra ID: `AUTH <principal> <access token>`.
    Entra(EntraSettings),
    /// An access key from the `Redis` connection string.
    AccessKey {
        /// `user=` in the connection string, if any.
        user: Option<String>,
        /// `password=` in the connection string.
        password: Secret,
    },
}

/// Entra ID settings.
#[derive(Debug, Clone)]
pub struct EntraSettings {
    /// `Redis__principalId`: the Redis user name; else the token's `oid` claim.
    pub principal_id: Option<String>,
    /// `Redis__scope` (default `https://redis.azure.com/.default`).
    pub scope: String,
    /// `Redis__tokenRefreshOffsetSeconds` (default 300).
    pub refresh_offset: Duration,
    /// Which credential fetches tokens.
    pub credential: CredentialChoice,
}

/// Deadlines for calls that leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// `Redis__tokenTimeoutSeconds`: one token fetch (default 5 s).
    pub token_fetch: Duration,
    /// `Redis__connectTimeoutSeconds`: TCP + TLS + AUTH of a new connection (default 5 s).
    pub connect: Duration,
    /// `Redis__commandTimeoutSeconds`: one Redis command (default 5 s).
    pub command: Duration,
    /// `Redis__rideThroughSeconds`: how long an invocation waits for a lost
    /// connection, or a cache that answers "not now" (`LOADING`,
    /// `TRYAGAIN`, ...), to come back before it fails; 0 turns waiting off.
    /// Default: one connect plus one command deadline (10 s).
    pub ride_through: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            token_fetch: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            command: Duration::from_secs(5),
            ride_through: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A bad or missing setting; the message names it in one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("setting {name}: {problem}")]
pub struct SettingsError {
    /// The setting's name.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

pub(crate) fn bad(name: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        name,
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let redis = redis_settings(&get)?;
        let listen_port = match get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(v) => parse_port("FUNCTIONS_CUSTOMHANDLER_PORT", &v)?,
            None => match get("FUNCTIONS_HTTPWORKER_PORT") {
                Some(v) => parse_port("FUNCTIONS_HTTPWORKER_PORT", &v)?,
                None => 8080,
            },
        };
        let connect = seconds(&get, "Redis__connectTimeoutSeconds", 5.0)?;
        let command = seconds(&get, "Redis__commandTimeoutSeconds", 5.0)?;
        let deadlines = Deadlines {
            token_fetch: seconds(&get, "Redis__tokenTimeoutSeconds", 5.0)?,
            connect,
            command,
            ride_through: match get("Redis__rideThroughSeconds") {
                None => connect + command,
                Some(v) => match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Duration::from_secs_f64(s),
                    _ => {
                        return Err(bad(
                            "Redis__rideThroughSeconds",
                            "must be a number of seconds from 0 (off) to 3600",
                        ))
                    }
                },
            },
        };
        let max_value_bytes = match get("CACHE_MAX_VALUE_BYTES") {
            None => DEFAULT_MAX_VALUE_BYTES,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(bad(
                        "CACHE_MAX_VALUE_BYTES",
                        "must be a whole number of bytes, at least 1",
                    ))
                }
            },
        };
        let log_format = match get("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(bad("LOG_FORMAT", "must be text or json")),
        };
        Ok(Self {
            redis,
            deadlines,
            max_value_bytes,
            listen_port,
            drain: seconds(&get, "HANDLER_DRAIN_SECONDS", 10.0)?,
            log_format,
            worker_id: get("FUNCTIONS_CUSTOMHANDLER_WORKER_ID").unwrap_or_else(|| "local".to_owned()),
            app_name: get("WEBSITE_SITE_NAME").unwrap_or_else(|| "local".to_owned()),
            instance_id: get("WEBSITE_INSTANCE_ID")
                .or_else(|| get("HOSTNAME"))
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "local".to_owned()),
        })
    }
}

fn redis_settings(get: &impl Fn(&str) -> Option<String>) -> Result<RedisSettings, SettingsError> {
    let extra_ca_file = get("SSL_CERT_FILE").map(PathBuf::from);
    let cluster_mode = match get("Redis__clusterMode") {
        Some(v) => ClusterMode::parse(&v)?,
        None => ClusterMode::Auto,
    };
    let notifications = match get("Redis__maintenanceNotifications") {
        Some(v) => NotificationSetting::parse(&v)?,
        None => NotificationSetting::Auto,
    };
    if let Some(conn) = get("Redis") {
        if get("Redis__redisHostName").is_some() {
            return Err(bad(
                "Redis",
                "set either the Redis connection string (access key) or Redis__redisHostName (Entra ID), not both",
            ));
        }
        let parsed = parse_connection_string(&conn)?;
        return Ok(RedisSettings {
            extra_ca_file,
            cluster_mode,
            notifications,
            ..parsed
        });
    }
    let host = get("Redis__redisHostName").ok_or_else(|| {
        bad(
            "Redis__redisHostName",
            "is required (the cache host name, e.g. mycache.redis.cache.windows.net), unless Redis is set",
        )
    })?;
    let (host, in_name) = split_host_port("Redis__redisHostName", &host)?;
    let port = match (in_name, get("Redis__port")) {
        (Some(named), Some(v)) => {
            let setting = parse_port("Redis__port", &v)?;
            if named != setting {
                return Err(bad(
                    "Redis__redisHostName",
                    format!("gives port {named} but Redis__port is {setting}; set the port in one of them, or make them agree"),
                ));
            }
            named
        }
        (Some(named), None) => named,
        (None, Some(v)) => parse_port("Redis__port", &v)?,
        (None, None) => default_port(&host),
    };
    let tls = match get("Redis__ssl") {
        Some(v) => parse_bool("Redis__ssl", &v)?,
        None => true,
    };
    let refresh_offset = seconds(
        get,
        "Redis__tokenRefreshOffsetSeconds",
        DEFAULT_REFRESH_OFFSET.as_secs_f64(),
    )?;
    let entra = EntraSettings {
        principal_id: get("Redis__principalId"),
        scope: get("Redis__scope").unwrap_or_else(|| DEFAULT_SCOPE.to_owned()),
        refresh_offset,
        credential: choose_credential(get)?,
    };
    Ok(RedisSettings {
        host,
        port,
        tls,
        extra_ca_file,
        cluster_mode,
        notifications,
        auth: AuthSettings::Entra(entra),
    })
}

/// `host`, `host:port`, `[IPv6]` or `[IPv6]:port` (the Functions Redis
/// extension writes Azure Managed Redis as `name.region.redis.azure.net:10000`)
/// split into the host (an IPv6 address without its brackets) and the port,
/// if one is given. A scheme, a path, a space or an IPv6 address without
/// brackets is refused, naming `setting`.
pub(crate) fn split_host_port(setting: &'static str, value: &str) -> Result<(String, Option<u16>), SettingsError> {
    let refuse = |why: &str| Err(bad(setting, why.to_owned()));
    if value.contains(['/', ' ', '@', ',']) {
        return refuse(
            "must be a host name or host:port, without scheme or path (e.g. mycache.redis.cache.windows.net)",
        );
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return refuse("has an IPv6 address without its closing ']' (write [addr] or [addr]:port)");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return refuse("has something other than an IPv6 address in brackets");
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return refuse("must have only :port after the bracketed IPv6 address"),
            },
        };
        (addr, port)
    } else {
        match value.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return refuse("looks like an IPv6 address: put it in brackets, e.g. [2001:db8::1]:6380");
            }
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return refuse("has no host name before the port");
    }
    let port = port.map(|p| parse_port(setting, p)).transpose()?;
    Ok((host.to_owned(), port))
}

/// `host:port` for a log line or a message, with an IPv6 address in brackets.
pub(crate) fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Azure Managed Redis listens on 10000, Azure Cache for Redis on 6380.
pub(crate) fn default_port(host: &str) -> u16 {
    if host.to_ascii_lowercase().ends_with(".redis.azure.net") {
        10000
    } else {
        6380
    }
}

pub(crate) fn parse_port(name: &'static str, v: &str) -> Result<u16, SettingsError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(name, "must be a port number from 1 to 65535")),
    }
}

pub(crate) fn parse_bool(name: &'static str, v: &str) -> Result<bool, SettingsError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(name, "must be true or false")),
    }
}

fn seconds(get: &impl Fn(&str) -> Option<String>, name: &'static str, default: f64) -> Result<Duration, SettingsError> {
    let Some(v) = get(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(bad(
            name,
            "must be a number of seconds greater than 0 and at most 86400",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    fn choice(pairs: &[(&str, &str)]) -> Result<CredentialChoice, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        choose_credential(&|k: &str| map.get(k).cloned())
    }

    fn entra(s: &Settings) -> &EntraSettings {
        match &s.redis.auth {
            AuthSettings::Entra(e) => e,
            other => panic!("expected Entra ID, got {other:?}"),
        }
    }

    /// A bare host name gets the Azure Cache for Redis defaults.
    #[test]
    fn host_only_uses_defaults() {
        let s = load(&[("Redis__redisHostName", "c1.redis.cache.windows.net")]).unwrap();
        assert_eq!(s.redis.host, "c1.redis.cache.windows.net");
        assert_eq!(s.redis.port, 6380);
        assert!(s.redis.tls);
        let e = entra(&s);
        assert_eq!(e.scope, DEFAULT_SCOPE);
        assert_eq!(e.refresh_offset, Duration::from_secs(300));
        assert_eq!(e.principal_id, None);
        assert_eq!(e.credential, CredentialChoice::DeveloperTools);
        assert_eq!(s.listen_port, 8080);
        assert_eq!(s.max_value_bytes, 1024 * 1024);
        assert_eq!(s.deadlines, Deadlines::default());
        assert_eq!(s.log_format, LogFormat::Text);
    }

    /// Azure Managed Redis host names default to port 10000.
    #[test]
    fn managed_redis_defaults_to_10000() {
        let s = load(&[("Redis__redisHostName", "amr.westeurope.redis.azure.net")]).unwrap();
        assert_eq!(s.redis.port, 10000);
    }

    /// Every documented setting is read.
    #[test]
    fn all_settings_are_read() {
        let s = load(&[
            ("Redis__redisHostName", "h"),
            ("Redis__port", "7000"),
            ("Redis__ssl", "False"),
            ("Redis__principalId", "oid-1"),
            ("Redis__scope", "api://x/.default"),
            ("Redis__tokenRefreshOffsetSeconds", "8"),
            ("Redis__tokenTimeoutSeconds", "1.5"),
            ("Redis__connectTimeoutSeconds", "2"),
            ("Redis__commandTimeoutSeconds", "0.25"),
            ("CACHE_MAX_VALUE_BYTES", "10"),
            ("FUNCTIONS_HTTPWORKER_PORT", "1234"),
            ("LOG_FORMAT", "JSON"),
            ("SSL_CERT_FILE", "/tmp/ca.pem"),
            ("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "w1"),
            ("WEBSITE_SITE_NAME", "orders-api"),
            ("WEBSITE_INSTANCE_ID", "4b0e7c"),
        ])
        .unwrap();
        assert_eq!(s.redis.port, 7000);
        assert!(!s.redis.tls);
        assert_eq!(s.redis.extra_ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        let e = entra(&s);
        assert_eq!(e.principal_id.as_deref(), Some("oid-1"));
        assert_eq!(e.scope, "api://x/.default");
        assert_eq!(e.refresh_offset, Duration::from_secs(8));
        assert_eq!(s.deadlines.token_fetch, Duration::from_millis(1500));
        assert_eq!(s.deadlines.connect, Duration::from_secs(2));
        assert_eq!(s.deadlines.command, Duration::from_millis(250));
        assert_eq!(s.max_value_bytes, 10);
        assert_eq!(s.listen_port, 1234);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.worker_id, "w1");
        assert_eq!((s.app_name.as_str(), s.instance_id.as_str()), ("orders-api", "4b0e7c"));
    }

    /// The custom handler port wins over the HTTP worker port.
    #[test]
    fn customhandler_port_wins() {
        let s = load(&[
            ("Redis__redisHostName", "h"),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "4000"),
            ("FUNCTIONS_HTTPWORKER_PORT", "5000"),
        ])
        .unwrap();
        assert_eq!(s.listen_port, 4000);
    }

    /// Each bad setting fails with its own name in the message.
    #[test]
    fn bad_settings_name_themselves() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "Redis__redisHostName"),
            (&[("Redis__redisHostName", "rediss://h:6380")], "Redis__redisHostName"),
            (&[("Redis__redisHostName", "h"), ("Redis__port", "0")], "Redis__port"),
            (
                &[("Redis__redisHostName", "h"), ("Redis__port", "70000")],
                "Redis__port",
            ),
            (&[("Redis__redisHostName", "h"), ("Redis__ssl", "maybe")], "Redis__ssl"),
            (
                &[
                    ("Redis__redisHostName", "h"),
                    ("Redis__tokenRefreshOffsetSeconds", "-1"),
                ],
                "Redis__tokenRefreshOffsetSeconds",
            ),
            (
                &[("Redis__redisHostName", "h"), ("Redis__commandTimeoutSeconds", "x")],
                "Redis__commandTimeoutSeconds",
            ),
            (
                &[("Redis__redisHostName", "h"), ("CACHE_MAX_VALUE_BYTES", "0")],
                "CACHE_MAX_VALUE_BYTES",
            ),
            (&[("Redis__redisHostName", "h"), ("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (
                &[("Redis__redisHostName", "h"), ("FUNCTIONS_CUSTOMHANDLER_PORT", "abc")],
                "FUNCTIONS_CUSTOMHANDLER_PORT",
            ),
            (
                &[("Redis__redisHostName", "h"), ("Redis", "h:6380,password=k")],
                "Redis",
            ),
            (&[("Redis", "h:6380,ssl=True")], "Redis"),
            (
                &[("Redis__redisHostName", "h"), ("Redis__credential", "magic")],
                "Redis__credential",
            ),
            (
                &[
                    ("Redis__redisHostName", "h"),
                    ("Redis__clientSecret", "s"),
                    ("Redis__clientId", "c"),
                ],
                "Redis__tenantId",
            ),
            (
                &[
                    ("Redis__redisHostName", "h"),
                    ("Redis__clientSecret", "s"),
                    ("Redis__tenantId", "t"),
                ],
                "Redis__clientId",
            ),
            (
                &[("Redis__redisHostName", "h"), ("Redis__credential", "workloadidentity")],
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (
                &[
                    ("Redis__redisHostName", "h"),
                    ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
                    ("AZURE_AUTHORITY_HOST", "http://login.microsoftonline.us"),
                ],
                "AZURE_AUTHORITY_HOST",
            ),
            (
                &[
                    ("Redis__redisHostName", "h"),
                    ("Redis__clientSecret", "s"),
                    ("Redis__clientId", "c"),
                    ("Redis__tenantId", "t"),
                    ("AZURE_AUTHORITY_HOST", "login.microsoftonline.us"),
                ],
                "AZURE_AUTHORITY_HOST",
            ),
        ];
        for (pairs, name) in cases {
            let err = load(pairs).expect_err(&format!("{pairs:?} should fail"));
            assert_eq!(err.name, *name, "{pairs:?}: {err}");
            let line = err.to_string();
            assert!(line.starts_with(&format!("setting {name}:")), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    /// The Functions Redis extension's `host:port` form, and IPv6 literals in
    /// brackets, with or without a port; a port that agrees with
    /// `Redis__port` is fine.
    #[test]
    fn host_name_with_port_and_ipv6() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u16);
        let cases: &[Case] = &[
            (
                &[("Redis__redisHostName", "amr.westeurope.redis.azure.net:10000")],
                "amr.westeurope.redis.azure.net",
                10000,
            ),
            (
                &[("Redis__redisHostName", "c1.redis.cache.windows.net:6379")],
                "c1.redis.cache.windows.net",
                6379,
            ),
            (
                &[("Redis__redisHostName", "h:7000"), ("Redis__port", "7000")],
                "h",
                7000,
            ),
            (&[("Redis__redisHostName", "[::1]:6390")], "::1", 6390),
            (&[("Redis__redisHostName", "[2001:db8::1]")], "2001:db8::1", 6380),
            (
                &[("Redis__redisHostName", "[::1]"), ("Redis__port", "10000")],
                "::1",
                10000,
            ),
            (&[("Redis__redisHostName", "10.0.0.4:6380")], "10.0.0.4", 6380),
        ];
        for (pairs, host, port) in cases {
            let s = load(pairs).unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
            assert_eq!((s.redis.host.as_str(), s.redis.port), (*host, *port), "{pairs:?}");
        }
        assert_eq!(endpoint("::1", 6380), "[::1]:6380");
        assert_eq!(endpoint("h", 6380), "h:6380");
    }

    /// A port in `Redis__redisHostName` that disagrees with `Redis__port`
    /// stops start-up with one line naming both settings and both ports.
    #[test]
    fn host_name_port_disagreeing_with_port_setting() {
        let err = load(&[
            ("Redis__redisHostName", "amr.westeurope.redis.azure.net:10000"),
            ("Redis__port", "6380"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "Redis__redisHostName");
        let line = err.to_string();
        assert!(line.contains("10000") && line.contains("Redis__port is 6380"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    /// Forms that are not a host name, `host:port` or a bracketed IPv6
    /// address are refused, naming the setting.
    #[test]
    fn malformed_host_names_are_refused() {
        for bad in [
            "rediss://h:6380",
            "h/path",
            "::1",
            "2001:db8::1:6380",
            "[::1",
            "[::1]6380",
            "[not-an-address]:6380",
            ":6380",
            "h:",
            "h:0",
            "h:abc",
            "h:70000",
            "user@h:6380",
        ] {
            let err = load(&[("Redis__redisHostName", bad)]).expect_err(bad);
            assert_eq!(err.name, "Redis__redisHostName", "{bad}: {err}");
        }
        // The connection string's endpoint takes the same forms.
        let s = load(&[("Redis", "[::1]:6390,password=k,ssl=True")]).unwrap();
        assert_eq!((s.redis.host.as_str(), s.redis.port), ("::1", 6390));
        assert_eq!(load(&[("Redis", "::1:6390,password=k")]).unwrap_err().name, "Redis");
    }

    /// The connection string form gives access-key auth, and the key stays hidden.
    #[test]
    fn connection_string_access_key() {
        let s = load(&[(
            "Redis",
            "c1.redis.cache.windows.net:6380,password=S3cr3tKey=,ssl=True,abortConnect=False",
        )])
        .unwrap();
        assert_eq!(s.redis.host, "c1.redis.cache.windows.net");
        assert_eq!(s.redis.port, 6380);
        assert!(s.redis.tls);
        match &s.redis.auth {
            AuthSettings::AccessKey { user, password } => {
                assert_eq!(user, &None);
                assert_eq!(password.expose(), "S3cr3tKey=");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?}").contains("S3cr3tKey"));
    }

    /// A client secret never shows in Debug output of the settings.
    #[test]
    fn client_secret_hidden_in_debug() {
        let s = load(&[
            ("Redis__redisHostName", "h"),
            ("Redis__clientSecret", "very-secret-value"),
            ("Redis__clientId", "app"),
            ("Redis__tenantId", "tenant"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("very-secret-value"));
    }

    /// Credential selection follows docs/contract.md's order.
    #[test]
    fn credential_selection_order() {
        assert_eq!(choice(&[]).unwrap(), CredentialChoice::DeveloperTools);
        assert_eq!(
            choice(&[("IDENTITY_ENDPOINT", "http://x"), ("IDENTITY_HEADER", "h")]).unwrap(),
            CredentialChoice::ManagedIdentity { client_id: None }
        );
        assert_eq!(
            choice(&[("IDENTITY_ENDPOINT", "http://x")]).unwrap(),
            CredentialChoice::DeveloperTools,
            "an endpoint without its header is not App Service"
        );
        assert_eq!(
            choice(&[("Redis__clientId", "uami")]).unwrap(),
            CredentialChoice::ManagedIdentity {
                client_id: Some("uami".into())
            }
        );
        assert_eq!(
            choice(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
                ("IDENTITY_ENDPOINT", "x"),
                ("IDENTITY_HEADER", "h")
            ])
            .unwrap(),
            CredentialChoice::WorkloadIdentity {
                client_id: None,
                tenant_id: None,
                authority: Authority::default(),
            }
        );
        let cs = choice(&[
            ("Redis__clientSecret", "s"),
            ("Redis__clientId", "app"),
            ("Redis__tenantId", "t"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ("IDENTITY_ENDPOINT", "x"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap();
        assert!(matches!(cs, CredentialChoice::ClientSecret { ref client_id, .. } if client_id == "app"));
        assert_eq!(
            choice(&[
                ("Redis__credential", "DeveloperTools"),
                ("IDENTITY_ENDPOINT", "x"),
                ("IDENTITY_HEADER", "h")
            ])
            .unwrap(),
            CredentialChoice::DeveloperTools
        );
        assert_eq!(
            choice(&[("Redis__credential", "managedidentity")]).unwrap(),
            CredentialChoice::ManagedIdentity { client_id: None }
        );
    }

    /// A client secret and workload identity sign in at `AZURE_AUTHORITY_HOST`
    /// (another cloud) and trust `SSL_CERT_FILE` for it; the credentials that do
    /// not call Entra ID themselves ignore it, even when it is malformed.
    #[test]
    fn authority_host_and_extra_ca_reach_the_entra_credentials() {
        let sovereign = Authority {
            host: Some("https://login.microsoftonline.us".into()),
            extra_ca_file: Some(PathBuf::from("/etc/proxy-ca.pem")),
        };
        let common = [
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
            ("SSL_CERT_FILE", "/etc/proxy-ca.pem"),
        ];
        let secret = choice(&[
            common[0],
            common[1],
            ("Redis__clientSecret", "s"),
            ("Redis__clientId", "app"),
            ("Redis__tenantId", "t"),
        ])
        .unwrap();
        assert!(
            matches!(&secret, CredentialChoice::ClientSecret { authority, .. } if *authority == sovereign),
            "{secret:?}"
        );
        assert_eq!(
            choice(&[common[0], common[1], ("AZURE_FEDERATED_TOKEN_FILE", "/f")]).unwrap(),
            CredentialChoice::WorkloadIdentity {
                client_id: None,
                tenant_id: None,
                authority: sovereign,
            }
        );
        let scope = load(&[
            ("Redis__redisHostName", "c1.redis.cache.usgovcloudapi.net"),
            ("Redis__scope", "acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default"),
        ])
        .unwrap();
        assert_eq!(entra(&scope).scope, "acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default");
        for unused in [
            &[("AZURE_AUTHORITY_HOST", "not a url")][..],
            &[("AZURE_AUTHORITY_HOST", "not a url"), ("Redis__clientId", "uami")][..],
        ] {
            assert!(choice(unused).is_ok(), "{unused:?}");
        }
    }
}
