//! What the handler is made of at start-up: the settings turned into the
//! process's one cache handle and the state every function shares, and the
//! typed error when that cannot be done.
//!
//! The cache lives in a process-wide once-cell ([`process_state`]): the
//! handler builds it once, and anything in the process that asks again gets
//! the same connection(s), never a second set. Tests and tools that want a
//! cache of their own build one with [`build_cache`] and [`AppState::new`].

use crate::cache::{Auth, Cache, CacheOptions, Target};
use crate::credential::AzureTokenSource;
use crate::functions::cache_health_check::CheckReport;
use crate::settings::{AuthSettings, Settings};
use crate::token::TokenManager;
use std::sync::{Arc, Mutex, OnceLock};

/// What every handler shares. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The Redis connection(s).
    pub(crate) cache: Arc<Cache>,
    /// Largest value a PUT may store.
    pub(crate) max_value_bytes: usize,
    /// Names this process (probe keys).
    pub(crate) worker_id: Arc<str>,
    /// The last timer check, for Health.
    pub(crate) last_check: Arc<Mutex<Option<CheckReport>>>,
}

impl AppState {
    /// State around `cache`, with the limits `settings` give.
    pub fn new(cache: Arc<Cache>, settings: &Settings) -> Self {
        Self {
            cache,
            max_value_bytes: settings.max_value_bytes,
            worker_id: settings.worker_id.as_str().into(),
            last_check: Arc::default(),
        }
    }

    /// Gets a token and connects in the background, so the first
    /// invocation finds both ready and start-up never waits for either; a
    /// failure is logged and left to the first invocation.
    pub fn warm_up(&self) {
        let cache = self.cache.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.warm_up().await {
                tracing::warn!(error = %e, "warm-up failed; the first invocation will try again");
            }
        });
    }
}

/// Why the handler cannot start. The binary prints it on one line and
/// exits with [`StartupError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A missing or contradictory setting.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// `SSL_CERT_FILE` cannot be read or holds no certificate.
    #[error("{0}")]
    Certificates(String),
    /// The credential the settings name cannot be built.
    #[error("credential: {0}")]
    Credential(String),
    /// The listening port cannot be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        /// `FUNCTIONS_CUSTOMHANDLER_PORT` (or its fallbacks).
        port: u16,
        /// What binding it answered.
        source: std::io::Error,
    },
}

impl StartupError {
    /// 2 for a configuration problem (as for a bad setting), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Settings(_) | Self::Certificates(_) | Self::Credential(_) => 2,
            Self::Listen { .. } => 1,
        }
    }
}

/// Builds a cache handle from the settings (no I/O: nothing connects yet).
pub fn build_cache(settings: &Settings) -> Result<Arc<Cache>, StartupError> {
    let target = Target::from_settings(&settings.redis, settings.deadlines).map_err(StartupError::Certificates)?;
    let auth = match &settings.redis.auth {
        AuthSettings::AccessKey { user, password } => Auth::AccessKey {
            user: user.clone(),
            password: password.clone(),
        },
        AuthSettings::Entra(entra) => {
            let source = AzureTokenSource::from_choice(&entra.credential, entra.scope.clone())
                .map_err(|e| StartupError::Credential(e.to_string()))?;
            Auth::Entra(Arc::new(TokenManager::new(
                Arc::new(source),
                entra.principal_id.clone(),
                entra.refresh_offset,
                settings.deadlines.token_fetch,
            )))
        }
    };
    Ok(Cache::new(
        target,
        auth,
        CacheOptions {
            cluster_mode: settings.redis.cluster_mode,
            ride_through: settings.deadlines.ride_through,
            notifications: settings.redis.notifications,
        },
    ))
}

/// The process's one cache, in a process-wide once-cell.
static PROCESS_CACHE: OnceLock<Arc<Cache>> = OnceLock::new();

/// The state of this process: its cache is built from `settings` on the
/// first call and kept in the process-wide cell; later calls share it.
pub fn process_state(settings: &Settings) -> Result<AppState, StartupError> {
    let cache = match PROCESS_CACHE.get() {
        Some(cache) => cache.clone(),
        None => {
            let built = build_cache(settings)?;
            // A racing first call may have won: use whichever is in the cell.
            PROCESS_CACHE.get_or_init(|| built).clone()
        }
    };
    Ok(AppState::new(cache, settings))
}
