//! Everything the receiver got, behind one lock, with a `watch` counter
//! bumped on every arrival so a waiter sleeps until something new is there
//! instead of polling.

use super::model::{ReceivedMetric, ReceivedSpan};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// One export request's body, for tests that scan everything sent (for a
/// secret, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBody {
    /// `/v1/traces`, `/v1/metrics` or `/v1/logs`.
    pub path: String,
    /// The media type sent, lowercased without parameters
    /// (`application/x-protobuf`).
    pub content_type: String,
    /// The payload after undoing any `Content-Encoding: gzip`, so a scan
    /// sees what the exporter serialised rather than compressed bytes.
    pub bytes: Bytes,
}

/// What the receiver keeps: the newest of each kind, up to a bound, so a
/// `devhost start` left running under load holds a bounded amount of
/// memory (at about a kilobyte a span, the spans' bound is tens of
/// megabytes).
pub(super) struct Data {
    pub spans: Kept<ReceivedSpan>,
    pub metrics: Kept<ReceivedMetric>,
    pub bodies: Kept<ReceivedBody>,
    /// Requests seen, by (path, media type), counted on arrival (before
    /// any `Hang` or `Fail`).
    pub requests: BTreeMap<(String, String), usize>,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            spans: Kept::new(MAX_SPANS),
            metrics: Kept::new(MAX_METRIC_POINTS),
            bodies: Kept::new(MAX_BODIES),
            requests: BTreeMap::new(),
        }
    }
}

/// Spans kept.
pub const MAX_SPANS: usize = 50_000;
/// Metric points kept.
pub const MAX_METRIC_POINTS: usize = 50_000;
/// Export bodies kept (a full batch of spans is about 100 kB).
pub const MAX_BODIES: usize = 256;

/// The newest `max` of a kind, in arrival order, and how many came before
/// them: an item is known by its place among all that arrived (its
/// number), so a follower can ask for what came after the last it saw.
pub(super) struct Kept<T> {
    items: VecDeque<T>,
    /// Items dropped from the front to stay within `max`.
    dropped: usize,
    max: usize,
}

impl<T: Clone> Kept<T> {
    fn new(max: usize) -> Self {
        Kept {
            items: VecDeque::new(),
            dropped: 0,
            max,
        }
    }

    /// Adds `new` at the end, dropping the oldest past the bound.
    pub fn extend(&mut self, new: impl IntoIterator<Item = T>) {
        self.items.extend(new);
        let over = self.items.len().saturating_sub(self.max);
        self.items.drain(..over);
        self.dropped += over;
    }

    /// Adds one.
    pub fn push(&mut self, item: T) {
        self.extend([item]);
    }

    /// Those kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter()
    }

    /// Those kept, as a `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }

    /// How many ever arrived.
    pub fn arrived(&self) -> usize {
        self.dropped + self.items.len()
    }

    /// Those kept that arrived after the first `from`: all kept, when some
    /// after `from` were already dropped.
    pub fn after(&self, from: usize) -> Vec<T> {
        self.items
            .iter()
            .skip(from.saturating_sub(self.dropped))
            .cloned()
            .collect()
    }
}

pub(super) struct Store {
    data: Mutex<Data>,
    arrivals: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            data: Mutex::default(),
            arrivals: watch::channel(0).0,
        }
    }
}

impl Store {
    /// Changes the data and wakes every waiter.
    pub fn update(&self, f: impl FnOnce(&mut Data)) {
        f(&mut self.data.lock().unwrap());
        self.arrivals.send_modify(|n| *n += 1);
    }

    /// Reads the data.
    pub fn read<T>(&self, f: impl FnOnce(&Data) -> T) -> T {
        f(&self.data.lock().unwrap())
    }

    /// The first `Some` that `f` gives, checked now and after every arrival,
    /// or `None` once `timeout` has passed.
    pub async fn wait<T>(&self, timeout: Duration, mut f: impl FnMut(&Data) -> Option<T>) -> Option<T> {
        // Subscribed before the first check, so an arrival between the check
        // and the wait still wakes it.
        let mut rx = self.arrivals.subscribe();
        let deadline = far(timeout);
        loop {
            rx.borrow_and_update();
            if let Some(found) = self.read(&mut f) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in `self`, so only the deadline ends this.
                _ => return None,
            }
        }
    }

    /// Waits until `quiet` passes with nothing new arriving, or `cap` in all.
    pub async fn settle(&self, quiet: Duration, cap: Duration) {
        let mut rx = self.arrivals.subscribe();
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            rx.borrow_and_update();
            let until = deadline.min(tokio::time::Instant::now() + quiet);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < deadline => continue,
                _ => return,
            }
        }
    }
}

/// Now plus `timeout`, or thirty years on when that overflows
/// (`Duration::MAX` means "no deadline").
fn far(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A waiter wakes on the arrival itself: with time paused, nothing but
    /// the update can end the wait before its 60 s deadline.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_on_arrival() {
        let store = Arc::new(Store::default());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .wait(Duration::from_secs(60), |d| {
                        d.bodies.iter().next().map(|b| b.path.clone())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        store.update(|d| {
            d.bodies.push(ReceivedBody {
                path: "/v1/traces".into(),
                content_type: "application/json".into(),
                bytes: Bytes::from_static(b"{}"),
            })
        });
        assert_eq!(waiter.await.unwrap().as_deref(), Some("/v1/traces"));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// Nothing arriving: the wait ends at its deadline with `None`.
    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline() {
        let store = Store::default();
        let started = tokio::time::Instant::now();
        let found = store
            .wait(Duration::from_secs(3), |d| d.spans.iter().next().cloned())
            .await;
        assert!(found.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// Past its bound the oldest go; a follower still gets what came after
    /// what it saw, or all that is kept when it fell behind the bound.
    #[test]
    fn kept_stays_within_its_bound() {
        let mut kept = Kept::new(3);
        kept.extend(1..=2);
        assert_eq!((kept.to_vec(), kept.arrived()), (vec![1, 2], 2));
        kept.extend(3..=5);
        kept.push(6);
        assert_eq!((kept.to_vec(), kept.arrived()), (vec![4, 5, 6], 6));
        assert_eq!(kept.after(4), vec![5, 6]);
        assert_eq!(kept.after(1), vec![4, 5, 6]);
        assert_eq!(kept.after(6), Vec::<i32>::new());
    }
}
