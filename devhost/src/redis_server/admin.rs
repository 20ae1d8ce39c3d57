//! The emulators' admin handle on the stand-in Redis: plain TCP on loopback,
//! authenticated as `default` with the server's random admin password.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": the Redis user name is the
//! identity's object id and its password is the access token
//! (`AUTH <object id> <access token>`); those users and passwords are what
//! this handle manages with `ACL SETUSER`.

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A cheap, cloneable handle for admin commands on a [`super::RedisServer`].
///
/// Each call opens a short-lived connection, so the handle keeps working
/// across [`super::RedisServer::stop`] / [`super::RedisServer::start_again`].
#[derive(Clone)]
pub struct RedisAdmin {
    port: u16,
    password: String,
}

impl fmt::Debug for RedisAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdmin")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// One line of `CLIENT LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client id (`id=`).
    pub id: u64,
    /// Peer address, `ip:port` (`addr=`).
    pub addr: String,
    /// Local address the client connected to, `ip:port` (`laddr=`): tells the
    /// TLS port from the plain admin port.
    pub laddr: String,
    /// Authenticated ACL user (`user=`).
    pub user: String,
    /// Connection name set with `CLIENT SETNAME` (`name=`, may be empty).
    pub name: String,
    /// Last command run (`cmd=`).
    pub cmd: String,
    /// Every `key=value` field of the line, including the ones above.
    pub fields: BTreeMap<String, String>,
}

impl ClientInfo {
    /// Parses one `CLIENT LIST` line; `None` for a blank or id-less line.
    pub fn parse(line: &str) -> Option<ClientInfo> {
        let fields: BTreeMap<String, String> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        Some(ClientInfo {
            id: fields.get("id")?.parse().ok()?,
            addr: get("addr"),
            laddr: get("laddr"),
            user: get("user"),
            name: get("name"),
            cmd: get("cmd"),
            fields,
        })
    }
}

impl RedisAdmin {
    pub(crate) fn new(port: u16, password: String) -> Self {
        RedisAdmin { port, password }
    }

    /// The plain (non-TLS) port the admin connects to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `default` user's password (an access key, for key-based tests).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Opens a new authenticated admin connection (plain TCP, user `default`).
    pub async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let url = format!("redis://default:{}@127.0.0.1:{}/", self.password, self.port);
        let client = redis::Client::open(url.as_str())?;
        let conn = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow::anyhow!("admin connection to 127.0.0.1:{} timed out", self.port))?
            .with_context(|| format!("admin connection to 127.0.0.1:{}", self.port))?;
        Ok(conn)
    }

    /// [`RedisAdmin::connection`] with other limits: `connect` for the
    /// connection and its AUTH, `response` for each reply (redis-rs's
    /// defaults, used there, are 1 s and 500 ms), for admin work that can
    /// take longer on a busy machine (forming a cluster, `MIGRATE`).
    pub(crate) async fn connection_with_timeouts(
        &self,
        connect: Duration,
        response: Duration,
    ) -> anyhow::Result<MultiplexedConnection> {
        let url = format!("redis://default:{}@127.0.0.1:{}/", self.password, self.port);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response));
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("admin connection to 127.0.0.1:{}", self.port))
    }

    /// Runs one command on a fresh admin connection.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let mut conn = self.connection().await?;
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Runs an ACL change, then `ACL SAVE`, so the users survive
    /// [`super::RedisServer::start_again`] as Entra access policy
    /// assignments survive a cache restart.
    async fn acl_mutate(&self, c: &redis::Cmd, what: &'static str) -> anyhow::Result<Value> {
        let mut conn = self.connection().await?;
        let v: Value = c.query_async(&mut conn).await.context(what)?;
        redis::cmd("ACL")
            .arg("SAVE")
            .query_async::<()>(&mut conn)
            .await
            .context("ACL SAVE")?;
        Ok(v)
    }

    /// `ACL SETUSER <user> on >password ~* &* +@all`: creates or enables the
    /// user and adds `password` to its passwords.
    pub async fn acl_add_password(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER").arg(user).arg("on").arg(format!(">{password}"));
        c.arg("~*").arg("&*").arg("+@all");
        self.acl_mutate(&c, "ACL SETUSER (add password)").await?;
        Ok(())
    }

    /// `ACL SETUSER <user> <password`: removes one password. `Ok(false)` when
    /// the user did not have it (or does not exist).
    pub async fn acl_remove_password(&self, user: &str, password: &str) -> anyhow::Result<bool> {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER").arg(user).arg(format!("<{password}"));
        match self.acl_mutate(&c, "ACL SETUSER (remove password)").await {
            Ok(_) => Ok(true),
            Err(e) if format!("{e:#}").contains("does not exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ACL SETUSER <user> off`: the user can no longer authenticate (a lost
    /// access policy assignment).
    pub async fn acl_disable_user(&self, user: &str) -> anyhow::Result<()> {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER").arg(user).arg("off");
        self.acl_mutate(&c, "ACL SETUSER off").await?;
        Ok(())
    }

    /// `ACL SETUSER <user> on`: undoes [`RedisAdmin::acl_disable_user`].
    pub async fn acl_enable_user(&self, user: &str) -> anyhow::Result<()> {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER").arg(user).arg("on");
        self.acl_mutate(&c, "ACL SETUSER on").await?;
        Ok(())
    }

    /// `ACL DELUSER <user>`: deletes the user (Redis also disconnects its
    /// clients). `Ok(true)` when it existed.
    pub async fn acl_delete_user(&self, user: &str) -> anyhow::Result<bool> {
        let mut c = redis::cmd("ACL");
        c.arg("DELUSER").arg(user);
        let n = self.acl_mutate(&c, "ACL DELUSER").await?;
        Ok(i64::from_redis_value(n)? > 0)
    }

    /// How many passwords the user has (`ACL GETUSER`); 0 when the user does
    /// not exist.
    pub async fn acl_password_count(&self, user: &str) -> anyhow::Result<usize> {
        let mut c = redis::cmd("ACL");
        c.arg("GETUSER").arg(user);
        let reply: Value = self.cmd(&c).await.context("ACL GETUSER")?;
        let pairs: Vec<(Value, Value)> = match reply {
            Value::Nil => return Ok(0),
            Value::Map(m) => m,
            Value::Array(items) => {
                let mut it = items.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            other => anyhow::bail!("unexpected ACL GETUSER reply {other:?}"),
        };
        for (k, v) in pairs {
            if matches!(&k, Value::BulkString(b) if b == b"passwords") {
                return Ok(match v {
                    Value::Array(a) | Value::Set(a) => a.len(),
                    _ => 0,
                });
            }
        }
        Ok(0)
    }

    /// `CLIENT LIST`, parsed, without the admin connection that asked.
    pub async fn client_list(&self) -> anyhow::Result<Vec<ClientInfo>> {
        let mut conn = self.connection().await?;
        let (own_id, list): (u64, String) = redis::pipe()
            .cmd("CLIENT")
            .arg("ID")
            .cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .context("CLIENT LIST")?;
        Ok(list
            .lines()
            .filter_map(ClientInfo::parse)
            .filter(|c| c.id != own_id)
            .collect())
    }

    /// `CLIENT KILL USER <user>`: disconnects every client authenticated as
    /// `user` (never the admin connection that asks); returns how many.
    pub async fn client_kill_user(&self, user: &str) -> anyhow::Result<usize> {
        let mut c = redis::cmd("CLIENT");
        c.arg("KILL").arg("USER").arg(user);
        self.cmd::<usize>(&c).await.context("CLIENT KILL USER")
    }
}

#[cfg(test)]
mod tests {
    use super::ClientInfo;

    #[test]
    fn parses_client_list_line() {
        let line = "id=7 addr=127.0.0.1:51234 laddr=127.0.0.1:6380 fd=9 name=handler age=1 \
                    idle=0 flags=N db=0 cmd=client|list user=abc-oid redir=-1 resp=2";
        let c = ClientInfo::parse(line).unwrap();
        assert_eq!(c.id, 7);
        assert_eq!(c.addr, "127.0.0.1:51234");
        assert_eq!(c.laddr, "127.0.0.1:6380");
        assert_eq!(c.user, "abc-oid");
        assert_eq!(c.name, "handler");
        assert_eq!(c.cmd, "client|list");
        assert_eq!(c.fields["resp"], "2");
        assert!(ClientInfo::parse("").is_none());
    }
}
