//! Listening sockets and the accept loop.
//!
//! Every `listen` of every `server` block becomes one socket; each accepted connection runs in
//! its own task with the context (policy, resolver) of the block that owns the socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access::Auth;
use crate::config::{Config, Listen, Origin};
use crate::connection::{self, ServerContext};
use crate::error::ProxyError;
use crate::forward::Pool;
use crate::limits::{Gauge, PerClient};
use crate::resolve::Resolver;

/// The listen backlog when `listen ... backlog=N` does not say; the kernel caps it at
/// `net.core.somaxconn`.
const DEFAULT_BACKLOG: u32 = 4096;

/// All listeners, bound and ready to accept.
pub struct Proxy {
    listeners: Vec<Bound>,
    /// Client connections open in the whole process, against `max_connections`.
    connections: Arc<Gauge>,
    /// Set once the proxy stops accepting; idle connections watch it.
    stopping: watch::Sender<bool>,
    /// `status_listen`: `/metrics` and `/healthz`.
    status: Option<TcpListener>,
}

struct Bound {
    listener: TcpListener,
    /// The `listen` directive's place in the config, for log lines.
    origin: Origin,
    context: Arc<ServerContext>,
}

impl Proxy {
    /// Binds every listener of `config`. Must run inside a tokio runtime. Errors read like
    /// nginx's: `bind() to 0.0.0.0:80 failed (Permission denied), listen in proxy.conf:3`.
    pub fn bind(config: &Config) -> Result<Proxy, String> {
        crate::access_log::open_files(config)?;
        // Sockets first: every server must know all of the proxy's own addresses, which are
        // never a destination.
        let mut sockets = Vec::new();
        for (index, server) in config.servers.iter().enumerate() {
            for listen in &server.listen {
                let socket = bind_one(listen).map_err(|e| {
                    format!(
                        "bind() to {} failed ({e}), listen in {}",
                        listen.addr, listen.origin
                    )
                })?;
                sockets.push((index, socket, listen.origin.clone()));
            }
        }
        let status = config
            .status_listen
            .as_ref()
            .map(crate::status::bind)
            .transpose()?;
        let own: Arc<[SocketAddr]> = sockets
            .iter()
            .map(|(_, s, _)| s)
            .chain(&status)
            .filter_map(|s| s.local_addr().ok())
            .collect();
        let (stopping, stopping_rx) = watch::channel(false);
        let mut contexts = Vec::new();
        for server in &config.servers {
            let resolver = Resolver::new(server.resolver.as_ref(), server.resolver_timeout)
                .map_err(|e| format!("{e} (server in {})", server.origin))?;
            let auth = match (&server.auth_realm, &server.auth_users) {
                (Some(realm), Some(users)) => Some(Auth::new(realm.clone(), users.clone())),
                _ => None,
            };
            contexts.push(Arc::new(ServerContext {
                config: server.clone(),
                resolver,
                limits: server.limits,
                pool: Pool::default(),
                auth,
                own_listeners: Arc::clone(&own),
                per_client: PerClient::new(server.max_connections_per_client),
                stopping: stopping_rx.clone(),
            }));
        }
        let listeners = sockets
            .into_iter()
            .map(|(index, listener, origin)| Bound {
                listener,
                origin,
                context: Arc::clone(&contexts[index]),
            })
            .collect();
        Ok(Proxy {
            listeners,
            connections: Gauge::new(config.max_connections),
            stopping,
            status,
        })
    }

    /// The status listener's address (`status_listen`), if there is one.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref()?.local_addr().ok()
    }

    /// Each bound address (a port of 0 resolved to the real one) and the `listen` it came from.
    pub fn listening(&self) -> impl Iterator<Item = (SocketAddr, &Origin)> {
        self.listeners
            .iter()
            .filter_map(|bound| Some((bound.listener.local_addr().ok()?, &bound.origin)))
    }

    /// Accepts connections on every listener until `stop` resolves; then closes the
    /// listeners (new clients are refused by the kernel), tells idle connections to close, and
    /// returns what is needed to wait for the busy ones.
    pub async fn serve(self, stop: impl Future<Output = ()>) -> Draining {
        let mut accept_loops = JoinSet::new();
        if let Some(status) = self.status {
            accept_loops.spawn(crate::status::serve(status));
        }
        for bound in self.listeners {
            accept_loops.spawn(accept_loop(
                bound.listener,
                bound.context,
                Arc::clone(&self.connections),
            ));
        }
        stop.await;
        accept_loops.abort_all();
        while accept_loops.join_next().await.is_some() {}
        let _ = self.stopping.send(true);
        Draining {
            connections: self.connections,
        }
    }
}

/// The proxy after it stopped accepting: connections still open finish on their own.
pub struct Draining {
    connections: Arc<Gauge>,
}

impl Draining {
    /// Client connections still open.
    pub fn open(&self) -> usize {
        self.connections.open()
    }

    /// Resolves when the last connection has ended.
    pub async fn finished(&self) {
        while self.connections.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn bind_one(listen: &Listen) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(listen.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if listen.addr.is_ipv6() {
        // As in nginx: [::]:3128 and 0.0.0.0:3128 are separate listeners that may coexist.
        socket.set_only_v6(true)?;
    }
    if listen.reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&listen.addr.into())?;
    let backlog = listen
        .backlog
        .unwrap_or(DEFAULT_BACKLOG)
        .min(i32::MAX as u32) as i32;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, context: Arc<ServerContext>, connections: Arc<Gauge>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Past a limit a new client gets a fast 503; open connections are untouched.
                let Some(permit) = connections.try_acquire() else {
                    tokio::spawn(connection::refuse(
                        stream,
                        ProxyError::Overloaded("max_connections"),
                    ));
                    continue;
                };
                let Some(client_permit) = context.per_client.try_acquire(peer.ip()) else {
                    tokio::spawn(connection::refuse(
                        stream,
                        ProxyError::Overloaded("max_connections_per_client"),
                    ));
                    continue;
                };
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    connection::serve(stream, peer, context).await;
                    drop((permit, client_permit));
                });
            }
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                // Out of file descriptors or memory: back off instead of spinning, and keep
                // serving the connections already open.
                log::error!("accept() failed: {error}; pausing this listener for 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Errors that concern one connection that died in the backlog, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}
