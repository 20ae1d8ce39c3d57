//! What a Redis call can fail with, and how redis errors map to it.

use crate::secret::redact;
use crate::token::TokenError;
use std::time::Duration;

/// Why a Redis call failed, in words a caller may see (no secrets).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// No token: the identity is the problem.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// The cache refused the credentials (WRONGPASS, NOPERM, NOAUTH).
    #[error("the cache refused authentication: {0}")]
    Auth(String),
    /// The cache presented a certificate that does not verify (an
    /// untrusted CA, another host's name, expired): nothing was sent.
    #[error("the cache is unavailable: its TLS certificate was rejected: {0}")]
    Certificate(String),
    /// The cache could not be reached or the connection broke.
    #[error("the cache is unavailable: {0}")]
    Unavailable(String),
    /// A call ran past its deadline.
    #[error("the cache did not answer within {0:?}")]
    Timeout(Duration),
    /// The key holds another type than the command works on (`WRONGTYPE`).
    #[error("the key holds another type of value: {0}")]
    WrongType(String),
    /// The value is not an integer, or the result would overflow 64 bits
    /// (`INCRBY`'s `ERR value is not an integer or out of range`, `ERR
    /// increment or decrement would overflow`).
    #[error("the stored value is not a 64-bit integer, or the result would overflow: {0}")]
    NotAnInteger(String),
    /// `NOSCRIPT`: the node does not have the script (a new node, a
    /// restart, a failover); it is sent in full instead.
    #[error("the cache does not know the script: {0}")]
    NoScript(String),
    /// The cache answered with an error for this command.
    #[error("the cache rejected the command: {0}")]
    Command(String),
}

/// The redis error messages that mean [`CacheError::NotAnInteger`]: plain
/// `ERR`s, told apart only by their text.
const NOT_AN_INTEGER: [&str; 2] = ["value is not an integer", "increment or decrement would overflow"];

impl CacheError {
    /// What happened, without the kind's own words ("the cache is
    /// unavailable: "), for an error quoted inside another.
    pub(crate) fn detail(&self) -> String {
        match self {
            CacheError::Auth(m)
            | CacheError::Certificate(m)
            | CacheError::Unavailable(m)
            | CacheError::WrongType(m)
            | CacheError::NotAnInteger(m)
            | CacheError::NoScript(m)
            | CacheError::Command(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// Its class, as telemetry's `error.type` names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CacheError::Token(_) => "token",
            CacheError::Auth(_) => "auth_refused",
            CacheError::Certificate(_) => "certificate",
            CacheError::Unavailable(_) => "unavailable",
            CacheError::Timeout(_) => "timeout",
            CacheError::WrongType(_) => "wrong_type",
            CacheError::NotAnInteger(_) => "not_an_integer",
            CacheError::NoScript(_) => "no_script",
            CacheError::Command(_) => "command",
        }
    }

    /// Whether waiting cannot help: the cache refused the credentials or
    /// its certificate does not verify, until someone changes a setting or
    /// an access policy.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, CacheError::Auth(_) | CacheError::Certificate(_))
    }
}

/// Whether an error means the connection is gone or unusable.
pub(super) fn connection_broken(e: &redis::RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error() || e.code() == Some("NOAUTH")
}

/// Maps a redis error to what a caller is told (redacted).
pub(crate) fn classify(e: &redis::RedisError) -> CacheError {
    let msg = redact(&e.to_string());
    let auth_refused = matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm);
    if auth_refused {
        CacheError::Auth(msg)
    } else if e.is_timeout() {
        CacheError::Timeout(Duration::ZERO)
    } else if e.is_io_error() || e.is_connection_dropped() || e.kind() == redis::ErrorKind::InvalidClientConfig {
        CacheError::Unavailable(msg)
    } else if e.code() == Some("NOSCRIPT") {
        CacheError::NoScript(msg)
    } else if e.code() == Some("WRONGTYPE") {
        CacheError::WrongType(msg)
    } else if e.code() == Some("ERR") && e.detail().is_some_and(|d| NOT_AN_INTEGER.iter().any(|n| d.contains(n))) {
        CacheError::NotAnInteger(msg)
    } else {
        CacheError::Command(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's error reply, as the redis crate hands it over.
    fn reply(resp: &str) -> redis::RedisError {
        match redis::parse_redis_value(resp.as_bytes()) {
            Ok(value) => value.extract_error().expect_err("an error reply"),
            Err(e) => e,
        }
    }

    /// Error replies map by their code, never by the text of another kind:
    /// WRONGTYPE, INCRBY's two integer errors, refused credentials, and the
    /// rest as the command's own error.
    #[test]
    fn error_replies_map_to_kinds() {
        let kind = |resp| match classify(&reply(resp)) {
            CacheError::WrongType(_) => "wrong type",
            CacheError::NotAnInteger(_) => "not an integer",
            CacheError::Auth(_) => "auth",
            CacheError::Command(_) => "command",
            other => panic!("{resp}: {other:?}"),
        };
        assert_eq!(
            kind("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
            "wrong type"
        );
        assert_eq!(
            kind("-ERR value is not an integer or out of range\r\n"),
            "not an integer"
        );
        assert_eq!(kind("-ERR increment or decrement would overflow\r\n"), "not an integer");
        assert_eq!(
            kind("-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
            "auth"
        );
        assert_eq!(
            kind("-NOPERM this user has no permissions to run the 'get' command\r\n"),
            "auth"
        );
        assert_eq!(kind("-ERR unknown command 'NOPE'\r\n"), "command");
        assert_eq!(
            kind("-OOM command not allowed when used memory > 'maxmemory'.\r\n"),
            "command"
        );
        // The text alone makes nothing a wrong type.
        assert_eq!(kind("-ERR the value says WRONGTYPE in passing\r\n"), "command");
    }
}
