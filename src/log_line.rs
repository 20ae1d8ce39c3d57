//! The log lines of an invocation, written without a `tracing` span.
//!
//! Every line an invocation logs carries its function, invocation id and W3C
//! trace ids (`invocation{function=… invocation_id=… trace_id=… span_id=…}`
//! in text, `span`/`spans` in JSON). A `tracing` span per invocation did
//! that, but `tracing-subscriber`'s fmt layer formats a span's fields when
//! the span is made, and with the line's own formatting (the timestamp
//! through `fmt`, the span looked up in the registry) that was about a
//! third of the handler's instructions per GET (callgrind), for one line.
//! So when the handler installs its own subscriber ([`crate::telemetry`]),
//! the invocation's fields travel in a task-local ([`scope`]) instead, and
//! [`Line`] writes the same line from them, in the same form, by hand. Any
//! other event (outside an invocation, or inside a span of some library's)
//! is written by `tracing-subscriber`'s own formatter, as before. A program
//! that serves [`crate::router`] under a subscriber of its own still gets
//! the `tracing` span ([`fast`] is false there).

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// What every line of an invocation carries.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub function: &'static str,
    pub invocation_id: String,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

tokio::task_local! {
    /// The invocation the running task's lines belong to.
    static INVOCATION: Arc<Invocation>;
}

/// Whether [`Line`] writes the lines (the handler's own subscriber is
/// installed), so invocations need no `tracing` span.
static FAST: AtomicBool = AtomicBool::new(false);

/// See [`FAST`].
pub(crate) fn fast() -> bool {
    FAST.load(Ordering::Relaxed)
}

/// Says that [`Line`] is the installed formatter.
pub(crate) fn installed() {
    FAST.store(true, Ordering::Relaxed);
}

/// Runs `fut` with its lines belonging to `invocation`.
pub(crate) fn scope<F: Future>(invocation: Arc<Invocation>, fut: F) -> impl Future<Output = F::Output> {
    INVOCATION.scope(invocation, fut)
}

/// Runs `f` with its lines belonging to `invocation`.
pub(crate) fn sync_scope<R>(invocation: Arc<Invocation>, f: impl FnOnce() -> R) -> R {
    INVOCATION.sync_scope(invocation, f)
}

/// The event formatter: an invocation's lines by hand, the rest by
/// `tracing-subscriber`'s formatter `F` (the text or the JSON one, which the
/// hand-written lines copy).
pub(crate) struct Line<F> {
    json: bool,
    other: F,
}

impl Line<format::Format<format::Full>> {
    /// Text lines.
    pub(crate) fn text() -> Self {
        Line {
            json: false,
            other: format::Format::default().with_ansi(false),
        }
    }
}

impl Line<format::Format<format::Json>> {
    /// JSON lines, the event's fields at the top level.
    pub(crate) fn json() -> Self {
        Line {
            json: true,
            other: format::Format::default().json().flatten_event(true),
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for Line<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let invocation = INVOCATION.try_with(Arc::clone).ok();
        let Some(invocation) = invocation.filter(|_| ctx.lookup_current().is_none()) else {
            return self.other.format_event(ctx, w, event);
        };
        let meta = event.metadata();
        let mut stamp = [0u8; TIMESTAMP_LEN];
        let stamp = timestamp(&mut stamp);
        if self.json {
            w.write_str("{\"timestamp\":\"")?;
            w.write_str(stamp)?;
            w.write_str("\",\"level\":\"")?;
            w.write_str(meta.level().as_str())?;
            w.write_char('"')?;
            let mut fields = JsonFields {
                w: &mut w,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            w.write_str(",\"target\":")?;
            json_string(&mut w, meta.target())?;
            let mut span = String::with_capacity(160);
            write_json_span(&mut span, &invocation)?;
            write!(w, ",\"span\":{span},\"spans\":[{span}]}}")?;
        } else {
            w.write_str(stamp)?;
            w.write_str(level(meta.level()))?;
            write!(w, "invocation{{function={:?} invocation_id=", invocation.function)?;
            sanitized(&mut w, &invocation.invocation_id)?;
            write!(
                w,
                " trace_id={} span_id={}}}: ",
                Hex(&invocation.trace_id),
                Hex(&invocation.span_id)
            )?;
            w.write_str(meta.target())?;
            w.write_str(": ")?;
            let mut fields = TextFields {
                w: &mut w,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        }
        writeln!(w)
    }
}

/// The level as the text format pads it, with the spaces around it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    }
}

/// `2026-12-04T19:44:41.736523Z`.
const TIMESTAMP_LEN: usize = 27;

/// Now, in UTC, as `tracing-subscriber` writes it (RFC 3339, microseconds),
/// written into `buf` digit by digit.
fn timestamp(buf: &mut [u8; TIMESTAMP_LEN]) -> &str {
    let now = time::OffsetDateTime::now_utc();
    write_timestamp(buf, now)
}

fn write_timestamp(buf: &mut [u8; TIMESTAMP_LEN], t: time::OffsetDateTime) -> &str {
    fn digits(buf: &mut [u8], mut v: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    buf.copy_from_slice(b"0000-00-00T00:00:00.000000Z");
    digits(&mut buf[0..4], t.year().clamp(0, 9999) as u32);
    digits(&mut buf[5..7], u32::from(u8::from(t.month())));
    digits(&mut buf[8..10], u32::from(t.day()));
    digits(&mut buf[11..13], u32::from(t.hour()));
    digits(&mut buf[14..16], u32::from(t.minute()));
    digits(&mut buf[17..19], u32::from(t.second()));
    digits(&mut buf[20..26], t.microsecond());
    std::str::from_utf8(buf).unwrap_or_default()
}

/// `s` with the characters a terminal acts on escaped, as
/// `tracing-subscriber` writes a field's `Display` value (the invocation id
/// comes from a request header).
fn sanitized(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    Sanitizing(w).write_str(s)
}

/// A writer that escapes what a terminal acts on, as `tracing-subscriber`'s
/// own does for an event's message and errors.
struct Sanitizing<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Sanitizing<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
            if !escape {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            if c < '\u{80}' {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

/// An event's fields in text, as `tracing-subscriber`'s `DefaultFields`
/// writes them with colours off: the message first as it is (escaped),
/// then `name=value` pairs with the value's `Debug` form, spaces between.
struct TextFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = String::new();
        let _ = write!(Sanitizing(&mut text), "{value}");
        if let Some(source) = value.source() {
            let _ = write!(text, " {}.sources=[", field.name());
            let mut next = Some(source);
            let mut first = true;
            while let Some(error) = next {
                if !first {
                    text.push_str(", ");
                }
                first = false;
                let _ = write!(Sanitizing(&mut text), "{error}");
                next = error.source();
            }
            text.push(']');
        }
        self.record_debug(field, &format_args!("{text}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(' ')?;
            }
            match name {
                "message" => write!(Sanitizing(self.w), "{value:?}"),
                name => write!(self.w, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
            }
        })();
    }
}

/// Lowercase hex of an id.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().take(16).enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        f.write_str(std::str::from_utf8(&out[..2 * self.0.len().min(16)]).unwrap_or_default())
    }
}

/// The invocation's fields as the JSON formatter writes a span: its fields
/// in name order, then its name.
fn write_json_span(out: &mut String, inv: &Invocation) -> fmt::Result {
    out.push_str("{\"function\":");
    json_string(out, inv.function)?;
    out.push_str(",\"invocation_id\":");
    json_string(out, &inv.invocation_id)?;
    write!(
        out,
        ",\"span_id\":\"{}\",\"trace_id\":\"{}\",\"name\":\"invocation\"}}",
        Hex(&inv.span_id),
        Hex(&inv.trace_id)
    )
}

/// `s` as a JSON string.
fn json_string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        if escaped.is_empty() {
            write!(w, "\\u{:04x}", c as u32)?;
        } else {
            w.write_str(escaped)?;
        }
        start = i + c.len_utf8();
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

/// An event's fields as `,"name":value` pairs, as the JSON formatter
/// flattens them: numbers and booleans as such, the rest as strings (their
/// `Debug` form, a `Display` value's text).
struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.w.write_char(',')?;
                json_string(self.w, field.name())?;
                self.w.write_char(':')?;
                value(self.w)
            })();
        }
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a non-finite number as `null`.
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value:?}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| json_string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.entry(field, |w| json_string(w, &text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timestamp as `tracing-subscriber` writes it.
    #[test]
    fn timestamps() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.000_007 UTC);
        assert_eq!(
            write_timestamp(&mut [0; TIMESTAMP_LEN], t),
            "2026-01-02T03:04:05.000007Z"
        );
    }

    /// JSON strings escaped as serde_json escapes them.
    #[test]
    fn json_strings() {
        for s in [
            "plain",
            "quote\" back\\slash",
            "line\nfeed\ttab\r",
            "bell\u{7}\u{8}\u{c}\u{1f}",
            "é ü 中",
        ] {
            let mut out = String::new();
            json_string(&mut out, s).unwrap();
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    /// An error with a source, as the handler's errors have.
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// An in-memory log, for a subscriber of a test's own.
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The lines an invocation logs (an info and a warning with every kind
    /// of field), written by `Line` from the task-local (`fast`) or by
    /// `tracing-subscriber` under the span it replaces.
    fn invocation_lines(json: bool, fast: bool, invocation_id: &str) -> Vec<String> {
        let out = Buffer::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let builder = tracing_subscriber::fmt().with_writer(writer).with_ansi(false);
        let dispatch: tracing::Dispatch = match (json, fast) {
            (false, true) => builder.event_format(Line::text()).into(),
            (false, false) => builder.into(),
            (true, true) => builder.json().flatten_event(true).event_format(Line::json()).into(),
            (true, false) => builder.json().flatten_event(true).into(),
        };
        let invocation = Arc::new(Invocation {
            function: "CacheItem",
            invocation_id: invocation_id.into(),
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
        });
        let log = || {
            tracing::info!(method = %"GET", status = 200u64, duration_ms = 0.25, "invocation done");
            tracing::warn!(key = "a\"b", n = -3i64, ok = true, error = ?Some("x"), "something \u{1b} odd");
            let err = Outer(std::io::Error::other("inner \u{1b} cause"));
            tracing::error!(
                error = &err as &(dyn std::error::Error + 'static),
                r#type = "t",
                "failed"
            );
        };
        tracing::dispatcher::with_default(&dispatch, || {
            if fast {
                sync_scope(invocation.clone(), log);
            } else {
                let span = tracing::info_span!(
                    "invocation",
                    function = invocation.function,
                    invocation_id = %invocation.invocation_id,
                    trace_id = %Hex(&invocation.trace_id),
                    span_id = %Hex(&invocation.span_id),
                );
                span.in_scope(log);
            }
        });
        // Everything but the time.
        out.lines()
            .into_iter()
            .map(|l| {
                if json {
                    let mut v: serde_json::Value = serde_json::from_str(&l).unwrap();
                    v.as_object_mut().unwrap().remove("timestamp").unwrap();
                    v.to_string()
                } else {
                    l[TIMESTAMP_LEN..].to_owned()
                }
            })
            .collect()
    }

    /// The lines written by hand are the ones `tracing-subscriber` wrote
    /// under the invocation's span, in text and in JSON.
    #[test]
    fn lines_as_tracing_subscriber_writes_them() {
        for json in [false, true] {
            let id = "0983d235-5b9e-4d8c-a1f2-7c3e9b4d6a10 \"q\"";
            let (fast, slow) = (invocation_lines(json, true, id), invocation_lines(json, false, id));
            assert_eq!(fast.len(), 3, "{fast:?}");
            assert_eq!(fast, slow, "json: {json}");
            assert!(json || fast[2].contains("sources"), "{}", fast[2]);
        }
    }

    /// An invocation id (a request header) that would drive a terminal is
    /// written escaped, in text; JSON escapes it anyway.
    #[test]
    fn a_terminal_escape_in_the_id_is_escaped() {
        let text = invocation_lines(false, true, "id\u{1b}[31m\u{9b}");
        assert!(text[0].contains("invocation_id=id\\x1b[31m\\u{9b} "), "{}", text[0]);
        let json = invocation_lines(true, true, "id\u{1b}[31m");
        assert!(json[0].contains(r#""invocation_id":"id\u001b[31m""#), "{}", json[0]);
    }
}
