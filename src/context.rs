//! What every connection accepted by one `server` block shares: its configuration, resolver,
//! upstream pool and authentication, the process-wide guards, and the signals that stop it.
//!
//! It sits below every stage of a connection (the connection itself, forwarding, reaching an
//! upstream), so none of them needs to import another to read it.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::access::{Auth, OwnListeners};
use crate::access_log::AccessLog;
use crate::forward::Pool;
use crate::limits::PerClient;
use crate::request::Limits;
use crate::resolve::Resolver;
use crate::settings::Server;

/// Everything a connection accepted by one `server` block needs.
pub struct ServerContext {
    pub config: Server,
    pub resolver: Resolver,
    pub limits: Limits,
    /// Idle upstream connections for forwarded requests.
    pub pool: Pool,
    /// `auth_basic` with its users, when on.
    pub auth: Option<Auth>,
    /// Every address this process listens on: never a destination.
    pub own_listeners: Arc<OwnListeners>,
    /// Connections open per client address.
    pub per_client: Arc<PerClient>,
    /// Becomes true when the proxy stops: connections waiting for a request close.
    pub stopping: watch::Receiver<bool>,
    /// Becomes true when open connections must end now (fast shutdown): tunnels close.
    pub closing: watch::Receiver<bool>,
    /// The context a reload put in this one's place on the same listener.
    pub successor: OnceLock<Arc<ServerContext>>,
    /// Set when a reload closed every listener of this context and kept none of its block's.
    pub retired: watch::Sender<bool>,
}

impl ServerContext {
    /// Records that a reload replaced this context by `next` (the first replacement counts).
    pub fn succeed(&self, next: &Arc<ServerContext>) {
        let _ = self.successor.set(Arc::clone(next));
    }

    /// The context now serving the listener this one served: a keep-alive connection judges
    /// each new request by it, so a reload reaches connections already open.
    pub fn latest(self: &Arc<Self>) -> Arc<ServerContext> {
        let mut latest = self;
        while let Some(next) = latest.successor.get() {
            latest = next;
        }
        Arc::clone(latest)
    }

    /// Resolves once the proxy is stopping.
    pub async fn stopping(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|&stopping| stopping).await;
    }

    /// Resolves once a reload removed the listeners of this context's block.
    pub async fn retired(&self) {
        let mut retired = self.retired.subscribe();
        let _ = retired.wait_for(|&retired| retired).await;
    }

    /// Resolves once open connections must end now.
    pub async fn closing(&self) {
        let mut closing = self.closing.clone();
        let _ = closing.wait_for(|&closing| closing).await;
    }

    /// Whether any location forwards plain-HTTP requests.
    pub fn forwards(&self) -> bool {
        self.config.locations.iter().any(|l| l.proxy_pass)
    }

    /// Whether any access log of this server may write a line.
    pub fn logs(&self) -> bool {
        let locations = self.config.locations.iter().map(|l| &l.access_log);
        std::iter::once(&self.config.access_log)
            .chain(locations)
            .any(|log| !log.is_off())
    }

    /// The access log of the location that served a forwarded request, or the server's.
    pub fn access_log(&self, location: Option<usize>) -> &AccessLog {
        location
            .and_then(|i| self.config.locations.get(i))
            .map_or(&self.config.access_log, |l| &l.access_log)
    }
}
