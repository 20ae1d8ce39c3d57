//! The time of day as answers and Health write it: RFC 3339, UTC.

/// Now, RFC 3339 in UTC (`2026-12-03T10:40:26.663085335Z`).
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
