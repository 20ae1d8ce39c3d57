//! Spans: what one is made of, the span an invocation's code runs under,
//! and the guard that records one when it ends.
//!
//! The current span travels with the task (a tokio task-local set around
//! an invocation, and carried into the tasks it spawns by [`spawn`]), so
//! the cache's code opens its spans as children without a context
//! argument on every function. With export off, a [`Span`] is an empty
//! `Option` and costs a branch.

use super::exporter;
use crate::secret::redact;
use std::borrow::Cow;
use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The identity of a span, as children and `traceparent` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the trace is recorded; an unsampled parent has unsampled
    /// children.
    pub sampled: bool,
}

tokio::task_local! {
    /// The span the running task's work belongs to, if any.
    static CURRENT: Option<SpanContext>;
}

/// The span the running task is in, if any.
pub(crate) fn current() -> Option<SpanContext> {
    CURRENT.try_with(|c| *c).ok().flatten()
}

/// Runs `fut` with `ctx` as its current span.
pub(crate) fn within<F: Future>(ctx: Option<SpanContext>, fut: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(ctx, fut)
}

/// `tokio::spawn`, the task in the current span (work an invocation waits
/// for, such as a connection attempt, shows in its trace).
pub(crate) fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(within(current(), fut))
}

/// Runs `f` outside any span: what it spawns with [`spawn`] starts a trace
/// of its own (a token refresh that runs beside an invocation, which does
/// not wait for it).
pub(crate) fn detached<R>(f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(None, f)
}

/// What a span is, in OpenTelemetry's terms (the protobuf enum's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute's value. Strings an invocation records (an invocation id,
/// a node's address) are kept without a heap allocation of their own where
/// they can be: short ones inline, GUIDs as their 16 bytes. A span is made
/// on an invocation's thread and freed on the exporter's, so each of its
/// allocations is freed on another thread than the one that made it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(Cow<'static, str>),
    Inline(Inline),
    /// A GUID (the host's invocation ids), as its 16 bytes.
    Guid(Guid),
    Int(i64),
    Bool(bool),
}

/// A GUID in its canonical text form (`8-4-4-4-12` hex digits), kept as
/// 16 bytes and the case it was written in, and written back the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Guid {
    bytes: [u8; 16],
    upper: bool,
}

impl Guid {
    /// Dashes after these many bytes.
    const GROUPS: [usize; 5] = [4, 2, 2, 2, 6];

    fn parse(s: &str) -> Option<Self> {
        let upper = s.bytes().any(|b| b.is_ascii_uppercase());
        let lower = s.bytes().any(|b| b.is_ascii_lowercase());
        if s.len() != 36 || (upper && lower) {
            return None;
        }
        let mut bytes = [0u8; 16];
        let mut i = 0;
        for (n, group) in s.split('-').enumerate() {
            if Self::GROUPS.get(n).is_none_or(|len| group.len() != len * 2) {
                return None;
            }
            for pair in group.as_bytes().chunks(2) {
                let hex = std::str::from_utf8(pair).ok()?;
                bytes[i] = u8::from_str_radix(hex, 16).ok()?;
                i += 1;
            }
        }
        (i == 16).then_some(Self { bytes, upper })
    }

    /// Its text, written into `out`.
    fn write<'a>(&self, out: &'a mut [u8; 36]) -> &'a str {
        let digits: &[u8; 16] = if self.upper {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        let (mut at, mut byte) = (0, 0);
        for (n, group) in Self::GROUPS.iter().enumerate() {
            if n > 0 {
                out[at] = b'-';
                at += 1;
            }
            for _ in 0..*group {
                out[at] = digits[usize::from(self.bytes[byte] >> 4)];
                out[at + 1] = digits[usize::from(self.bytes[byte] & 0xf)];
                (at, byte) = (at + 2, byte + 1);
            }
        }
        std::str::from_utf8(out).unwrap_or_default()
    }
}

/// A string of up to [`Inline::CAPACITY`] bytes, stored in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inline {
    len: u8,
    bytes: [u8; Inline::CAPACITY],
}

impl Inline {
    /// Enough for an IPv4 address or a short host name; the span stays
    /// small (it is copied into the queue and out).
    pub(crate) const CAPACITY: usize = 22;

    fn new(s: &str) -> Option<Self> {
        let mut bytes = [0; Self::CAPACITY];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Self {
            len: s.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Value {
    /// `s`, copied: in place when it is short or a GUID, else on the heap.
    pub(crate) fn text(s: &str) -> Self {
        if let Some(inline) = Inline::new(s) {
            return Value::Inline(inline);
        }
        Guid::parse(s).map_or_else(|| Value::Str(Cow::Owned(s.to_owned())), Value::Guid)
    }

    /// The string, for a string value (`scratch` holds a GUID's text).
    pub(crate) fn as_str<'a>(&'a self, scratch: &'a mut [u8; 36]) -> Option<&'a str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Inline(s) => Some(s.as_str()),
            Value::Guid(g) => Some(g.write(scratch)),
            Value::Int(_) | Value::Bool(_) => None,
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for Value {
    fn from(s: Cow<'static, str>) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One attribute.
pub(crate) type KeyValue = (&'static str, Value);

/// A span's own attributes, in place (no allocation): beside their fixed
/// set, the handler's spans have at most five, and seven when the fixed set
/// could not be kept (`super::fixed`'s bound); more are dropped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attributes {
    len: usize,
    items: [Option<KeyValue>; Attributes::CAPACITY],
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            len: 0,
            items: [const { None }; Attributes::CAPACITY],
        }
    }
}

impl Attributes {
    const CAPACITY: usize = 7;

    fn push(&mut self, kv: KeyValue) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(kv);
            self.len += 1;
        }
    }

    /// The attributes, in the order they were set.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &KeyValue> {
        self.items[..self.len].iter().flatten()
    }
}

/// An event on a span (an exception, a notification).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub time_unix_nano: u64,
    pub name: &'static str,
    pub attributes: Vec<KeyValue>,
}

/// A finished span, as it is exported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Attributes shared with every span of its kind on the same target,
    /// encoded once ([`super::fixed`]).
    pub fixed: Option<&'static super::fixed::Fixed>,
    /// The span's own attributes.
    pub attributes: Attributes,
    pub events: Vec<Event>,
    /// `Some(message)` when the span failed (message redacted).
    pub error: Option<String>,
    /// The monotonic clock at the start (not exported): the end is the
    /// start's wall clock plus the monotonic duration, so a clock step in
    /// between does not give a negative span.
    pub started: Instant,
}

/// A span being recorded; it is recorded when dropped.
/// Empty when export is off or the trace is not sampled.
#[derive(Debug)]
#[must_use = "a span is recorded when it is dropped"]
pub(crate) struct Span(Option<Box<SpanData>>);

impl Span {
    /// A span that records nothing.
    pub(crate) const fn none() -> Self {
        Span(None)
    }

    /// A child of the current span, or the root of a new trace when there
    /// is none (as the sampler decides).
    pub(crate) fn start(name: impl Into<Cow<'static, str>>, kind: Kind) -> Self {
        if !exporter::tracing_on() {
            return Span(None);
        }
        let (trace_id, parent) = match current() {
            Some(p) if !p.sampled => return Span(None),
            Some(p) => (p.trace_id, Some(p.span_id)),
            None => {
                let trace_id = super::new_trace_id();
                if !super::sample_root(&trace_id) {
                    return Span(None);
                }
                (trace_id, None)
            }
        };
        Self::with_ids(name, kind, trace_id, super::new_span_id(), parent, None)
    }

    /// A span with the given identity (the invocation's server span, whose
    /// ids the log lines already carry).
    pub(crate) fn with_ids(
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent_span_id: Option<[u8; 8]>,
        trace_state: Option<String>,
    ) -> Self {
        let data = SpanData {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            name: name.into(),
            kind,
            start_unix_nano: unix_nanos(),
            end_unix_nano: 0,
            fixed: None,
            attributes: Attributes::default(),
            events: Vec::new(),
            error: None,
            started: Instant::now(),
        };
        Span(Some(Box::new(data)))
    }

    /// Whether anything is recorded (to skip work only a span needs).
    pub(crate) fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// This span's identity, for its children.
    pub(crate) fn context(&self) -> Option<SpanContext> {
        self.0.as_ref().map(|b| SpanContext {
            trace_id: b.trace_id,
            span_id: b.span_id,
            sampled: true,
        })
    }

    /// Runs `fut` as this span's child work (the span stays open).
    pub(crate) fn scope<'a, F: Future + 'a>(&self, fut: F) -> impl Future<Output = F::Output> + 'a {
        let ctx = self.context().or_else(current);
        within(ctx, fut)
    }

    /// Sets the attributes it shares with every span of its kind on the
    /// same target (`None`: set them one by one instead).
    pub(crate) fn set_fixed(&mut self, fixed: Option<&'static super::fixed::Fixed>) -> bool {
        match (&mut self.0, fixed) {
            (Some(b), Some(f)) => {
                b.fixed = Some(f);
                true
            }
            _ => false,
        }
    }

    /// Sets an attribute.
    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(b) = &mut self.0 {
            b.attributes.push((key, value.into()));
        }
    }

    /// Marks the span failed: status error with `message` (redacted), and
    /// an `exception` event of `kind` (the error's class, e.g. `timeout`).
    pub(crate) fn fail(&mut self, kind: &'static str, message: &str) {
        if let Some(b) = &mut self.0 {
            let message = redact(message);
            b.events.push(Event {
                time_unix_nano: unix_nanos(),
                name: "exception",
                attributes: vec![
                    ("exception.type", kind.into()),
                    ("exception.message", message.clone().into()),
                ],
            });
            b.attributes.push(("error.type", kind.into()));
            b.error = Some(message);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut b) = self.0.take() {
            b.end_unix_nano = b.start_unix_nano + b.started.elapsed().as_nanos() as u64;
            exporter::record(b);
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The current span is set by `within`, carried by `spawn`, and
    /// cleared by `detached`.
    #[tokio::test]
    async fn context_travels_with_the_task() {
        let ctx = SpanContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            sampled: true,
        };
        assert_eq!(current(), None);
        within(Some(ctx), async move {
            assert_eq!(current(), Some(ctx));
            let inherited = spawn(async { current() }).await.unwrap();
            assert_eq!(inherited, Some(ctx));
            let outside = detached(|| spawn(async { current() }));
            assert_eq!(outside.await.unwrap(), None);
        })
        .await;
    }

    /// Strings are kept in place when short, as 16 bytes when a GUID (in
    /// either case, written back as they came), else on the heap.
    #[test]
    fn text_values() {
        let mut scratch = [0; 36];
        for s in [
            "10.0.0.4",
            "0983d235-5b9e-4d8c-a1f2-7c3e9b4d6a10",
            "0983D235-5B9E-4D8C-A1F2-7C3E9B4D6A10",
            "0983d235-5B9E-4d8c-a1f2-7c3e9b4d6a10",
            "not-a-guid-but-long-enough-to-be-on-the-heap",
        ] {
            let v = Value::text(s);
            assert_eq!(v.as_str(&mut scratch), Some(s));
        }
        assert!(matches!(
            Value::text("0983d235-5b9e-4d8c-a1f2-7c3e9b4d6a10"),
            Value::Guid(_)
        ));
        assert!(matches!(
            Value::text("0983d235-5B9E-4d8c-a1f2-7c3e9b4d6a10"),
            Value::Str(_)
        ));
        assert!(std::mem::size_of::<Value>() <= 32, "{}", std::mem::size_of::<Value>());
    }

    /// With export off, spans are empty and record nothing.
    #[test]
    fn off_means_empty() {
        let mut span = Span::start("GET", Kind::Client);
        span.set("db.system.name", "redis");
        assert!(!span.is_recording());
        assert_eq!(span.context(), None);
    }
}
