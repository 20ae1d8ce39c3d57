//! Everything the receiver got, behind one lock, with a `watch` counter
//! bumped on every arrival so a waiter sleeps until something new is there
//! instead of polling.

use super::model::{ReceivedMetric, ReceivedSpan};
use bytes::Bytes;
use std::collections::BTreeMap;
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

#[derive(Default)]
pub(super) struct Data {
    pub spans: Vec<ReceivedSpan>,
    pub metrics: Vec<ReceivedMetric>,
    pub bodies: Vec<ReceivedBody>,
    /// Requests seen, by (path, media type), counted on arrival (before
    /// any `Hang` or `Fail`).
    pub requests: BTreeMap<(String, String), usize>,
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
                    .wait(Duration::from_secs(60), |d| d.bodies.first().map(|b| b.path.clone()))
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
        let found = store.wait(Duration::from_secs(3), |d| d.spans.first().cloned()).await;
        assert!(found.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
