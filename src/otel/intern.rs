//! Names an invocation's span is given, kept once for the life of the
//! process: `GET /api/cache/{key}`, `orders/CacheItem`. They come from a
//! bounded set (the registry's routes and functions, the standard HTTP
//! methods), so the table stays small; past [`MAX`] entries (a bug
//! somewhere) new names become `_OTHER` rather than growing it.
//!
//! Every invocation looks its names up, on every worker thread at once: the
//! table is read without a lock (an `ArcSwap` of the list), and only a new
//! name takes the lock to write a longer copy.

use arc_swap::ArcSwap;
use std::sync::{Arc, LazyLock, Mutex};

/// The most names kept.
const MAX: usize = 1024;

static NAMES: LazyLock<ArcSwap<Vec<&'static str>>> = LazyLock::new(|| ArcSwap::from_pointee(Vec::new()));
static WRITER: Mutex<()> = Mutex::new(());

/// `a`, `sep` and `b` joined, as a string that lives for the process:
/// found without allocating or locking when it was made before.
pub(crate) fn joined(a: &str, sep: &str, b: &str) -> &'static str {
    let matches = |n: &str| {
        n.len() == a.len() + sep.len() + b.len() && n.starts_with(a) && n[a.len()..].starts_with(sep) && n.ends_with(b)
    };
    if let Some(found) = NAMES.load().iter().copied().find(|n| matches(n)) {
        return found;
    }
    let _one_writer = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    let names = NAMES.load_full();
    if let Some(found) = names.iter().copied().find(|n| matches(n)) {
        return found;
    }
    if names.len() >= MAX {
        return "_OTHER";
    }
    let made: &'static str = Box::leak(format!("{a}{sep}{b}").into_boxed_str());
    let mut longer = Vec::with_capacity(names.len() + 1);
    longer.extend_from_slice(&names);
    longer.push(made);
    NAMES.store(Arc::new(longer));
    made
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
