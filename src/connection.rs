//! One client connection, from its first byte to its close.
//!
//! Read the head; if it is a CONNECT this server may serve, resolve and dial the target, answer
//! `200`, and hand both sockets to the tunnel. Any failure before the `200` becomes one error
//! response, written here and nowhere else, followed by a close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{ConnectVar, Server};
use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::request::{Head, Limits, ReadError, read_head};
use crate::resolve::Resolver;
use crate::target::Target;
use crate::tunnel;

/// Everything a connection accepted by one `server` block needs.
pub struct ServerContext {
    pub config: Server,
    pub resolver: Resolver,
    pub limits: Limits,
}

/// Serves one client connection to its end.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: Arc<ServerContext>) {
    let _ = client.set_nodelay(true);
    let (head, early) =
        match read_head(&mut client, ctx.limits, ctx.config.client_header_timeout).await {
            Ok(read) => read,
            Err(ReadError::Closed) => return,
            Err(ReadError::Refused(error)) => {
                log::debug!("{peer}: {error}");
                return refuse(client, &error).await;
            }
        };
    let started = Instant::now();
    let (target, upstream) = match open_tunnel(&head, &ctx).await {
        Ok(opened) => opened,
        Err(error) => {
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
            return refuse(client, &error).await;
        }
    };
    let upstream_addr = upstream.peer_addr().ok();
    let response = established_response(&ctx.config, &target, upstream_addr);
    let sent = tokio::time::timeout(
        ctx.config.data_timeout,
        client.write_all(response.as_bytes()),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let outcome = tunnel::run(client, upstream, early, ctx.config.data_timeout).await;
    log::debug!(
        "{peer} tunnel to {target} ({}) ended after {:?}: {} bytes up, {} down, {:?}",
        upstream_addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
        started.elapsed(),
        outcome.up,
        outcome.down,
        outcome.end,
    );
}

/// Checks the request against this server's policy, then resolves and dials its target.
async fn open_tunnel(head: &Head, ctx: &ServerContext) -> Result<(Target, TcpStream), ProxyError> {
    let config = &ctx.config;
    if head.method != "CONNECT" {
        return Err(not_connect(head));
    }
    if !config.proxy_connect {
        return Err(ProxyError::ConnectDisabled);
    }
    let target = Target::parse_authority(&head.target)?;
    if !config.connect_ports.allows(target.port) {
        return Err(ProxyError::PortNotAllowed(target.port));
    }
    let addrs = match config.connect_address {
        Some((ip, port)) => vec![SocketAddr::new(ip, port.unwrap_or(target.port))],
        None => ctx.resolver.resolve(&target).await?,
    };
    let options = DialOptions {
        timeout: config.connect_timeout,
        bind: config.connect_bind,
    };
    let upstream = dial(&addrs, &target.to_string(), options).await?;
    Ok((target, upstream))
}

/// The answer to anything but CONNECT, until plain-HTTP forwarding exists.
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

/// Writes the error response and closes. Bytes the client already sent are drained for a
/// moment first: closing with unread data makes the kernel send a reset, which can destroy the
/// response before the client reads it (nginx's "lingering close").
async fn refuse(mut client: TcpStream, error: &ProxyError) {
    let response = error.response();
    let written = tokio::time::timeout(LINGER, client.write_all(&response)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
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
