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
//!
//! The line that closes each invocation ([`invocation_done`]) skips
//! `tracing` altogether when it can: it is written straight to the writer
//! the subscriber would have written it to, the same bytes, without the
//! event's dispatch and the field visitors (about 3,000 instructions of the
//! 5,300 the line cost, callgrind).

use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
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
    static INVOCATION: Invocation;
}

/// Whether [`Line`] writes the lines (the handler's own subscriber is
/// installed), so invocations need no `tracing` span.
static FAST: AtomicBool = AtomicBool::new(false);

/// See [`FAST`].
pub(crate) fn fast() -> bool {
    FAST.load(Ordering::Relaxed)
}

/// Where the installed subscriber writes `INFO` lines, and in which form:
/// where [`invocation_done`] writes its line.
struct Direct {
    json: bool,
    out: crate::log_writer::Batched,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Says that [`Line`] is the installed formatter, writing `INFO` lines to
/// `out`, in JSON or in text.
pub(crate) fn installed(json: bool, out: crate::log_writer::Batched) {
    let _ = DIRECT.set(Direct { json, out });
    FAST.store(true, Ordering::Relaxed);
}

/// The target of the invocation's closing line, the router's module (where
/// the line was logged from before it was written here).
const DONE_TARGET: &str = "azure_redis_handler::router";

/// Logs the line that closes an invocation: `invocation done` with its
/// method, status and duration. Inside an invocation's [`scope`] with the
/// handler's own subscriber installed, no other span entered and the line
/// enabled, the line is written straight to the subscriber's writer, as
/// [`Line`] would write it; otherwise it is an event like any other.
pub(crate) fn invocation_done(method: &axum::http::Method, status: u16, duration_ms: f64) {
    let written = DIRECT.get().is_some_and(|direct| {
        tracing::enabled!(target: DONE_TARGET, Level::INFO)
            && tracing::Span::current().is_none()
            && INVOCATION
                .try_with(|invocation| {
                    LINE.with_borrow_mut(|line| {
                        line.clear();
                        let done = Done {
                            method: method.as_str(),
                            status,
                            duration_ms,
                        };
                        // Writing into a `String` cannot fail.
                        let _ = write_done(line, direct.json, invocation, &done);
                        // As the subscriber's writer would: a failed write
                        // of a log line is not the invocation's failure.
                        let _ = (&direct.out).write_all(line.as_bytes());
                    })
                })
                .is_ok()
    });
    if !written {
        tracing::info!(target: DONE_TARGET, %method, status, duration_ms, "invocation done");
    }
}

thread_local! {
    /// The line [`invocation_done`] writes, reused.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

/// The fields of the closing line.
struct Done<'a> {
    method: &'a str,
    status: u16,
    duration_ms: f64,
}

/// The closing line, as [`Line`] writes the event `info!(%method, status,
/// duration_ms, "invocation done")` of [`DONE_TARGET`].
fn write_done(w: &mut String, json: bool, invocation: &Invocation, done: &Done<'_>) -> fmt::Result {
    if json {
        w.push_str("{\"timestamp\":\"");
        timestamp(w)?;
        w.push_str("\",\"level\":\"INFO\",\"message\":\"invocation done\",\"method\":");
        json_string(w, done.method)?;
        w.push_str(",\"status\":");
        decimal(w, u64::from(done.status))?;
        w.push_str(",\"duration_ms\":");
        if done.duration_ms.is_finite() {
            millis(w, done.duration_ms)?;
        } else {
            w.push_str("null");
        }
        w.push_str(",\"target\":");
        json_string(w, DONE_TARGET)?;
        let mut span = String::with_capacity(160);
        write_json_span(&mut span, invocation)?;
        write!(w, ",\"span\":{span},\"spans\":[{span}]}}")?;
    } else {
        timestamp(w)?;
        w.push_str(level(&Level::INFO));
        write_text_span(w, invocation)?;
        w.push_str(DONE_TARGET);
        w.push_str(": invocation done method=");
        w.push_str(done.method);
        w.push_str(" status=");
        decimal(w, u64::from(done.status))?;
        w.push_str(" duration_ms=");
        millis(w, done.duration_ms)?;
    }
    w.push('\n');
    Ok(())
}

/// Runs `fut` with its lines belonging to `invocation`.
/// ([`tokio::task::futures::TaskLocalFuture::take_value`] gives it back.)
pub(crate) fn scope<F: Future>(invocation: Invocation, fut: F) -> tokio::task::futures::TaskLocalFuture<Invocation, F> {
    INVOCATION.scope(invocation, fut)
}

/// Runs `f` with its lines belonging to `invocation`.
pub(crate) fn sync_scope<R>(invocation: Invocation, f: impl FnOnce() -> R) -> R {
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
        if ctx.lookup_current().is_none() {
            if let Ok(written) = INVOCATION.try_with(|invocation| self.write_line(w.by_ref(), event, invocation)) {
                return written;
            }
        }
        self.other.format_event(ctx, w, event)
    }
}

impl<F> Line<F> {
    /// An invocation's line, by hand.
    fn write_line(&self, mut w: Writer<'_>, event: &Event<'_>, invocation: &Invocation) -> fmt::Result {
        let meta = event.metadata();
        if self.json {
            w.write_str("{\"timestamp\":\"")?;
            timestamp(&mut w)?;
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
            write_json_span(&mut span, invocation)?;
            write!(w, ",\"span\":{span},\"spans\":[{span}]}}")?;
        } else {
            timestamp(&mut w)?;
            w.write_str(level(meta.level()))?;
            write_text_span(&mut w, invocation)?;
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

/// `invocation{function=… invocation_id=… trace_id=… span_id=…}: `, as
/// the text formatter writes the span.
fn write_text_span(w: &mut impl fmt::Write, invocation: &Invocation) -> fmt::Result {
    w.write_str("invocation{function=")?;
    debug_str(w, invocation.function)?;
    w.write_str(" invocation_id=")?;
    sanitized(w, &invocation.invocation_id)?;
    w.write_str(" trace_id=")?;
    hex(w, &invocation.trace_id)?;
    w.write_str(" span_id=")?;
    hex(w, &invocation.span_id)?;
    w.write_str("}: ")
}

/// `s` as its `Debug` form writes it (in quotes, escaped), without `fmt`'s
/// machinery when there is nothing to escape.
fn debug_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
    {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

/// `v` in decimal.
fn decimal(w: &mut impl fmt::Write, v: u64) -> fmt::Result {
    w.write_str(itoa::Buffer::new().format(v))
}

/// A duration in milliseconds as its `Debug` form writes it. A whole
/// number of microseconds (which is what the handler logs) is written by
/// hand: its shortest form is its decimal, with the zeros at the end left
/// off but one; anything else through `fmt`.
fn millis(w: &mut impl fmt::Write, ms: f64) -> fmt::Result {
    let micros = (ms * 1000.0).round();
    if !ms.is_sign_positive() || !(0.0..1e12).contains(&micros) || micros / 1000.0 != ms {
        return write!(w, "{ms:?}");
    }
    let micros = micros as u64;
    decimal(w, micros / 1000)?;
    w.write_char('.')?;
    let fraction = micros % 1000;
    let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
    let used = if fraction.is_multiple_of(100) {
        1
    } else if fraction.is_multiple_of(10) {
        2
    } else {
        3
    };
    for d in &digits[..used] {
        w.write_char(char::from(b'0' + *d as u8))?;
    }
    Ok(())
}

/// Lowercase hex of an id.
fn hex(w: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().take(16).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    w.write_str(std::str::from_utf8(&out[..2 * bytes.len().min(16)]).unwrap_or_default())
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

/// Now, in UTC, as `tracing-subscriber` writes it (RFC 3339, microseconds).
fn timestamp(w: &mut impl fmt::Write) -> fmt::Result {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    write_timestamp_at(w, since_epoch)
}

/// The part of a timestamp up to its fraction of a second: `2026-12-04T19:44:41.`.
const SECOND_LEN: usize = 20;

thread_local! {
    /// The second of the last timestamp this thread wrote, and its
    /// [`SECOND_LEN`] characters: lines come many to a second, and the
    /// calendar arithmetic was most of a timestamp's cost.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// The timestamp `since_epoch` after the Unix epoch: the second's part
/// from [`SECOND`] when it is that second's, then the microseconds.
fn write_timestamp_at(w: &mut impl fmt::Write, since_epoch: std::time::Duration) -> fmt::Result {
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, second)| {
        if *cached != secs {
            let t = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut whole = [0; TIMESTAMP_LEN];
            second.clear();
            second.push_str(&write_timestamp(&mut whole, t)[..SECOND_LEN]);
            *cached = secs;
        }
        w.write_str(second)
    })?;
    // Six digits with their leading zeros: those of one million more.
    let mut micros = itoa::Buffer::new();
    w.write_str(&micros.format(1_000_000 + since_epoch.subsec_micros())[1..])?;
    w.write_char('Z')
}

/// `v`'s last `buf.len()` decimal digits, with leading zeros.
fn digits(buf: &mut [u8], mut v: u32) {
    for b in buf.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn write_timestamp(buf: &mut [u8; TIMESTAMP_LEN], t: time::OffsetDateTime) -> &str {
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

/// Lowercase hex of an id, as a `Display` value (the tests' spans).
#[cfg(test)]
struct Hex<'a>(&'a [u8]);

#[cfg(test)]
impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, self.0)
    }
}

/// The invocation's fields as the JSON formatter writes a span: its fields
/// in name order, then its name.
fn write_json_span(out: &mut String, inv: &Invocation) -> fmt::Result {
    out.push_str("{\"function\":");
    json_string(out, inv.function)?;
    out.push_str(",\"invocation_id\":");
    json_string(out, &inv.invocation_id)?;
    out.push_str(",\"span_id\":\"");
    hex(out, &inv.span_id)?;
    out.push_str("\",\"trace_id\":\"");
    hex(out, &inv.trace_id)?;
    out.push_str("\",\"name\":\"invocation\"}");
    Ok(())
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
    use std::sync::Arc;

    /// The timestamp as `tracing-subscriber` writes it.
    #[test]
    fn timestamps() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.000_007 UTC);
        assert_eq!(
            write_timestamp(&mut [0; TIMESTAMP_LEN], t),
            "2026-01-02T03:04:05.000007Z"
        );
    }

    /// The timestamps of instants in the same second and across seconds,
    /// minutes, days and years, each as it is written on its own.
    #[test]
    fn timestamps_of_one_second_share_its_part() {
        use std::time::Duration;
        let start = time::macros::datetime!(2026-12-31 23:59:58.999_998 UTC);
        let start = Duration::from_micros((start.unix_timestamp_nanos() / 1000) as u64);
        for step in [0, 1, 2, 3, 1_000_000, 1_000_001, 999_999, 86_400_000_000, 7] {
            let at = start + Duration::from_micros(step);
            let t = time::OffsetDateTime::UNIX_EPOCH + at;
            let mut want = [0; TIMESTAMP_LEN];
            let want = write_timestamp(&mut want, t).to_owned();
            let mut written = String::new();
            write_timestamp_at(&mut written, at).unwrap();
            assert_eq!(written, want, "{step}");
        }
    }

    /// Durations and numbers written by hand as `Debug` writes them.
    #[test]
    fn numbers_as_debug_writes_them() {
        let mut ms: Vec<f64> = vec![
            0.0,
            0.001,
            0.01,
            0.1,
            0.25,
            1.0,
            1.5,
            2.05,
            10.0,
            999.999,
            12345.678,
            1e9 + 0.001,
        ];
        // Every whole number of microseconds up to 1 s, and a spread above.
        ms.extend((0..1_000_000u64).map(|us| (us as f64 * 1000.0).round() / 1_000_000.0));
        ms.extend((0..100_000u64).map(|i| ((i * 7_919_993) as f64).round() / 1000.0));
        ms.extend([
            1e-7,
            0.0005,
            1e13,
            1e16,
            f64::MAX,
            -1.5,
            -0.0,
            0.1 + 0.2,
            std::f64::consts::PI,
        ]);
        let mut out = String::new();
        for v in ms {
            out.clear();
            millis(&mut out, v).unwrap();
            assert_eq!(out, format!("{v:?}"));
        }
        for v in [0u64, 7, 10, 200, 65535, u64::MAX] {
            out.clear();
            decimal(&mut out, v).unwrap();
            assert_eq!(out, v.to_string());
        }
        for s in ["CacheItem", "a b", "q\"uote", "back\\slash", "tab\t", "é", ""] {
            out.clear();
            debug_str(&mut out, s).unwrap();
            assert_eq!(out, format!("{s:?}"));
        }
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

    /// The `tracing` span an invocation had before its lines were written
    /// by hand (what `router` still makes under a subscriber of its own).
    fn the_span(invocation: &Invocation) -> tracing::Span {
        tracing::info_span!(
            "invocation",
            function = invocation.function,
            invocation_id = %invocation.invocation_id,
            trace_id = %Hex(&invocation.trace_id),
            span_id = %Hex(&invocation.span_id),
        )
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
        let invocation = || Invocation {
            function: "CacheItem",
            invocation_id: invocation_id.into(),
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
        };
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
                sync_scope(invocation(), log);
            } else {
                the_span(&invocation()).in_scope(log);
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

    /// The closing line written straight to the writer is the line
    /// `tracing-subscriber` writes for the event it stands for, under the
    /// invocation's span, byte for byte but the time, in text and in JSON.
    #[test]
    fn the_closing_line_is_the_events_line() {
        let cases = [
            ("GET", 200u16, 0.25, "0983d235-5b9e-4d8c-a1f2-7c3e9b4d6a10"),
            ("PUT", 413, 0.0, "id \"quoted\" \\ and é"),
            ("DELETE", 503, 12345.678, ""),
            ("PATCH", 405, 0.001, "x"),
            ("GET", 200, 1.5, "y"),
            ("GET", 200, f64::NAN, "z"),
        ];
        for json in [false, true] {
            for (method, status, duration_ms, id) in cases {
                let invocation = Invocation {
                    function: "CacheItem",
                    invocation_id: id.into(),
                    trace_id: [0xab; 16],
                    span_id: [0x01; 8],
                };
                let out = Buffer::default();
                let writer = {
                    let out = out.clone();
                    move || out.clone()
                };
                let builder = tracing_subscriber::fmt().with_writer(writer).with_ansi(false);
                let dispatch: tracing::Dispatch = if json {
                    builder.json().flatten_event(true).into()
                } else {
                    builder.into()
                };
                let method: axum::http::Method = method.parse().unwrap();
                tracing::dispatcher::with_default(&dispatch, || {
                    the_span(&invocation).in_scope(|| {
                        tracing::info!(target: DONE_TARGET, %method, status, duration_ms, "invocation done");
                    });
                });
                let mut direct = String::new();
                let done = Done {
                    method: method.as_str(),
                    status,
                    duration_ms,
                };
                write_done(&mut direct, json, &invocation, &done).unwrap();
                // Everything but the time, which both write in the same place.
                let untimed = |line: &str| {
                    let at = if json { "{\"timestamp\":\"".len() } else { 0 };
                    format!("{}{}", &line[..at], &line[at + TIMESTAMP_LEN..])
                };
                let events = out.lines();
                assert_eq!(events.len(), 1, "{events:?}");
                assert_eq!(
                    untimed(direct.strip_suffix('\n').unwrap()),
                    untimed(&events[0]),
                    "json: {json}"
                );
            }
        }
        // Where `tracing-subscriber` writes a span's field as it is, a
        // terminal escape in the id (a request header) is escaped, as `Line`
        // escapes it.
        let invocation = Invocation {
            function: "CacheItem",
            invocation_id: "id\u{1b}[31m".into(),
            trace_id: [0; 16],
            span_id: [0; 8],
        };
        let done = Done {
            method: "GET",
            status: 200,
            duration_ms: 1.0,
        };
        let mut text = String::new();
        write_done(&mut text, false, &invocation, &done).unwrap();
        assert!(text.contains("invocation_id=id\\x1b[31m "), "{text}");
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
