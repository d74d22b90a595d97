//! One client connection, from its first byte to its close.
//!
//! Read a head. A CONNECT this server may serve is resolved and dialled, answered `200`, and
//! the connection becomes a tunnel. An absolute-form request is forwarded, and the connection
//! reads its next request if both sides allow it. Any failure before the client got an answer
//! becomes one error response, written here and nowhere else, followed by a close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access::Auth;
use crate::config::{ConnectVar, Server};
use crate::dial::DialOptions;
use crate::error::ProxyError;
use crate::forward::{self, Next, Pool};
use crate::limits::{PerClient, Places};
use crate::request::{Head, Limits, ReadError, read_head};
use crate::resolve::Resolver;
use crate::stream::{Conn, reset};
use crate::target::Target;
use crate::tunnel::{self, Early};
use crate::upstream;

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
    pub own_listeners: Arc<[SocketAddr]>,
    /// Connections open per client address.
    pub per_client: Arc<PerClient>,
    /// Becomes true when the proxy stops: connections waiting for a request close.
    pub stopping: watch::Receiver<bool>,
}

impl ServerContext {
    /// Resolves once the proxy is stopping.
    async fn stopping(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|&stopping| stopping).await;
    }

    /// Whether any location forwards plain-HTTP requests.
    fn forwards(&self) -> bool {
        self.config.locations.iter().any(|l| l.proxy_pass)
    }
}

/// Serves one client connection to its end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Arc<ServerContext>, places: Places) {
    let _ = stream.set_nodelay(true);
    let mut client = Conn::new(stream);
    let config = &ctx.config;
    let mut idle = config.client_header_timeout;
    loop {
        // A stopping proxy lets requests and tunnels finish, but waits for no new request.
        let read = tokio::select! {
            read = read_head(&mut client, ctx.limits, idle, config.client_header_timeout) => read,
            () = ctx.stopping() => return,
        };
        let head = match read {
            Ok(head) => head,
            Err(ReadError::Closed) => return,
            Err(ReadError::Refused(error)) => {
                log::debug!("{peer}: {error}");
                return refuse(client.stream, error).await;
            }
        };
        if let Err(error) = admit(&head, peer, &ctx).await {
            return refuse_logged(client.stream, peer, &head, error).await;
        }
        if head.method == "CONNECT" {
            return connect(client, peer, &head, &ctx, places).await;
        }
        if !ctx.forwards() {
            return refuse_logged(client.stream, peer, &head, not_connect(&head)).await;
        }
        match forward::forward(&mut client, &head, peer, &ctx).await {
            Ok(Next::KeepAlive) => idle = config.keepalive_timeout,
            Ok(Next::Close) => return linger_close(client.stream).await,
            Ok(Next::Abort) => return reset(&client.stream),
            Ok(Next::Upgrade {
                upstream,
                early_down,
            }) => {
                let early = Early {
                    up: client.buf.take(),
                    down: early_down,
                };
                let outcome =
                    tunnel::run(client.stream, upstream, early, config.data_timeout).await;
                log::debug!(
                    "{peer} upgraded connection for {} ended: {outcome:?}",
                    head.target
                );
                return;
            }
            Err(error) => return refuse_logged(client.stream, peer, &head, error).await,
        }
    }
}

/// Who may use this server: `allow`/`deny` first, then proxy authentication, as nginx orders
/// its access and auth phases. Nothing is resolved or dialled for a refused client.
async fn admit(head: &Head, peer: SocketAddr, ctx: &ServerContext) -> Result<(), ProxyError> {
    if ctx.config.clients.check(peer.ip()).is_err() {
        return Err(ProxyError::ClientDenied);
    }
    if let Some(auth) = &ctx.auth {
        let Some(user) = auth.check(head.header("proxy-authorization")).await else {
            return Err(ProxyError::AuthRequired {
                realm: auth.realm.clone(),
            });
        };
        log::debug!("{peer} authenticated as \"{user}\"");
    }
    Ok(())
}

/// Serves a CONNECT: policy, resolve, dial, `200`, then hands the two sockets to a tunnel task
/// of their own. That task holds only what a tunnel needs, while this one (sized for the
/// largest thing a connection may do) ends: an idle tunnel costs a few hundred bytes.
async fn connect(
    mut client: Conn,
    peer: SocketAddr,
    head: &Head,
    ctx: &ServerContext,
    places: Places,
) {
    let started = Instant::now();
    let (target, upstream) = match open_tunnel(head, ctx).await {
        Ok(opened) => opened,
        Err(error) => return refuse_logged(client.stream, peer, head, error).await,
    };
    let upstream_addr = upstream.peer_addr().ok();
    let response = established_response(&ctx.config, &target, upstream_addr);
    let sent = tokio::time::timeout(
        ctx.config.data_timeout,
        client.stream.write_all(response.as_bytes()),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let early = Early {
        up: client.buf.take(),
        down: Vec::new(),
    };
    let idle = ctx.config.data_timeout;
    tokio::spawn(async move {
        let outcome = tunnel::run(client.stream, upstream, early, idle).await;
        log::debug!(
            "{peer} tunnel to {target} ({}) ended after {:?}: {} bytes up, {} down, {:?}",
            upstream_addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
            started.elapsed(),
            outcome.up,
            outcome.down,
            outcome.end,
        );
        drop(places);
    });
}

/// Checks a CONNECT against this server's policy, then resolves and dials its target.
async fn open_tunnel(head: &Head, ctx: &ServerContext) -> Result<(Target, TcpStream), ProxyError> {
    let config = &ctx.config;
    if !config.proxy_connect {
        return Err(ProxyError::ConnectDisabled);
    }
    let target = Target::parse_authority(&head.target)?;
    if !config.connect_ports.allows(target.port) {
        return Err(ProxyError::PortNotAllowed(target.port));
    }
    let options = DialOptions {
        timeout: config.connect_timeout,
        bind: config.connect_bind,
    };
    let upstream = upstream::connect(ctx, &target, config.connect_address, options).await?;
    Ok((target, upstream))
}

/// The answer to anything but CONNECT on a server that does not forward.
fn not_connect(head: &Head) -> ProxyError {
    if head.target.starts_with('/') || head.target == "*" {
        ProxyError::BadRequest(
            "this is a forward proxy: it serves only CONNECT requests (use it as an HTTPS proxy)"
                .into(),
        )
    } else {
        ProxyError::MethodNotAllowed("CONNECT")
    }
}

/// The head that tells the client its tunnel is open.
fn established_response(config: &Server, target: &Target, upstream: Option<SocketAddr>) -> String {
    let Some(template) = &config.connect_response else {
        return format!(
            "HTTP/1.1 200 Connection Established\r\nProxy-agent: {}\r\n\r\n",
            crate::AGENT
        );
    };
    let mut response = String::new();
    template.render_into(&mut response, |var, out| match var {
        ConnectVar::Host => out.push_str(&target.host.to_string()),
        ConnectVar::Port => out.push_str(&target.port.to_string()),
        ConnectVar::Addr => {
            if let Some(addr) = upstream {
                out.push_str(&addr.to_string());
            }
        }
    });
    response
}

/// How long a refused client may keep sending before the connection is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it is read and thrown away.
const LINGER_BYTES: usize = 64 * 1024;

/// Logs why a request was refused (server-side failures louder) and refuses it.
async fn refuse_logged(client: TcpStream, peer: SocketAddr, head: &Head, error: ProxyError) {
    let (status, _) = error.status();
    if status >= 500 {
        log::warn!(
            "{peer} \"{} {}\": {status}: {error}",
            head.method,
            head.target
        );
    } else {
        log::debug!(
            "{peer} \"{} {}\": {status}: {error}",
            head.method,
            head.target
        );
    }
    refuse(client, error).await;
}

/// Writes the error response and closes.
pub async fn refuse(mut client: TcpStream, error: ProxyError) {
    let written = tokio::time::timeout(LINGER, client.write_all(&error.response())).await;
    if matches!(written, Ok(Ok(()))) {
        linger_close(client).await;
    }
}

/// Closes after a complete answer. Bytes the client already sent are drained for a moment
/// first: closing with unread data makes the kernel send a reset, which can destroy the answer
/// before the client reads it (nginx's "lingering close").
async fn linger_close(mut client: TcpStream) {
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
