//! The state every function shares: the cache, the limits the settings
//! give, and the functions served (the built-in ones, and a program's own).

use super::{Function, FUNCTIONS};
use crate::cache::Cache;
use crate::settings::Settings;
use std::sync::Arc;

/// What every function shares: the cache, the limits the settings give,
/// and the functions served. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) cache: Arc<Cache>,
    /// Largest value a PUT may store.
    pub(crate) max_value_bytes: usize,
    /// Names this process (probe keys).
    pub(crate) worker_id: Arc<str>,
    /// The app's name (`WEBSITE_SITE_NAME`): names the key the timer's
    /// last result is kept under.
    pub(crate) app_name: Arc<str>,
    /// The instance this process runs on (`WEBSITE_INSTANCE_ID`), stored
    /// beside the timer's result.
    pub(crate) instance_id: Arc<str>,
    /// The built-in functions, then those added with
    /// [`AppState::with_functions`].
    functions: Arc<[Function]>,
}

impl AppState {
    /// State around `cache`, with the limits `settings` give, serving the
    /// built-in functions.
    pub fn new(cache: Arc<Cache>, settings: &Settings) -> Self {
        Self {
            cache,
            max_value_bytes: settings.max_value_bytes,
            worker_id: settings.worker_id.as_str().into(),
            app_name: settings.app_name.as_str().into(),
            instance_id: settings.instance_id.as_str().into(),
            functions: FUNCTIONS.into(),
        }
    }

    /// The same state, serving `extra` functions beside the built-in ones
    /// (their routes, envelopes and names in the log, as for the built-ins).
    pub fn with_functions(mut self, extra: &[Function]) -> Self {
        self.functions = self.functions.iter().chain(extra).copied().collect();
        self
    }

    /// The Entra ID–authenticated, cluster-aware connection(s).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The functions served.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// Gets a token and connects in the background, so the first
    /// invocation finds both ready and start-up never waits for either; a
    /// failure is logged and left to the first invocation.
    pub fn warm_up(&self) {
        let cache = self.cache.clone();
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
