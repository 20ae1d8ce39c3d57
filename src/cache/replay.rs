//! Which commands may be sent again after their connection broke once they
//! were written, when nobody knows whether Redis ran them.
//!
//! A command may be replayed when running it twice leaves the cache and the
//! answer as running it once would: reads (`GET`, `EXISTS`, `TTL`, ...),
//! `SET` of a value with its TTL (the same value and TTL again), `PING`,
//! `CLIENT LIST`, `INFO`, `CLUSTER SLOTS`. Everything else is not replayed:
//! `INCRBY` would count twice, `DEL` would answer "not deleted" the second
//! time, `SET ... GET` or `NX` would answer differently, `EXPIRE` would
//! restart the TTL from a later instant, and a script may do anything. The
//! functions that need exactly-once writes make them idempotent themselves
//! (a script that records the invocation beside the key: see
//! [`crate::functions::once`]) and say so with [`Replay::Safe`].
//!
//! A command that was never written (no connection, a redirect, `LOADING`
//! and the other "not now" answers) may always be sent again.

/// Whether a command may be sent again after its connection broke once it
/// was written, when nobody knows whether Redis ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Decide from the command's name: reads, `PING`, `INFO`, `CLIENT
    /// LIST`, `CLUSTER ...`, `MSET` and plain `SET key value [EX s]` are
    /// sent again; everything else (`INCR`, `DEL`, `SET ... NX`, scripts,
    /// ...) is not.
    ByCommand,
    /// Sending it twice does what sending it once does (the caller made sure).
    Safe,
}

impl Replay {
    /// Whether `cmd` may be sent again after its connection broke.
    pub(crate) fn allows(self, cmd: &redis::Cmd) -> bool {
        match self {
            Self::ByCommand => replay_safe(cmd),
            Self::Safe => true,
        }
    }
}

/// Commands that read, or that leave the same state however often they run.
const IDEMPOTENT: &[&[u8]] = &[
    b"GET",
    b"MGET",
    b"GETRANGE",
    b"STRLEN",
    b"EXISTS",
    b"TYPE",
    b"TTL",
    b"PTTL",
    b"EXPIRETIME",
    b"HGET",
    b"HGETALL",
    b"HMGET",
    b"HEXISTS",
    b"HLEN",
    b"LRANGE",
    b"LLEN",
    b"LINDEX",
    b"SMEMBERS",
    b"SISMEMBER",
    b"SCARD",
    b"ZRANGE",
    b"ZSCORE",
    b"ZCARD",
    b"DBSIZE",
    b"PING",
    b"ECHO",
    b"INFO",
    b"TIME",
    b"CLUSTER",
    b"COMMAND",
    b"MSET",
];

/// `SET` options that make the answer depend on what was there before.
const SET_CONDITIONAL: &[&[u8]] = &[b"NX", b"XX", b"GET", b"KEEPTTL"];

/// `CLIENT` subcommands that only read.
const CLIENT_READS: &[&[u8]] = &[b"LIST", b"INFO", b"ID", b"GETNAME"];

/// Whether `cmd`, by its name and options, may be sent twice: see the
/// module's doc.
pub(crate) fn replay_safe(cmd: &redis::Cmd) -> bool {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let Some(name) = args.next() else {
        return false;
    };
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"SET") {
        // SET key value [EX s | PX ms]: the same value and TTL again.
        // EXAT/PXAT are absolute, so they are safe too.
        return args
            .skip(2)
            .all(|a| !SET_CONDITIONAL.iter().any(|c| a.eq_ignore_ascii_case(c)));
    }
    if is(b"CLIENT") {
        return args
            .next()
            .is_some_and(|sub| CLIENT_READS.iter().any(|r| sub.eq_ignore_ascii_case(r)));
    }
    IDEMPOTENT.iter().any(|n| is(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &str) -> redis::Cmd {
        let mut words = words.split(' ');
        let mut c = redis::cmd(words.next().unwrap());
        for w in words {
            c.arg(w);
        }
        c
    }

    /// Reads, plain SET with or without a TTL, PING, CLIENT LIST, INFO and
    /// CLUSTER SLOTS are replayed; INCRBY, DEL, conditional SETs, EXPIRE,
    /// scripts and CLIENT KILL are not.
    #[test]
    fn the_table() {
        for safe in [
            "GET k",
            "get k",
            "SET k v",
            "SET k v EX 60",
            "SET k v PX 1500",
            "PING",
            "CLIENT LIST",
            "client list",
            "INFO cluster",
            "CLUSTER SLOTS",
            "EXISTS k",
            "TTL k",
        ] {
            assert!(replay_safe(&cmd(safe)), "{safe}");
        }
        for unsafe_ in [
            "INCRBY k 1",
            "INCR k",
            "DEL k",
            "SET k v NX",
            "SET k v EX 60 GET",
            "SET k v KEEPTTL",
            "EXPIRE k 60",
            "EVAL s 1 k",
            "EVALSHA abc 1 k",
            "CLIENT KILL ID 3",
            "LPUSH l x",
            "FLUSHALL",
            "HSET h f v",
            "SADD s m",
        ] {
            assert!(!replay_safe(&cmd(unsafe_)), "{unsafe_}");
        }
        assert!(Replay::Safe.allows(&cmd("EVALSHA abc 1 k")));
        assert!(Replay::ByCommand.allows(&cmd("GET k")));
        assert!(!Replay::ByCommand.allows(&cmd("EVALSHA abc 1 k")));
    }
}
