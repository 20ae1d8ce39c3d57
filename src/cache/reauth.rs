//! New tokens onto every live connection before invocations use them: the
//! token manager's refresh task calls [`TokenListener::token_ready`], and
//! the cache re-AUTHs every live connection (the one endpoint's, or every
//! master's, busy or idle) at once. One token fetch serves the whole
//! process; a connection made meanwhile takes the new token itself (see
//! `node/link.rs`).

use super::context::Credentials;
use super::{Cache, Mode};
use crate::token::{Token, TokenListener};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

impl Cache {
    /// In the refresh task, before invocations get `token`: re-AUTHs every
    /// live connection with it at once (the one connection, or each
    /// master's, busy or idle), so none outlives its token.
    async fn reauth_all(&self, token: Arc<Token>) {
        let creds = Credentials::Token(token);
        let nodes = match self.mode.get() {
            Some(Mode::Cluster(cluster)) => cluster.nodes(),
            _ => vec![self.seed.clone()],
        };
        futures_util::future::join_all(nodes.iter().map(|n| n.reauth_live(&creds))).await;
    }
}

impl TokenListener for Cache {
    fn token_ready(&self, token: Arc<Token>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.reauth_all(token))
    }
}
