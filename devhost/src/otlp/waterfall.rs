//! One invocation's spans as a tree on a time line, for a console: where
//! its time went (a token fetch, a connect, a MOVED retry, a re-AUTH) at a
//! glance. Pure: spans in, text out.

use super::model::{AttrValue, ReceivedSpan};
use std::collections::{HashMap, HashSet};

/// Width of the time bar, in characters.
const BAR: usize = 30;
/// Labels longer than this are cut, so the duration column stays on screen.
const MAX_LABEL: usize = 64;

/// One line before layout.
struct Row<'a> {
    label: String,
    span: &'a ReceivedSpan,
}

/// The span `root_span_id` and its descendants among `spans`, one line
/// each: tree glyphs, the name, its detail (`server.address:server.port`,
/// `status NNN`, `ERROR <message>`), its duration in ms in a right-aligned
/// column and a bar placing it in the drawing's time range. Children come
/// in start-time order. Spans of the trace whose parent never arrived hang
/// under the root, marked `(parent not received)` (other invocations'
/// spans excepted, [`ReceivedSpan::is_invocation`]). The first line ends
/// with the short trace id, and `(background)` when the root is not an
/// invocation. Every line ends with `\n`.
pub fn waterfall(spans: &[ReceivedSpan], root_span_id: &str) -> String {
    let Some(root) = spans.iter().find(|s| s.span_id == root_span_id) else {
        return format!("(span {root_span_id} not received)\n");
    };
    let mut seen = HashSet::new();
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id && seen.insert(s.span_id.as_str()))
        .collect();
    let rows = rows(&trace, root);
    let t0 = rows.iter().map(|r| r.span.start_unix_nano).min().unwrap_or(0);
    let t1 = rows.iter().map(|r| r.span.end_unix_nano).max().unwrap_or(0).max(t0);
    let width = rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let pad = width - row.label.chars().count();
        let ms = row.span.duration().as_secs_f64() * 1000.0;
        let bar = bar(row.span.start_unix_nano, row.span.end_unix_nano, t0, t1);
        out.push_str(&format!("{}{} {ms:>9.2} ms |{bar}|", row.label, " ".repeat(pad)));
        if i == 0 {
            out.push_str(&format!(
                "  trace {}",
                row.span.trace_id.get(..8).unwrap_or(&row.span.trace_id)
            ));
            if !root.is_invocation() {
                out.push_str(" (background)");
            }
        }
        out.push('\n');
    }
    out
}

/// The tree in display order, labels with their glyphs.
fn rows<'a>(trace: &[&'a ReceivedSpan], root: &'a ReceivedSpan) -> Vec<Row<'a>> {
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let by_id: HashMap<&str, &ReceivedSpan> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    // The root's received ancestors are not orphans, only above it.
    let mut above = HashSet::new();
    let mut up = root.parent_span_id.as_str();
    while let Some(p) = by_id.get(up).filter(|p| above.insert(p.span_id.as_str())) {
        up = p.parent_span_id.as_str();
    }
    let mut children: HashMap<&str, Vec<(&ReceivedSpan, bool)>> = HashMap::new();
    for s in trace
        .iter()
        .filter(|s| s.span_id != root.span_id && !above.contains(s.span_id.as_str()))
    {
        if ids.contains(s.parent_span_id.as_str()) {
            children.entry(s.parent_span_id.as_str()).or_default().push((s, false));
        } else if !s.is_invocation() {
            children.entry(root.span_id.as_str()).or_default().push((s, true));
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| (a.0.start_unix_nano, &a.0.name).cmp(&(b.0.start_unix_nano, &b.0.name)));
    }
    let mut out = vec![Row {
        label: label("", root, false),
        span: root,
    }];
    let mut visited = HashSet::from([root.span_id.as_str()]);
    descend(&children, root, "", &mut visited, &mut out);
    out
}

fn descend<'a>(
    children: &HashMap<&str, Vec<(&'a ReceivedSpan, bool)>>,
    parent: &ReceivedSpan,
    indent: &str,
    visited: &mut HashSet<&'a str>,
    out: &mut Vec<Row<'a>>,
) {
    let Some(list) = children.get(parent.span_id.as_str()) else {
        return;
    };
    for (i, (span, orphan)) in list.iter().enumerate() {
        // A span listed twice (an id cycle) is drawn once.
        if !visited.insert(span.span_id.as_str()) {
            continue;
        }
        let last = i + 1 == list.len();
        let glyph = if last { "└─ " } else { "├─ " };
        out.push(Row {
            label: label(&format!("{indent}{glyph}"), span, *orphan),
            span,
        });
        let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
        descend(children, span, &deeper, visited, out);
    }
}

/// `prefix` + name + detail, cut to [`MAX_LABEL`] characters.
fn label(prefix: &str, s: &ReceivedSpan, orphan: bool) -> String {
    let mut parts = vec![format!("{prefix}{}", s.name)];
    if let Some(host) = s.attr_str("server.address") {
        match s.attributes.get("server.port") {
            Some(AttrValue::Int(p)) => parts.push(format!("{host}:{p}")),
            Some(AttrValue::Str(p)) => parts.push(format!("{host}:{p}")),
            _ => parts.push(host.to_owned()),
        }
    }
    if let Some(code) = s.attr_i64("http.response.status_code") {
        parts.push(format!("status {code}"));
    }
    if s.is_error() {
        let why = match (s.status_message.as_str(), s.attr_str("error.type")) {
            ("", Some(t)) => t,
            (m, _) => m,
        };
        parts.push(format!("ERROR {why}").trim_end().to_owned());
    }
    if orphan {
        parts.push("(parent not received)".into());
    }
    let text = parts.join("  ");
    match text.chars().count() > MAX_LABEL {
        true => text.chars().take(MAX_LABEL - 1).chain(['…']).collect(),
        false => text,
    }
}

/// [`BAR`] characters, `=` where `[start, end]` falls in `[t0, t1]`; at
/// least one, so an instant still shows where it happened.
fn bar(start: u64, end: u64, t0: u64, t1: u64) -> String {
    let total = t1.saturating_sub(t0).max(1) as f64;
    let at = |t: u64| t.clamp(t0, t1).saturating_sub(t0) as f64 / total * BAR as f64;
    let a = (at(start).floor() as usize).min(BAR - 1);
    let b = (at(end).ceil() as usize).clamp(a + 1, BAR);
    format!("{}{}{}", " ".repeat(a), "=".repeat(b - a), " ".repeat(BAR - b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::model::{Attrs, Protocol, SpanKind, SpanStatus};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    /// 2023-11-14T22:13:20Z, in ns.
    const T0: u64 = 1_700_000_000_000_000_000;

    /// A span of [`TRACE`] from `start_ms` to `end_ms` after [`T0`].
    fn span(id: &str, parent: &str, name: &str, kind: SpanKind, start_ms: f64, end_ms: f64) -> ReceivedSpan {
        ReceivedSpan {
            trace_id: TRACE.into(),
            span_id: format!("{id:0>16}"),
            parent_span_id: if parent.is_empty() {
                String::new()
            } else {
                format!("{parent:0>16}")
            },
            name: name.into(),
            kind,
            start_unix_nano: T0 + (start_ms * 1e6) as u64,
            end_unix_nano: T0 + (end_ms * 1e6) as u64,
            attributes: Attrs::new(),
            status_code: SpanStatus::Unset,
            status_message: String::new(),
            events: Vec::new(),
            resource: Default::default(),
            scope: "azure-redis-handler".into(),
            protocol: Protocol::Protobuf,
        }
    }

    fn with(mut s: ReceivedSpan, key: &str, v: AttrValue) -> ReceivedSpan {
        s.attributes.insert(key.into(), v);
        s
    }

    fn redis(s: ReceivedSpan, port: i64) -> ReceivedSpan {
        let s = with(s, "server.address", AttrValue::Str("127.0.0.1".into()));
        with(s, "server.port", AttrValue::Int(port))
    }

    /// An invocation that fetched a token, connected, was redirected by
    /// MOVED and retried: the tree in start order (given shuffled), details,
    /// the error's message, durations in one column, bars in the root's
    /// range, and the short trace id on the first line.
    #[test]
    fn an_invocation_with_a_redirect() {
        let server = with(
            span("a1", "ff", "GET /api/cache/{key}", SpanKind::Server, 0.0, 10.0),
            "http.response.status_code",
            AttrValue::Int(200),
        );
        let mut moved = redis(span("a4", "a1", "GET", SpanKind::Client, 6.0, 7.0), 7000);
        moved.status_code = SpanStatus::Error;
        moved.status_message = "MOVED to 127.0.0.1:7001".into();
        let spans = vec![
            redis(span("a5", "a1", "GET", SpanKind::Client, 7.5, 9.5), 7001),
            moved,
            redis(span("a3", "a1", "connect", SpanKind::Client, 3.0, 6.0), 7000),
            span("a2", "a1", "token fetch", SpanKind::Client, 0.5, 3.0),
            server,
        ];
        let want = "\
GET /api/cache/{key}  status 200                          10.00 ms |==============================|  trace 4bf92f35
├─ token fetch                                             2.50 ms | ========                     |
├─ connect  127.0.0.1:7000                                 3.00 ms |         =========            |
├─ GET  127.0.0.1:7000  ERROR MOVED to 127.0.0.1:7001      1.00 ms |                  ===         |
└─ GET  127.0.0.1:7001                                     2.00 ms |                      ======= |
";
        assert_eq!(waterfall(&spans, &format!("{:0>16}", "a1")), want);
    }

    /// Grandchildren indent under their parent, with a continuing rail
    /// while the parent has later siblings.
    #[test]
    fn nesting_draws_rails() {
        let spans = vec![
            span("1", "", "CacheHealthCheck", SpanKind::Server, 0.0, 4.0),
            span("2", "1", "PING", SpanKind::Client, 0.0, 2.0),
            span("3", "2", "AUTH", SpanKind::Client, 0.5, 1.0),
            span("4", "1", "SET", SpanKind::Client, 2.0, 4.0),
        ];
        let names: Vec<String> = waterfall(&spans, &format!("{:0>16}", "1"))
            .lines()
            .map(|l| {
                let head = l.split(" ms |").next().unwrap().trim_end();
                head.rsplit_once(' ').unwrap().0.trim_end().to_owned()
            })
            .collect();
        assert_eq!(names, ["CacheHealthCheck", "├─ PING", "│  └─ AUTH", "└─ SET"]);
    }

    /// A span whose parent never arrived hangs under the root, flagged; a
    /// span of another trace, and another invocation's SERVER span, do not
    /// show.
    #[test]
    fn orphans_are_flagged_under_the_root() {
        let mut other_trace = span("9", "1", "GET", SpanKind::Client, 1.0, 2.0);
        other_trace.trace_id = "0".repeat(32);
        let spans = vec![
            span("1", "ff", "GET /api/ping", SpanKind::Server, 0.0, 4.0),
            span("2", "77", "connect", SpanKind::Client, 1.0, 2.0),
            span("3", "78", "POST /api/cache", SpanKind::Server, 1.0, 2.0),
            other_trace,
        ];
        let got = waterfall(&spans, &format!("{:0>16}", "1"));
        assert_eq!(got.lines().count(), 2, "\n{got}");
        assert!(
            got.lines()
                .nth(1)
                .unwrap()
                .starts_with("└─ connect  (parent not received)"),
            "\n{got}"
        );
    }

    /// A root that is not a SERVER span is a background trace, and says so;
    /// an error without a message shows its error.type.
    #[test]
    fn background_roots_are_labelled() {
        let mut fetch = span("1", "", "token fetch", SpanKind::Client, 0.0, 5.0);
        fetch.status_code = SpanStatus::Error;
        let fetch = with(fetch, "error.type", AttrValue::Str("timeout".into()));
        let got = waterfall(&[fetch], &format!("{:0>16}", "1"));
        assert!(got.starts_with("token fetch  ERROR timeout"), "{got}");
        assert!(got.trim_end().ends_with("trace 4bf92f35 (background)"), "{got}");
    }

    /// A root that never arrived is one line saying so.
    #[test]
    fn a_missing_root_says_so() {
        assert_eq!(
            waterfall(&[], "00000000000000aa"),
            "(span 00000000000000aa not received)\n"
        );
    }

    /// Bars: the whole range fills the bar, an instant still gets one
    /// character, a span past the range is clipped to it.
    #[test]
    fn bars() {
        let cases = [
            ((0, 100), "=".repeat(BAR)),
            ((50, 50), format!("{}={}", " ".repeat(15), " ".repeat(14))),
            ((100, 100), format!("{}=", " ".repeat(29))),
            ((90, 500), format!("{}===", " ".repeat(27))),
        ];
        for ((start, end), want) in cases {
            assert_eq!(bar(start, end, 0, 100), want, "{start}..{end}");
        }
    }
}
