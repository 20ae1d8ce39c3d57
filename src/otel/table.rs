//! A list of keyed entries that every worker thread reads at once without
//! a lock, and that only grows: a new entry takes a lock and swaps in a
//! longer copy. The span names, the attribute sets encoded once, and the
//! metric series are such lists: tens of entries in a process's life,
//! looked up on every invocation.

use arc_swap::{ArcSwap, Guard};
use std::sync::{Arc, LazyLock, Mutex};

/// Entries `(K, V)`, at most `max` of them.
pub(super) struct Table<K: 'static, V: 'static> {
    list: LazyLock<ArcSwap<Vec<(K, V)>>>,
    writer: Mutex<()>,
    max: usize,
}

fn empty<T>() -> ArcSwap<Vec<T>> {
    ArcSwap::from_pointee(Vec::new())
}

impl<K: Clone + 'static, V: Clone + 'static> Table<K, V> {
    /// An empty table of at most `max` entries (usable in a `static`).
    pub(super) const fn new(max: usize) -> Self {
        Self {
            list: LazyLock::new(empty::<(K, V)>),
            writer: Mutex::new(()),
            max,
        }
    }

    /// `with` of the value of the entry whose key `matches`; if there is
    /// none, of a new entry `make` makes, unless the table is full (then
    /// `None`). Found entries are read without a lock or a copy.
    pub(super) fn with<R>(
        &self,
        matches: impl Fn(&K) -> bool,
        make: impl FnOnce() -> (K, V),
        with: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        if let Some((_, v)) = self.list.load().iter().find(|(k, _)| matches(k)) {
            return Some(with(v));
        }
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let list = self.list.load_full();
        if let Some((_, v)) = list.iter().find(|(k, _)| matches(k)) {
            return Some(with(v));
        }
        if list.len() >= self.max {
            return None;
        }
        let entry = make();
        let out = with(&entry.1);
        let mut longer = Vec::with_capacity(list.len() + 1);
        longer.extend(list.iter().cloned());
        longer.push(entry);
        self.list.store(Arc::new(longer));
        Some(out)
    }

    /// Every entry, now.
    pub(super) fn entries(&self) -> Guard<Arc<Vec<(K, V)>>> {
        self.list.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry is made once and found after; past the bound, nothing is
    /// added.
    #[test]
    fn grows_to_its_bound() {
        let t: Table<u32, &'static str> = Table::new(2);
        let mut made = 0;
        for _ in 0..3 {
            let v = t.with(
                |k| *k == 1,
                || {
                    made += 1;
                    (1, "one")
                },
                |v| *v,
            );
            assert_eq!(v, Some("one"));
        }
        assert_eq!(made, 1);
        assert_eq!(t.with(|k| *k == 2, || (2, "two"), |v| *v), Some("two"));
        assert_eq!(t.with(|k| *k == 3, || (3, "three"), |v| *v), None);
        assert_eq!(t.entries().len(), 2);
    }
}
