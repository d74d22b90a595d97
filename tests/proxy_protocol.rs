//! `listen ... proxy_protocol` through the real binary: PROXY v1 and v2 headers built here by
//! hand (the bytes the specification gives), sent over loopback as a balancer would. The
//! header's source is the client for `allow`/`deny`, `max_connections_per_client` and the
//! access log; bytes after the header are kept; an untrusted peer and every bad header are
//! closed without an answer.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The v2 signature (specification section 2.2).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header naming `client` (IPv4).
fn v1(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    format!(
        "PROXY TCP4 {} 127.0.0.1 {} 3128\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header naming `client` (IPv4, TCP).
fn v2(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let SocketAddr::V4(client) = client else {
        panic!("IPv4 only")
    };
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client.ip().octets());
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&3128u16.to_be_bytes());
    header
}

/// A v2 `PROXY` header naming `client` (IPv6, TCP).
fn v2_v6(client: &str) -> Vec<u8> {
    let SocketAddr::V6(client) = client.parse().unwrap() else {
        panic!("IPv6 only")
    };
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&client.ip().octets());
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&3128u16.to_be_bytes());
    header
}

/// A v2 `LOCAL` header: the balancer's own connection (a health check).
fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    header
}

/// A server whose only listener takes PROXY headers from 127.0.0.1, tunnelling to loopback.
fn config(directives: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0 proxy_protocol;\n    set_real_ip_from 127.0.0.1;\n    \
         proxy_connect;\n    proxy_connect_allow all;\n    destination_allow 127.0.0.0/8;\n\
         {directives}\n    location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

/// Connects, sends `header` and a CONNECT to `target` in one write, and reads the answer head.
async fn connect_as(proxy: SocketAddr, header: &[u8], target: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
    );
    stream.write_all(&bytes).await.unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// Reads until the proxy closes; every byte it sent, which must be none.
async fn closed_without_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy did not close the connection");
    got
}

/// Waits (the writer flushes within a second) until `path` holds at least `count` lines.
async fn lines(path: &Path, count: usize) -> Vec<String> {
    eventually(async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= count).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("{} did not get {count} lines", path.display()))
}

#[tokio::test]
async fn allow_and_deny_judge_the_address_the_header_names() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&config("    allow 127.0.0.9;\n    deny all;"));
    for header in [v1("127.0.0.9:40000"), v2("127.0.0.9:40001")] {
        let (_stream, head) = connect_as(proxy.addr(), &header, echo).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    }
    for header in [v1("127.0.0.8:40000"), v2("192.0.2.9:40001")] {
        let (_stream, head) = connect_as(proxy.addr(), &header, echo).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
    }
}

#[tokio::test]
async fn local_and_unknown_headers_leave_the_balancer_as_the_client() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "log_format who '$remote_addr|$proxy_protocol_addr|$realip_remote_addr';\n{}",
        config(&format!(
            "    allow 127.0.0.1;\n    deny all;\n    access_log {} who;",
            log.display()
        ))
    ));
    for header in [v2_local(), b"PROXY UNKNOWN\r\n".to_vec()] {
        let (stream, head) = connect_as(proxy.addr(), &header, echo).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{header:?}: {head:?}");
        drop(stream);
    }
    // A header naming someone else is denied: the balancer's address is allowed, not theirs.
    let (_stream, head) = connect_as(proxy.addr(), &v1("127.0.0.9:40000"), echo).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
    let mut lines = lines(&log, 3).await;
    lines.sort();
    assert_eq!(
        lines,
        [
            "127.0.0.1|-|127.0.0.1",
            "127.0.0.1|-|127.0.0.1",
            "127.0.0.9|127.0.0.9|127.0.0.1"
        ]
    );
}

#[tokio::test]
async fn the_access_log_names_the_client_and_the_balancer() {
    let origin = Origin::start(|_| ok(b"in")).await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "log_format who '$remote_addr:$remote_port|$proxy_protocol_addr:$proxy_protocol_port|\
         $realip_remote_addr|$status';\n{}",
        config(&format!("    access_log {} who;", log.display()))
    ));
    for header in [v2("192.0.2.7:40000"), v2_v6("[2001:db8::7]:40001")] {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut bytes = header;
        bytes.extend_from_slice(
            format!(
                "GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
                origin.addr
            )
            .as_bytes(),
        );
        stream.write_all(&bytes).await.unwrap();
        let response = read_to_close(&mut stream).await;
        assert_eq!(response.status, 200);
    }
    let mut lines = lines(&log, 2).await;
    lines.sort();
    assert_eq!(
        lines,
        [
            "192.0.2.7:40000|192.0.2.7:40000|127.0.0.1|200",
            "2001:db8::7:40001|2001:db8::7:40001|127.0.0.1|200"
        ]
    );
}

#[tokio::test]
async fn max_connections_per_client_counts_the_header_address() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&config("    max_connections_per_client 1;"));
    let (_first, head) = connect_as(proxy.addr(), &v2("127.0.0.9:40000"), echo).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let (_second, head) = connect_as(proxy.addr(), &v1("127.0.0.9:40001"), echo).await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head:?}");
    // Another client behind the same balancer has a place of its own.
    let (_third, head) = connect_as(proxy.addr(), &v2("127.0.0.10:40000"), echo).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
}

#[tokio::test]
async fn bytes_in_the_header_segment_reach_the_tunnel_exactly() {
    let sink = sink_server().await;
    let proxy = Proxy::start(&config(""));
    for header in [v1("127.0.0.9:40000"), v2("127.0.0.9:40000")] {
        let up = pattern(100_000, 5);
        let mut bytes = header;
        bytes.extend_from_slice(
            format!("CONNECT {sink} HTTP/1.1\r\nHost: {sink}\r\n\r\n").as_bytes(),
        );
        bytes.extend_from_slice(&up);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        // Header, request head and tunnel bytes in a single write.
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let head = read_head(&mut stream).await;
        assert_eq!(head, established());
        let mut down = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut down))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&down),
            format!("{} {:016x}\n", up.len(), Fnv::of(&up).hash)
        );
    }
}

#[tokio::test]
async fn a_peer_outside_set_real_ip_from_is_closed_without_an_answer() {
    let echo = echo_server().await;
    let proxy = Proxy::start(
        &config("").replace("set_real_ip_from 127.0.0.1;", "set_real_ip_from 127.0.0.2;"),
    );
    let mut bytes = v1("127.0.0.9:40000");
    bytes.extend_from_slice(format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes());
    // sluice resets the connection as it accepts it: the reset may come before this task has
    // seen its connect complete, and then the connect itself reports it.
    match TcpStream::connect(proxy.addr()).await {
        Ok(mut stream) => {
            let _ = stream.write_all(&bytes).await;
            assert_eq!(closed_without_answer(&mut stream).await, b"");
        }
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }
    proxy
        .wait_for_log(
            ": closed: a proxy_protocol listener takes connections only from set_real_ip_from",
        )
        .await;
    // The trusted balancer's address is served.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(proxy.addr()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
}

#[tokio::test]
async fn bad_headers_are_closed_without_an_answer() {
    let proxy = Proxy::start(&config("    proxy_protocol_timeout 300ms;"));
    let mut oversized = V2_SIGNATURE.to_vec();
    oversized.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    oversized.extend_from_slice(&[0; 64]);
    let cases: [(&str, Vec<u8>, bool, &str); 5] = [
        (
            "no header",
            b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n".to_vec(),
            false,
            "a malformed PROXY protocol header",
        ),
        (
            "malformed v1",
            b"PROXY TCP4 127.0.0.999 127.0.0.1 1 2\r\n".to_vec(),
            false,
            "a malformed PROXY protocol header",
        ),
        (
            "truncated",
            v2("127.0.0.9:40000")[..20].to_vec(),
            true,
            "closed after 20 bytes of a PROXY protocol header",
        ),
        (
            "oversized",
            oversized,
            false,
            "a PROXY protocol header over 4096 bytes",
        ),
        (
            "timeout",
            b"PROXY TCP4 127.0.0.9".to_vec(),
            false,
            "no whole PROXY protocol header in time",
        ),
    ];
    for (name, bytes, close, reason) in cases {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        if close {
            let _ = stream.shutdown().await;
        }
        assert_eq!(closed_without_answer(&mut stream).await, b"", "{name}");
        proxy.wait_for_log(&format!("closed: {reason}")).await;
    }
}

#[tokio::test]
async fn a_reload_turns_proxy_protocol_on_and_off_on_the_kept_socket() {
    let echo = echo_server().await;
    let with = config("    allow 127.0.0.9;\n    deny all;");
    let without = with.replace(" proxy_protocol;", ";");
    let proxy = Proxy::start(&without);
    let (_plain, head) = connect_as(proxy.addr(), b"", echo).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");

    std::fs::write(proxy.config_path(), &with).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reloaded "), "{outcome}");
    let (_proxied, head) = connect_as(proxy.addr(), &v1("127.0.0.9:40000"), echo).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");

    std::fs::write(proxy.config_path(), &without).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reloaded "), "{outcome}");
    let (_plain, head) = connect_as(proxy.addr(), b"", echo).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
}

#[tokio::test]
async fn auth_failures_are_logged_under_the_header_address() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, "pat:{PLAIN}secret\n").unwrap();
    let proxy = Proxy::start(&config(&format!(
        "    auth_basic \"proxy\";\n    auth_basic_user_file {};",
        users.display()
    )));
    let (_stream, head) = connect_as(proxy.addr(), &v2("192.0.2.7:40000"), echo).await;
    assert!(head.starts_with("HTTP/1.1 407 "), "{head:?}");
    proxy
        .wait_for_log(&format!("192.0.2.7:40000 \"CONNECT {echo}\": 407"))
        .await;
}
