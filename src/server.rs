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
use tokio::task::JoinSet;

use crate::config::{Config, Listen, Origin};
use crate::connection::{self, ServerContext};
use crate::forward::Pool;
use crate::request::Limits;
use crate::resolve::Resolver;

/// The listen backlog when `listen ... backlog=N` does not say; the kernel caps it at
/// `net.core.somaxconn`.
const DEFAULT_BACKLOG: u32 = 4096;

/// All listeners, bound and ready to accept.
pub struct Proxy {
    listeners: Vec<Bound>,
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
        let mut listeners = Vec::new();
        for server in &config.servers {
            let resolver = Resolver::new(server.resolver.as_ref(), server.resolver_timeout)
                .map_err(|e| format!("{e} (server in {})", server.origin))?;
            let context = Arc::new(ServerContext {
                config: server.clone(),
                resolver,
                limits: Limits::default(),
                pool: Pool::default(),
            });
            for listen in &server.listen {
                let socket = bind_one(listen).map_err(|e| {
                    format!(
                        "bind() to {} failed ({e}), listen in {}",
                        listen.addr, listen.origin
                    )
                })?;
                listeners.push(Bound {
                    listener: socket,
                    origin: listen.origin.clone(),
                    context: Arc::clone(&context),
                });
            }
        }
        Ok(Proxy { listeners })
    }

    /// Each bound address (a port of 0 resolved to the real one) and the `listen` it came from.
    pub fn listening(&self) -> impl Iterator<Item = (SocketAddr, &Origin)> {
        self.listeners
            .iter()
            .filter_map(|bound| Some((bound.listener.local_addr().ok()?, &bound.origin)))
    }

    /// Accepts connections on every listener until the future is dropped.
    pub async fn serve(self) {
        let mut accept_loops = JoinSet::new();
        for bound in self.listeners {
            accept_loops.spawn(accept_loop(bound.listener, bound.context));
        }
        while accept_loops.join_next().await.is_some() {}
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

async fn accept_loop(listener: TcpListener, context: Arc<ServerContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection::serve(stream, peer, Arc::clone(&context)));
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
