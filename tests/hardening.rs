//! What sluice refuses from hostile clients and origins, through the real binary over
//! loopback: no second run of a non-idempotent request, no underscored fields smuggled to an
//! origin, no response it cannot frame, no CONNECT with a body, no waiting on bytes that can
//! never become a request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy that forwards plain HTTP (and tunnels), with `extra` directives in its server.
fn forwarding_proxy(extra: &str) -> Proxy {
    Proxy::start(&open_config(&format!(
        "{extra}\n    location / {{ proxy_pass http://$http_host$request_uri; }}"
    )))
}

/// Reads one response on a kept-alive client connection, within a bounded wait.
async fn next_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(15), read_response(stream, buf, false))
        .await
        .expect("a response in time")
        .expect("a response")
}

/// An origin that answers the first request on its first connection and keeps it open, then
/// reads the second request on that connection and closes without answering; on every later
/// connection it answers each request. Returns its address and the request lines it read.
async fn origin_closing_after_reading() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let log = Arc::clone(&seen);
    let addr = serve("127.0.0.1:0", move |mut stream| {
        let (log, first) = (
            Arc::clone(&log),
            connections.fetch_add(1, Ordering::SeqCst) == 0,
        );
        async move {
            let mut answered = 0;
            while let Some(head) = read_request_head(&mut stream).await {
                let line = head.lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push(line);
                if first && answered == 1 {
                    return; // read it, then closed without a word
                }
                if stream.write_all(&ok(b"done")).await.is_err() {
                    return;
                }
                answered += 1;
            }
        }
    })
    .await;
    (addr, seen)
}

/// Sends a GET (answered, its connection pooled), then `second` on the same client
/// connection: it goes out on the pooled upstream connection, which the origin closes after
/// reading it. Returns the status of the second answer and the request lines the origin read.
async fn second_request_on_a_connection_the_origin_drops(second: &str) -> (u16, Vec<String>) {
    let (origin, seen) = origin_closing_after_reading().await;
    let proxy = forwarding_proxy("");
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    let first = format!("GET http://{origin}/first HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    client.write_all(first.as_bytes()).await.unwrap();
    assert_eq!(next_response(&mut client, &mut buf).await.0, 200);
    let second = format!("{second} http://{origin}/second HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    client.write_all(second.as_bytes()).await.unwrap();
    let (status, _, _) = next_response(&mut client, &mut buf).await;
    let seen = seen.lock().unwrap().clone();
    (status, seen)
}

#[tokio::test]
async fn a_post_the_origin_read_and_dropped_is_never_sent_again() {
    let (status, seen) = second_request_on_a_connection_the_origin_drops("POST").await;
    let posts = seen.iter().filter(|l| l.starts_with("POST ")).count();
    assert_eq!(posts, 1, "the origin ran the POST {posts} times: {seen:?}");
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_get_the_origin_read_and_dropped_is_retried_on_a_fresh_connection() {
    let (status, seen) = second_request_on_a_connection_the_origin_drops("GET").await;
    assert_eq!(status, 200, "{seen:?}");
    let gets = seen.iter().filter(|l| l.contains("/second")).count();
    assert_eq!(gets, 2, "{seen:?}");
}

/// Sends a GET with underscored fields through a proxy with `extra` and returns the head the
/// origin received.
async fn forwarded_head_with_underscores(extra: &str) -> Recorded {
    let origin = Origin::start(|_| ok(b"")).await;
    let proxy = forwarding_proxy(extra);
    let addr = origin.addr;
    let request = format!(
        "GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\nX_Custom: a\r\nContent_Length: 5\r\n\
         Transfer_Encoding: chunked\r\nX-Plain: b\r\n\r\n"
    );
    let response = exchange_keeping(proxy.addr(), request.as_bytes()).await;
    assert_eq!(response, 200);
    origin.recorded().remove(0)
}

/// Sends one request and returns the status of its answer.
async fn exchange_keeping(proxy: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(request).await.unwrap();
    next_response(&mut client, &mut Vec::new()).await.0
}

#[tokio::test]
async fn fields_named_with_underscores_are_dropped_by_default() {
    let got = forwarded_head_with_underscores("").await;
    for name in ["X_Custom", "Content_Length", "Transfer_Encoding"] {
        assert!(
            !got.head.contains(name),
            "{name} reached the origin: {}",
            got.head
        );
    }
    assert_eq!(got.header("x-plain"), Some("b"));
}

#[tokio::test]
async fn underscores_in_headers_on_keeps_them() {
    let got = forwarded_head_with_underscores("    underscores_in_headers on;").await;
    assert_eq!(got.header("x_custom"), Some("a"), "{}", got.head);
    assert_eq!(got.header("content_length"), Some("5"), "{}", got.head);
    assert_eq!(got.header("x-plain"), Some("b"));
}

/// An origin that answers every connection with these raw bytes, then closes.
async fn raw_origin(response: &'static [u8]) -> std::net::SocketAddr {
    serve("127.0.0.1:0", move |mut stream| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream.write_all(response).await;
        }
    })
    .await
}

#[tokio::test]
async fn origin_statuses_outside_100_to_599_are_502() {
    let proxy = forwarding_proxy("");
    for response in [
        &b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nhi"[..],
        b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 999 Beyond\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let origin = raw_origin(response).await;
        let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        let answer = exchange(proxy.addr(), request.as_bytes()).await;
        assert_eq!(
            answer.status,
            502,
            "{:?} became {:?}",
            String::from_utf8_lossy(response),
            answer.head
        );
        answer.assert_well_formed();
    }
}

#[tokio::test]
async fn origin_transfer_codings_other_than_chunked_alone_are_502() {
    let proxy = forwarding_proxy("");
    for response in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot-gzip"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let origin = raw_origin(response).await;
        let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        let answer = exchange(proxy.addr(), request.as_bytes()).await;
        assert_eq!(
            answer.status,
            502,
            "{:?} became {:?}",
            String::from_utf8_lossy(response),
            answer.head
        );
        answer.assert_well_formed();
    }
}

/// Sends a raw CONNECT head and returns the status of the answer.
async fn connect_status(proxy: &Proxy, request: &str) -> u16 {
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?} for {request:?}"))
}

#[tokio::test]
async fn a_connect_with_a_body_is_400() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    for fields in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Transfer-Encoding: gzip\r\n\r\n",
    ] {
        let request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n{fields}");
        assert_eq!(connect_status(&proxy, &request).await, 400, "{fields:?}");
    }
    let request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(connect_status(&proxy, &request).await, 200);
}

#[tokio::test]
async fn a_connect_authority_with_an_empty_port_is_400() {
    let proxy = Proxy::start(&open_config(""));
    for authority in ["127.0.0.1:", "[::1]:", "localhost:"] {
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let answer = exchange(proxy.addr(), request.as_bytes()).await;
        assert_eq!(answer.status, 400, "{authority}: {:?}", answer.head);
        answer.assert_well_formed();
    }
}

/// The start of a TLS 1.2 ClientHello record, as a browser sends it to an `https://` port.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend((0u8..32).map(|i| i.wrapping_mul(7) | 0x20)); // random, no CR or LF
    hello.push(0); // no session id
    hello.extend([0x00, 0x04, 0xc0, 0x2f, 0x13, 0x01]); // two cipher suites
    hello.extend([0x01, 0x00]); // null compression
    hello.extend([0x00, 0x00]); // no extensions
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn bytes_that_cannot_start_a_request_get_400_without_waiting_for_the_header_timeout() {
    // The header timeout is long: a 400 within the bounded wait below comes from the first
    // bytes, not from the timer.
    let proxy = forwarding_proxy("    client_header_timeout 30s;");
    for garbage in [
        client_hello(),
        b"\0\0\0\0".to_vec(),
        b"\x80\x03binary noise".to_vec(),
        b"\x1b[2J".to_vec(),
        b"\r\n\x01GET".to_vec(),
    ] {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(&garbage).await.unwrap();
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "no answer to {garbage:?} within the bound");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{garbage:?} got {text:?}"
        );
    }
}

#[tokio::test]
async fn empty_lines_before_a_request_line_are_skipped() {
    let origin = Origin::start(|_| ok(b"fine")).await;
    let proxy = forwarding_proxy("    client_header_timeout 30s;");
    let addr = origin.addr;
    for prefix in ["\r\n", "\r\n\r\n", "\r\n\r\n\r\n"] {
        let request = format!("{prefix}GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        assert_eq!(
            exchange_keeping(proxy.addr(), request.as_bytes()).await,
            200,
            "{prefix:?}"
        );
    }
}
