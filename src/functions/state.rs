//! The state every function shares: the cache, the limits the settings
//! give, and the functions served (the built-in ones, and a program's own).

use super::{Function, FUNCTIONS};
use crate::cache::Cache;
use crate::settings::Settings;
use std::sync::Arc;

/// What every function shares: the cache, the limits the settings give,
/// and the functions served. Cloning is cheap: one reference count, which
/// every invocation takes.
#[derive(Clone, Debug)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
struct Shared {
    cache: Arc<Cache>,
    /// Largest value a PUT may store.
    max_value_bytes: usize,
    /// Names this process (probe keys).
    worker_id: Box<str>,
    /// The app's name (`WEBSITE_SITE_NAME`): names the key the timer's
    /// last result is kept under.
    app_name: Box<str>,
    /// The instance this process runs on (`WEBSITE_INSTANCE_ID`), stored
    /// beside the timer's result.
    instance_id: Box<str>,
    /// The built-in functions, then those added with
    /// [`AppState::with_functions`].
    functions: Box<[Function]>,
}

impl AppState {
    /// State around `cache`, with the limits `settings` give, serving the
    /// built-in functions.
    pub fn new(cache: Arc<Cache>, settings: &Settings) -> Self {
        Self {
            shared: Arc::new(Shared {
                cache,
                max_value_bytes: settings.max_value_bytes,
                worker_id: settings.worker_id.as_str().into(),
                app_name: settings.app_name.as_str().into(),
                instance_id: settings.instance_id.as_str().into(),
                functions: FUNCTIONS.into(),
            }),
        }
    }

    /// The same state, serving `extra` functions beside the built-in ones
    /// (their routes, envelopes and names in the log, as for the built-ins).
    pub fn with_functions(self, extra: &[Function]) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        shared.functions = shared.functions.iter().chain(extra).copied().collect();
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The Entra ID–authenticated, cluster-aware connection(s).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.shared.cache
    }

    /// The functions served.
    pub fn functions(&self) -> &[Function] {
        &self.shared.functions
    }

    /// Largest value a PUT may store.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.shared.max_value_bytes
    }

    /// Names this process (probe keys).
    pub(crate) fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// The app's name (`WEBSITE_SITE_NAME`).
    pub(crate) fn app_name(&self) -> &str {
        &self.shared.app_name
    }

    /// The instance this process runs on (`WEBSITE_INSTANCE_ID`).
    pub(crate) fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    /// Gets a token and connects in the background, so the first
    /// invocation finds both ready and start-up never waits for either; a
    /// failure is logged and left to the first invocation.
    pub fn warm_up(&self) {
        let cache = self.cache().clone();
        tokio::spawn(async move {
            // One trace for the whole warm-up: the token, the connection,
            // finding out whether the cache is a cluster.
            let mut span = crate::otel::Span::start("warm-up", crate::otel::Kind::Internal);
            if let Err(e) = span.scope(cache.warm_up()).await {
                span.fail(e.kind(), &e.to_string());
                tracing::warn!(error = %e, "warm-up failed; the first invocation will try again");
            }
        });
    }
}
