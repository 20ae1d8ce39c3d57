//! The access-key connection string (`Redis`), StackExchange.Redis form.

use super::{bad, default_port, parse_bool, AuthSettings, RedisSettings, SettingsError};
use crate::secret::Secret;

/// Parses a StackExchange.Redis connection string: `host:port,password=KEY,ssl=True,user=NAME`.
pub(crate) fn parse_connection_string(conn: &str) -> Result<RedisSettings, SettingsError> {
    let mut parts = conn.split(',').map(str::trim).filter(|p| !p.is_empty());
    let endpoint = parts.next().ok_or_else(|| bad("Redis", "is empty"))?;
    if endpoint.contains('=') {
        return Err(bad(
            "Redis",
            "must start with host:port (StackExchange.Redis form host:port,password=KEY,ssl=True)",
        ));
    }
    let (host, port) = super::split_host_port("Redis", endpoint)?;
    let port = port.unwrap_or_else(|| default_port(&host));
    let (mut password, mut user, mut tls) = (None, None, false);
    for part in parts {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            bad(
                "Redis",
                format!("option '{}' is not key=value", part.split('=').next().unwrap_or("")),
            )
        })?;
        match k.trim().to_ascii_lowercase().as_str() {
            "password" => password = Some(Secret::new(v.trim())),
            "user" => user = Some(v.trim().to_owned()),
            "ssl" => tls = parse_bool("Redis", v)?,
            // StackExchange.Redis options that make no difference here.
            _ => {}
        }
    }
    Ok(RedisSettings {
        host,
        port,
        tls,
        extra_ca_file: None,
        cluster_mode: super::ClusterMode::Auto,
        notifications: super::NotificationSetting::Auto,
        auth: AuthSettings::AccessKey {
            user,
            password: password.ok_or_else(|| bad("Redis", "has no password= (the access key)"))?,
        },
    })
}
