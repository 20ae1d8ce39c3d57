//! The registry against the function.json files the host reads, and the
//! router built from it.

use super::*;

/// The registry's names are the folders under `function-app/`, one each.
#[test]
fn names_are_unique() {
    let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "a function is declared twice");
}

/// Each HTTP function declares each method once, and a route the path
/// lookup (the invocation log's function name) finds again.
#[test]
fn routes_find_their_function() {
    for f in FUNCTIONS {
        if let Some(path) = f.api_path() {
            assert_eq!(by_path(FUNCTIONS, &path).map(|g| g.name), Some(f.name), "{path}");
            let mut methods = f.methods();
            let count = methods.len();
            methods.sort_unstable();
            methods.dedup();
            assert!(count > 0 && methods.len() == count, "{}: {methods:?}", f.name);
        }
        assert_eq!(
            by_path(FUNCTIONS, &format!("/{}", f.name)).map(|g| g.name),
            Some(f.name)
        );
        assert_eq!(by_name(FUNCTIONS, f.name).map(|g| g.name), Some(f.name));
    }
    assert_eq!(by_path(FUNCTIONS, "/api/cache").map(|f| f.name), Some("CacheItem"));
    assert_eq!(
        by_path(FUNCTIONS, "/api/cache/{key}/incr").map(|f| f.name),
        Some("CacheIncr")
    );
    assert!(by_path(FUNCTIONS, "/api/nothing").is_none());
    assert!(by_name(FUNCTIONS, "Nothing").is_none());
}
