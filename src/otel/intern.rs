//! Names an invocation's span is given, kept once for the life of the
//! process: `GET /api/cache/{key}`, `orders/CacheItem`. They come from a
//! bounded set (the registry's routes and functions, the standard HTTP
//! methods), so the table stays small; past [`MAX`] entries (a bug
//! somewhere) new names become `_OTHER` rather than growing it.
//!
//! The table is read without a lock (`super::table`).

use super::table::Table;

/// The most names kept.
const MAX: usize = 1024;

/// Each name, keyed by itself.
static NAMES: Table<&'static str, &'static str> = Table::new(MAX);

/// `a`, `sep` and `b` joined, as a string that lives for the process:
/// found without allocating or locking when it was made before.
pub(crate) fn joined(a: &str, sep: &str, b: &str) -> &'static str {
    let matches = |n: &&'static str| {
        n.len() == a.len() + sep.len() + b.len() && n.starts_with(a) && n[a.len()..].starts_with(sep) && n.ends_with(b)
    };
    let make = || {
        let made: &'static str = Box::leak(format!("{a}{sep}{b}").into_boxed_str());
        (made, made)
    };
    NAMES.with(matches, make, |n| *n).unwrap_or("_OTHER")
}

/// An HTTP method as the conventions name it: the standard ones, else
/// `_OTHER` (a client's made-up method is not a new span name).
pub(crate) fn method(m: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|k| *k == m.as_str()).unwrap_or("_OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same parts give the same string, made once; others another.
    #[test]
    fn joined_once() {
        let a = joined("GET", " ", "/api/x/{k}");
        let b = joined("GET", " ", "/api/x/{k}");
        assert_eq!(a, "GET /api/x/{k}");
        assert!(std::ptr::eq(a, b));
        assert_eq!(joined("GET /api", "", "/x/{k}"), "GET /api/x/{k}");
        assert_ne!(joined("PUT", " ", "/api/x/{k}"), a);
    }

    /// Made-up methods are `_OTHER`.
    #[test]
    fn methods() {
        assert_eq!(method(&axum::http::Method::PATCH), "PATCH");
        assert_eq!(method(&axum::http::Method::from_bytes(b"BREW").unwrap()), "_OTHER");
    }
}
