//! W3C Trace Context (`traceparent`, `tracestate`) for an invocation.
//!
//! The Functions host calls a custom handler with a .NET `HttpClient`,
//! which adds `traceparent`/`tracestate` for the host's current activity, or
//! passes on the caller's own; App Insights' OperationId comes from it
//! (docs/azure.md, "Telemetry"). Each invocation is a child of the trace
//! its request names: the same trace id, a span id of its own, the caller's
//! span id as its parent and the caller's sampling flag. A request without
//! one, or with one that does not parse, starts a new trace: a malformed
//! header is never an error, and its text is not kept.
//!
//! Parsing follows the W3C Trace Context recommendation (level 1, section
//! 3.2): `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case
//! hex; version `ff`, an all-zero trace id or parent id are invalid; a
//! version other than `00` may carry more fields after the flags.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;

/// The W3C headers, as names (a lookup by a string parses it first).
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace an invocation belongs to and its own place in it.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// This invocation's span: 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The caller's span, when the request named one.
    pub parent_span_id: Option<[u8; 8]>,
    /// `trace-flags`: bit 0 is "sampled" (a new trace is sampled).
    pub flags: u8,
    /// The caller's `tracestate`, passed on unchanged when it is well formed.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of an invocation whose request carries `headers`: a child
    /// of their `traceparent` (and `tracestate`), or a new trace.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_traceparent(headers.get(TRACEPARENT), headers)
    }

    /// [`TraceContext::from_headers`] with their first `traceparent`
    /// already found.
    pub(crate) fn from_traceparent(traceparent: Option<&HeaderValue>, headers: &HeaderMap) -> Self {
        let parent = traceparent.and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: new_span_id(),
                parent_span_id: Some(parent.span_id),
                flags: parent.flags,
                tracestate: tracestate(headers),
            },
            None => Self::new_trace(),
        }
    }

    /// A new trace, sampled, with no parent.
    pub fn new_trace() -> Self {
        Self {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent_span_id: None,
            flags: 0x01,
            tracestate: None,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> Hex<16> {
        Hex(self.trace_id)
    }

    /// This invocation's span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> Hex<8> {
        Hex(self.span_id)
    }

    /// The `traceparent` that names this invocation's span, for a call it
    /// makes (version 00).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id_hex(), self.span_id_hex(), self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &self.trace_id_hex().to_string())
            .field("span_id", &self.span_id_hex().to_string())
            .field("parent_span_id", &self.parent_span_id.map(|p| Hex(p).to_string()))
            .field("flags", &self.flags)
            .field("tracestate", &self.tracestate)
            .finish()
    }
}

/// Bytes shown as lower-case hex, without an allocation until displayed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate().take(32) {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&out[..2 * N.min(32)]).unwrap_or_default())
    }
}

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a valid `traceparent` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Parses a `traceparent` header value; `None` when it is not valid.
pub(crate) fn parse_traceparent(value: &str) -> Option<Parent> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    // version(2) - trace-id(32) - parent-id(16) - flags(2) = 55 characters.
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let version = hex_byte(&bytes[0..2])?;
    match (version, bytes.len()) {
        (0xff, _) => return None,
        // Version 00 has exactly four fields.
        (0x00, 55) => {}
        (0x00, _) => return None,
        // A later version may add fields, after a '-'.
        (_, 55) => {}
        (_, _) if bytes[55] == b'-' => {}
        _ => return None,
    }
    let trace_id: [u8; 16] = hex_array(&bytes[3..35])?;
    let span_id: [u8; 8] = hex_array(&bytes[36..52])?;
    let flags = hex_byte(&bytes[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// The `tracestate` header (or headers, joined with commas as HTTP allows),
/// when it is well formed enough to pass on: at most 512 characters of
/// printable ASCII, at most 32 `key=value` members.
fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let value = value.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    if joined.is_empty() || joined.len() > 512 || !joined.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let members: Vec<&str> = joined.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
    let valid = members.len() <= 32
        && members
            .iter()
            .all(|m| m.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty()));
    valid.then_some(joined)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        // Upper case is not valid in a traceparent.
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)
}

fn hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = hex_byte(pair)?;
    }
    Some(out)
}

pub(crate) fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

pub(crate) fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// The example of the W3C recommendation parses; its parts come out.
    #[test]
    fn parses_a_valid_traceparent() {
        let p = parse_traceparent(VALID).unwrap();
        assert_eq!(Hex(p.trace_id).to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(Hex(p.span_id).to_string(), "b7ad6b7169203331");
        assert_eq!(p.flags, 1);
        let unsampled = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        assert_eq!(unsampled.flags, 0);
        // A later version with more fields is read for the parts it shares.
        assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-next").is_some());
        assert!(parse_traceparent(" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ").is_some());
    }

    /// Every malformed form is refused (and so starts a new trace).
    #[test]
    fn refuses_malformed_traceparents() {
        for bad in [
            "",
            "garbage",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319cc-b7ad6b716920333-01",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1z",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033é1-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    /// With a valid header, the invocation is a child: same trace and flags,
    /// the caller's span as parent, a new span of its own; tracestate passed
    /// on. Without one, or with a malformed one, a new sampled trace.
    #[test]
    fn child_of_the_request_or_a_new_trace() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(VALID));
        headers.insert(
            "tracestate",
            HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        );
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(ctx.trace_id_hex().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            ctx.parent_span_id.map(|p| Hex(p).to_string()).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert_ne!(ctx.span_id_hex().to_string(), "b7ad6b7169203331");
        assert_eq!(ctx.flags, 1);
        assert_eq!(
            ctx.tracestate.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let tp = ctx.traceparent();
        assert_eq!(parse_traceparent(&tp).unwrap().span_id, ctx.span_id, "{tp}");

        let mut bad = HeaderMap::new();
        bad.insert("traceparent", HeaderValue::from_static("00-zz-\"injected\"-01"));
        bad.insert("tracestate", HeaderValue::from_static("a=b"));
        for headers in [bad, HeaderMap::new()] {
            let ctx = TraceContext::from_headers(&headers);
            assert_eq!(ctx.parent_span_id, None);
            assert_eq!(ctx.tracestate, None, "no tracestate without its traceparent");
            assert_eq!(ctx.flags, 1);
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_eq!(ctx.trace_id_hex().to_string().len(), 32);
        }
        assert_ne!(TraceContext::new_trace().trace_id, TraceContext::new_trace().trace_id);
    }

    /// A tracestate that is too long, not printable or not key=value is
    /// dropped; the traceparent still counts.
    #[test]
    fn malformed_tracestate_is_dropped() {
        for bad in [
            "no-equals",
            "a=b,=c",
            &"k=v,".repeat(40),
            &format!("k={}", "v".repeat(600)),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", HeaderValue::from_static(VALID));
            headers.insert("tracestate", HeaderValue::from_str(bad).unwrap());
            let ctx = TraceContext::from_headers(&headers);
            assert!(ctx.parent_span_id.is_some());
            assert_eq!(ctx.tracestate, None, "{bad:?}");
        }
        let mut two = HeaderMap::new();
        two.insert("traceparent", HeaderValue::from_static(VALID));
        two.append("tracestate", HeaderValue::from_static("a=1"));
        two.append("tracestate", HeaderValue::from_static("b=2"));
        assert_eq!(TraceContext::from_headers(&two).tracestate.as_deref(), Some("a=1,b=2"));
    }
}
