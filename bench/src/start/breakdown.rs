//! The steps of a cold start's first cache answer, from the spans the
//! handler exports at start-up: its `warm-up` span (started as soon as it
//! listens) and, inside it, the first try of its `PING`, which waits for
//! the `token fetch` and then the `connect` (TCP, the TLS handshake and
//! AUTH, which the handler times as one) before it is sent. Pure: span
//! times in, steps out.

use anyhow::Context;

/// One span as the breakdown needs it: its name and its start and end in
/// ns since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Timed<'a> {
    /// `warm-up`, `token fetch`, `connect`, `PING`, ...
    pub name: &'a str,
    /// Start, ns since the Unix epoch.
    pub start: u64,
    /// End, ns since the Unix epoch.
    pub end: u64,
}

/// One traced cold start, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Steps {
    /// From spawning the process to the start of `warm-up`, which the
    /// handler starts right after it binds its port.
    pub listening: f64,
    /// From then to the start of `token fetch`: building the credential's
    /// request, and whatever else ran first.
    pub to_token: f64,
    /// `token fetch`: the identity endpoint's answer.
    pub token: f64,
    /// From the token's arrival (or the start of `connect`, if later) to
    /// the end of `connect`: TCP, the TLS handshake and AUTH.
    pub connect: f64,
    /// From the end of `connect` to the end of the first `PING`: its
    /// answer on the new connection.
    pub ping: f64,
    /// From spawning the process to the end of `warm-up`: everything above
    /// and the gaps between.
    pub warm_up: f64,
    /// From spawning the process to `GET /` answered, as the bench saw it.
    pub ready: f64,
    /// From spawning the process to `GET /api/ping` answered 200, as the
    /// bench saw it.
    pub first: f64,
}

/// The steps of the start spawned at `spawn` (ns since the Unix epoch),
/// from `spans` (those of this process; the first of each name counts),
/// with what the bench saw: `ready` and `first`, in ms since the spawn.
pub fn steps(spawn: u64, spans: &[Timed], ready: f64, first: f64) -> anyhow::Result<Steps> {
    let find = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name && s.start >= spawn)
            .min_by_key(|s| s.start)
            .with_context(|| format!("no `{name}` span from this start"))
    };
    let (warm, token, connect, ping) = (find("warm-up")?, find("token fetch")?, find("connect")?, find("PING")?);
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    Ok(Steps {
        listening: ms(spawn, warm.start),
        to_token: ms(warm.start, token.start),
        token: ms(token.start, token.end),
        connect: ms(connect.start.max(token.end), connect.end),
        ping: ms(ping.start.max(connect.end), ping.end),
        warm_up: ms(spawn, warm.end),
        ready,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn span(name: &str, start_ms: u64, end_ms: u64) -> Timed<'_> {
        Timed {
            name,
            start: 1_000 * MS + start_ms * MS,
            end: 1_000 * MS + end_ms * MS,
        }
    }

    /// Each step is read from its span, relative to the spawn; the connect
    /// counts from the token's arrival when it started waiting for it, the
    /// PING from the connection's.
    #[test]
    fn steps_from_spans() {
        let spans = [
            span("PING", 3, 9),
            span("warm-up", 3, 11),
            span("connect", 4, 8),
            span("token fetch", 4, 6),
            span("GET /api/ping", 7, 12),
        ];
        let s = steps(1_000 * MS, &spans, 3.5, 12.5).unwrap();
        assert_eq!(
            s,
            Steps {
                listening: 3.0,
                to_token: 1.0,
                token: 2.0,
                connect: 2.0,
                ping: 1.0,
                warm_up: 11.0,
                ready: 3.5,
                first: 12.5,
            }
        );
    }

    /// A connect that starts after the token came counts from its start, a
    /// PING that starts after the connection from its start; a span from
    /// before the spawn (another process) is not this start's; of two PINGs
    /// the first counts.
    #[test]
    fn later_connect_and_other_processes() {
        let spans = [
            Timed {
                name: "warm-up",
                start: 0,
                end: 5,
            },
            span("warm-up", 1, 9),
            span("token fetch", 1, 2),
            span("connect", 3, 6),
            span("PING", 7, 8),
            span("PING", 6, 7),
        ];
        let s = steps(1_000 * MS, &spans, 0.0, 0.0).unwrap();
        assert_eq!((s.listening, s.connect, s.ping), (1.0, 3.0, 1.0));
    }

    /// A start without one of the spans is an error naming it.
    #[test]
    fn missing_span() {
        let spans = [span("warm-up", 1, 9), span("token fetch", 1, 2), span("PING", 7, 8)];
        let err = steps(1_000 * MS, &spans, 0.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("`connect`"), "{err}");
    }
}
