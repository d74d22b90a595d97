//! The status listener (`status_listen`): `GET /metrics` for Prometheus, `GET /healthz` for
//! health checks, and the live view of open connections, `GET /status` (HTML) and
//! `GET /status.json`, for the clients `status_allow` / `status_deny` let see it (loopback
//! only by default): it names clients and where they go. Plain HTTP/1.1, one request per
//! connection, and never a proxy: a CONNECT or an absolute-form request gets an error like
//! any other unknown request.

mod page;
pub mod settings;
mod view;

pub use view::publish;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

use crate::metrics;
use crate::relay::write_all;
use crate::request::{Head, Limits, ReadError, read_head};
use crate::stream::Conn;
use settings::StatusListen;

/// Status connections served at once. A scraper or a health check needs one, for a moment.
const MAX_CONNECTIONS: usize = 64;
/// Time allowed to send the request, and to take the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the status listener. Must run inside a tokio runtime. The error reads like a
/// `listen` one: `bind() to 127.0.0.1:9145 failed (Address in use), status_listen in f:3`.
pub fn bind(status: &StatusListen) -> Result<TcpListener, String> {
    let bound = (|| {
        let socket = match status.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(status.addr)?;
        socket.listen(128)
    })();
    bound.map_err(|e| {
        format!(
            "bind() to {} failed ({e}), status_listen in {}",
            status.addr, status.origin
        )
    })
}

/// Serves the status listener until the task is dropped. Each connection runs in its own
/// task. When `MAX_CONNECTIONS` are open, the oldest is closed to make room: a health check
/// is answered in a moment, so the oldest is the one most likely idle, and idle connections
/// can never lock a load balancer's check out (refusing the newest would let them).
pub async fn serve(listener: TcpListener) {
    let mut open: VecDeque<AbortHandle> = VecDeque::with_capacity(MAX_CONNECTIONS);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: the proxy's own listeners matter more.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        open.retain(|task| !task.is_finished());
        if open.len() >= MAX_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
        }
        open.push_back(tokio::spawn(answer(stream)).abort_handle());
    }
}

async fn answer(stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let mut conn = Conn::new(stream);
    let response = match read_head(&mut conn, Limits::default(), TIMEOUT, TIMEOUT).await {
        Ok(head) => respond(&head, peer.ip()),
        Err(ReadError::Refused(error)) => error.response(),
        Err(ReadError::Closed) => return,
    };
    if write_all(&mut conn.stream, &response, TIMEOUT)
        .await
        .is_ok()
    {
        let _ = conn.stream.shutdown().await;
    }
}

/// The whole response to one request from `viewer`.
fn respond(head: &Head, viewer: IpAddr) -> Vec<u8> {
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));
    let live = matches!(path, "/status" | "/status.json");
    let known = live || matches!(path, "/metrics" | "/healthz");
    let body_wanted = head.method != "HEAD";
    match head.method.as_str() {
        "GET" | "HEAD" if live => {
            if !view::loaded().viewers.allows(viewer) {
                log::debug!("status: {viewer} refused {path} (status_allow / status_deny)");
                return response(
                    "403 Forbidden",
                    "text/plain",
                    b"forbidden: status_allow does not list this address\n",
                    body_wanted,
                );
            }
            let query = match view::Query::parse(query) {
                Ok(query) => query,
                Err(why) => {
                    let body = format!("bad query: {why}\n");
                    return response(
                        "400 Bad Request",
                        "text/plain",
                        body.as_bytes(),
                        body_wanted,
                    );
                }
            };
            let report = view::Report::take(query);
            if path == "/status.json" {
                response(
                    "200 OK",
                    "application/json",
                    report.json().as_bytes(),
                    body_wanted,
                )
            } else {
                response(
                    "200 OK",
                    "text/html; charset=utf-8",
                    page::render(&report).as_bytes(),
                    body_wanted,
                )
            }
        }
        "GET" | "HEAD" if path == "/metrics" => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::get().render().as_bytes(),
            body_wanted,
        ),
        "GET" | "HEAD" if path == "/healthz" => {
            response("200 OK", "text/plain", b"ok\n", body_wanted)
        }
        "CONNECT" => response(
            "405 Method Not Allowed",
            "text/plain",
            b"this is sluice's status listener, not a proxy\n",
            true,
        ),
        _ if known => response(
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n",
            true,
        ),
        _ => response(
            "404 Not Found",
            "text/plain",
            b"not found: try /metrics, /healthz, /status or /status.json\n",
            body_wanted,
        ),
    }
}

fn response(status: &str, content_type: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_head;
    use std::net::Ipv4Addr;

    fn status_of(request: &str) -> String {
        let head = parse_head(request.as_bytes(), Limits::default()).unwrap();
        let text = String::from_utf8(respond(&head, IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        text.lines().next().unwrap().to_string()
    }

    #[test]
    fn routes() {
        assert_eq!(
            status_of("GET /healthz HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("GET /metrics?x HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("HEAD /metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("POST /metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            status_of("CONNECT example.org:443 HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            status_of("GET http://example.org/metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 404 Not Found"
        );
    }
}
