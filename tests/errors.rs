//! Every refusal through the real binary: the right status, a complete response, a close.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn status_of(proxy: SocketAddr, request: &str) -> ErrorResponse {
    let response = exchange(proxy, request.as_bytes()).await;
    response.assert_well_formed();
    response
}

#[tokio::test]
async fn malformed_connect_targets_are_400() {
    let proxy = Proxy::start(&open_config(""));
    for target in [
        "example.org",
        "example.org:",
        ":443",
        "example.org:0",
        "example.org:65536",
        "example.org:https",
        "example.org:443/path",
        "http://example.org:443",
        "[::1]",
        "::1:443",
    ] {
        let response = status_of(proxy.addr(), &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
        assert_eq!(response.status, 400, "CONNECT {target}: {}", response.head);
        assert!(
            response.body.contains("invalid CONNECT target"),
            "{}",
            response.body
        );
    }
}

#[tokio::test]
async fn malformed_heads_are_400() {
    let proxy = Proxy::start(&open_config(""));
    for request in [
        "CONNECT\r\n\r\n",
        "CONNECT a:443 HTTP/9.9\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\nHost: a\n\n\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost : a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nBad\0Name: a\r\n\r\n",
        "\u{1}\u{2}\u{3}\r\n\r\n",
    ] {
        let response = status_of(proxy.addr(), request).await;
        assert_eq!(response.status, 400, "{request:?}: {}", response.head);
    }
}

#[tokio::test]
async fn a_port_outside_proxy_connect_allow_is_403() {
    let echo = echo_server().await;
    let proxy = Proxy::start(
        "server { listen 127.0.0.1:0; proxy_connect; proxy_connect_allow 443 1000-2000; }",
    );
    let response = status_of(proxy.addr(), &format!("CONNECT {echo} HTTP/1.1\r\n\r\n")).await;
    assert_eq!(response.status, 403);
    assert_eq!(
        response.body,
        format!(
            "403 Forbidden: CONNECT to port {} is not allowed\n",
            echo.port()
        )
    );
}

#[tokio::test]
async fn requests_other_than_connect_are_405_or_400() {
    let proxy = Proxy::start(&open_config(""));
    let response = status_of(
        proxy.addr(),
        "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 405);
    assert!(
        response.head.contains("\r\nAllow: CONNECT"),
        "{}",
        response.head
    );
    assert!(response.body.contains("CONNECT"));
    let response = status_of(proxy.addr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 400);
    assert!(response.body.contains("CONNECT"));
}

#[tokio::test]
async fn connect_on_a_server_without_proxy_connect_is_405() {
    let proxy = Proxy::start("server { listen 127.0.0.1:0; }");
    let response = status_of(proxy.addr(), "CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    let closed = ClosedPort::new();
    let port = closed.addr.port();
    let proxy = Proxy::start(&open_config(""));
    let response = status_of(
        proxy.addr(),
        &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert_eq!(response.status, 502);
    assert!(
        response.body.contains("connection refused"),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_name_server_that_never_answers_is_504_within_resolver_timeout() {
    // A UDP socket that receives queries and never answers them.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap();
    let proxy = Proxy::start(&open_config(&format!(
        "resolver {dns}; resolver_timeout 1s;"
    )));
    let started = Instant::now();
    let response = status_of(proxy.addr(), "CONNECT silent.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 504);
    assert!(
        response.body.contains("\"silent.test\""),
        "{}",
        response.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(1) + LATENESS,
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
}

/// A listener whose accept queue is full drops further SYNs, so a connect to it hangs: a
/// connect timeout without leaving loopback. Returns `None` if this kernel answers anyway.
async fn unresponsive_listener() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .ok()?;
    socket.listen(0).ok()?;
    let addr = socket.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            // A connect that hangs proves the queue is full.
            Err(_) => return Some((socket, fillers, addr)),
            Ok(Err(_)) => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_connect_that_never_completes_is_504() {
    let Some((_socket, _fillers, target)) = unresponsive_listener().await else {
        eprintln!("SKIPPED: could not make a listener that ignores SYNs");
        return;
    };
    let proxy = Proxy::start(&open_config("proxy_connect_connect_timeout 1s;"));
    let started = Instant::now();
    let response = status_of(proxy.addr(), &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
    assert_eq!(response.status, 504, "{}", response.body);
    assert!(
        started.elapsed() < Duration::from_secs(1) + LATENESS,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_request_line_over_8k_is_414() {
    let proxy = Proxy::start(&open_config(""));
    let request = format!("CONNECT {}:443 HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let response = status_of(proxy.addr(), &request).await;
    assert_eq!(response.status, 414);
}

#[tokio::test]
async fn a_head_over_32k_is_431() {
    let proxy = Proxy::start(&open_config(""));
    let mut request = String::from("CONNECT example.org:443 HTTP/1.1\r\n");
    for i in 0..40 {
        request.push_str(&format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)));
    }
    request.push_str("\r\n");
    let response = status_of(proxy.addr(), &request).await;
    assert_eq!(response.status, 431);
}

#[tokio::test]
async fn an_endless_head_is_cut_off_at_the_limit() {
    // The client keeps sending header lines forever; the proxy must answer and close, not
    // buffer without bound.
    let proxy = Proxy::start(&open_config(""));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"CONNECT example.org:443 HTTP/1.1\r\n")
        .await
        .unwrap();
    let line = format!("X-Forever: {}\r\n", "c".repeat(100));
    for _ in 0..2000 {
        if stream.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let response = read_to_close(&mut stream).await;
    assert_eq!(response.status, 431);
}

#[tokio::test]
async fn a_trickling_head_gets_408_after_client_header_timeout() {
    let proxy = Proxy::start(&open_config("client_header_timeout 1s;"));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"CONNECT example.org:443 HTTP/1.1\r\n")
        .await
        .unwrap();
    // Keep trickling: the limit is on the whole head, not between bytes.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stream.write_all(b"X: y\r\n").await;
    }
    let response = read_to_close(&mut stream).await;
    assert_eq!(response.status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(1) + LATENESS,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_without_an_answer() {
    let proxy = Proxy::start(&open_config("client_header_timeout 1s;"));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent client was never closed");
    assert!(buf.is_empty(), "a client that sent nothing got {buf:?}");
}

#[tokio::test]
async fn a_refused_client_gets_its_answer_even_after_sending_more() {
    // Bytes after a refused CONNECT head are still unread when the proxy closes; without a
    // lingering close the kernel would reset the connection and could destroy the answer.
    let proxy = Proxy::start("server { listen 127.0.0.1:0; proxy_connect; }");
    let mut request = b"CONNECT 127.0.0.1:25 HTTP/1.1\r\n\r\n".to_vec();
    request.extend_from_slice(&pattern(200 * 1024, 5));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = stream.split();
    let (_, response) = tokio::join!(w.write_all(&request), async {
        let mut head = vec![0; 12];
        r.read_exact(&mut head).await.map(|_| head)
    });
    assert_eq!(&response.unwrap(), b"HTTP/1.1 403");
}

#[tokio::test]
async fn the_proxy_keeps_serving_after_every_kind_of_refusal() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    for request in [
        "garbage\r\n\r\n",
        "CONNECT x HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        exchange(proxy.addr(), request.as_bytes()).await;
    }
    // Clients that vanish mid-head.
    for _ in 0..10 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = stream.write_all(b"CONNECT 127.0.0.1:").await;
    }
    tunnel(proxy.addr(), &echo.to_string()).await;
}
