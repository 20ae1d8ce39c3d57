//! What the handler is made of at start-up: the settings turned into a
//! cache handle ([`Cache::from_settings`]) and the process's one cache, and
//! the typed error when that cannot be done.
//!
//! The binary's cache lives in a process-wide once-cell ([`process_state`]):
//! the handler builds it once, and anything in the process that asks again
//! gets the same connection(s), never a second set. A program of its own
//! builds one with [`Cache::from_settings`] and shares it.

use crate::cache::{Auth, Cache, CacheOptions, Target};
use crate::credential::AzureTokenSource;
use crate::functions::AppState;
use crate::settings::{AuthSettings, Settings};
use crate::token::TokenManager;
use std::sync::{Arc, OnceLock};

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

impl Cache {
    /// A cache handle from `settings` (no I/O: nothing connects until the
    /// first command). With Entra ID, the credential the settings choose
    /// fetches the tokens; the handle refreshes and re-AUTHs by itself.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use azure_redis_handler::{redis, Cache, Settings};
    ///
    /// // Redis__redisHostName, Redis__port, ... as the handler reads them.
    /// let settings = Settings::from_env()?;
    /// let cache = Cache::from_settings(&settings)?;
    /// let pong: String = cache.query(&redis::cmd("PING")).await?;
    /// assert_eq!(pong, "PONG");
    /// # Ok(()) }
    /// ```
    pub fn from_settings(settings: &Settings) -> Result<Arc<Cache>, StartupError> {
        crate::tls::install_crypto_provider();
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
                notifications: settings.redis.notifications,
            },
        ))
    }

    /// [`Cache::from_settings`] with the settings of this process's
    /// environment (the app settings, in Azure).
    pub fn from_env() -> Result<Arc<Cache>, StartupError> {
        Self::from_settings(&Settings::from_env()?)
    }
}

/// The process's one cache.
static PROCESS_CACHE: OnceLock<Arc<Cache>> = OnceLock::new();

/// The state of this process: its cache is built from `settings` on the
/// first call and kept in the process-wide cell; later calls share it.
pub(crate) fn process_state(settings: &Settings) -> Result<AppState, StartupError> {
    let cache = match PROCESS_CACHE.get() {
        Some(cache) => cache.clone(),
        None => {
            let built = Cache::from_settings(settings)?;
            // A racing first call may have won: use whichever is in the cell.
            PROCESS_CACHE.get_or_init(|| built).clone()
        }
    };
    Ok(AppState::new(cache, settings))
}
