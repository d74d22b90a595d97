//! Plain-HTTP forwarding through the real binary, against loopback origins that record what
//! they receive: the rewritten head, header hygiene, bodies in every framing, keep-alive and
//! upstream reuse, 100-continue, upgrades, smuggling refusals, errors, real clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy that forwards plain HTTP (and tunnels), with `extra` directives in its server.
fn forwarding_proxy(extra: &str) -> Proxy {
    Proxy::start(&open_config(&format!(
        "{extra}\n    location / {{ proxy_pass http://$http_host$request_uri; }}"
    )))
}

/// Sends raw request bytes on a fresh connection and reads one response.
async fn send(proxy: &Proxy, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    read_response(&mut stream, &mut buf, false)
        .await
        .expect("a response")
}

#[tokio::test]
async fn the_origin_gets_origin_form_and_the_uri_host() {
    let origin = Origin::start(|_| ok(b"hi")).await;
    let proxy = forwarding_proxy("");
    let request = format!(
        "GET http://{}/a/b?c=d HTTP/1.1\r\nHost: somewhere-else.test\r\nUser-Agent: t\r\n\r\n",
        origin.addr
    );
    let (status, head, body) = send(&proxy, request.as_bytes()).await;
    assert_eq!((status, body.as_slice()), (200, &b"hi"[..]));
    assert!(head.contains("\r\nVia: 1.1 sluice\r\n"), "{head}");
    let got = &origin.recorded()[0];
    assert!(
        got.head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"),
        "{}",
        got.head
    );
    // RFC 9112 §3.2.2: the URI's authority replaces the Host the client wrote.
    assert_eq!(got.header("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(got.head.matches("Host:").count(), 1, "{}", got.head);
    assert_eq!(got.header("user-agent"), Some("t"));
    assert_eq!(got.header("via"), Some("1.1 sluice"));
}

#[tokio::test]
async fn hop_by_hop_fields_never_cross_in_either_direction() {
    let origin = Origin::start(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Authenticate: Basic realm=x\r\nTrailer: X\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
          X-End: kept\r\n\r\nok"
            .to_vec()
    })
    .await;
    let proxy = forwarding_proxy("");
    let request = format!(
        "GET http://{}/ HTTP/1.1\r\nConnection: keep-alive, X-Down-Hop\r\nX-Down-Hop: 1\r\nProxy-Connection: keep-alive\r\n\
         Keep-Alive: 300\r\nProxy-Authorization: Basic dTpw\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nX-End: kept\r\n\r\n",
        origin.addr
    );
    let (status, head, _) = send(&proxy, request.as_bytes()).await;
    assert_eq!(status, 200);
    let got = &origin.recorded()[0];
    for field in [
        "connection",
        "x-down-hop",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            got.header(field).is_none(),
            "{field} reached the origin:\n{}",
            got.head
        );
    }
    assert_eq!(got.header("x-end"), Some("kept"));
    let lower = head.to_ascii_lowercase();
    for field in [
        "x-up-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(
            !lower.contains(&format!("\r\n{field}:")),
            "{field} reached the client:\n{head}"
        );
    }
    assert!(head.contains("\r\nX-End: kept\r\n"), "{head}");
}

#[tokio::test]
async fn proxy_set_header_and_proxy_via() {
    let origin = Origin::start(|_| ok(b"")).await;
    let proxy = Proxy::start(&open_config(
        "proxy_via off;\n\
         location / {\n\
           proxy_pass http://$http_host$request_uri;\n\
           proxy_set_header Host $http_host;\n\
           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
           proxy_set_header X-Real-IP $remote_addr;\n\
           proxy_set_header X-Original $scheme://$host$request_uri;\n\
           proxy_set_header X-Agent \"ua=$http_user_agent\";\n\
           proxy_set_header Accept-Encoding \"\";\n\
         }",
    ));
    let request = format!(
        "GET http://{}/p?q HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 10.1.2.3\r\nUser-Agent: tester\r\nAccept-Encoding: gzip\r\n\r\n",
        origin.addr, origin.addr
    );
    let (_, head, _) = send(&proxy, request.as_bytes()).await;
    assert!(!head.contains("Via:"), "{head}");
    let got = &origin.recorded()[0];
    assert_eq!(got.header("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(got.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(got.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(got.header("x-original"), Some("http://127.0.0.1/p?q"));
    assert_eq!(got.header("x-agent"), Some("ua=tester"));
    assert_eq!(
        got.header("accept-encoding"),
        None,
        "an empty value removes the field"
    );
    assert_eq!(got.header("via"), None);
}

#[tokio::test]
async fn three_requests_on_one_client_connection_reuse_one_upstream_connection() {
    let origin = Origin::start(|r| ok(r.head.lines().next().unwrap().as_bytes())).await;
    let proxy = forwarding_proxy("");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        let request = format!("GET http://{}/{i} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, _, body) = read_response(&mut stream, &mut buf, false).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("GET /{i} HTTP/1.1").as_bytes());
    }
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Pipelined: three requests in one write, three answers in order.
    let mut pipelined = String::new();
    for i in 3..6 {
        pipelined.push_str(&format!("GET http://{}/{i} HTTP/1.1\r\n\r\n", origin.addr));
    }
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    for i in 3..6 {
        let (_, _, body) = read_response(&mut stream, &mut buf, false).await.unwrap();
        assert_eq!(body, format!("GET /{i} HTTP/1.1").as_bytes());
    }
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_client_connection() {
    let origin = Origin::start(|_| ok(b"x")).await;
    let proxy = forwarding_proxy("");
    for request in [
        format!("GET http://{}/ HTTP/1.0\r\n\r\n", origin.addr),
        format!(
            "GET http://{}/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            origin.addr
        ),
    ] {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_to_close(&mut stream).await;
        assert_eq!(response.status, 200);
        assert!(
            response.head.contains("Connection: close"),
            "{}",
            response.head
        );
        assert_eq!(response.body, "x");
    }
}

#[tokio::test]
async fn request_bodies_arrive_byte_exact_with_content_length_and_chunked() {
    let origin = Origin::start(|r| ok(format!("{}", Fnv::of(&r.body).hash).as_bytes())).await;
    let proxy = forwarding_proxy("");
    let body = pattern(3 << 20, 11);
    let expected = Fnv::of(&body).hash.to_string();

    let mut request = format!(
        "POST http://{}/up HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        origin.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (status, _, answer) = send(&proxy, &request).await;
    assert_eq!(
        (status, String::from_utf8(answer).unwrap()),
        (200, expected.clone())
    );

    let mut request = format!(
        "POST http://{}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.addr
    )
    .into_bytes();
    for piece in body.chunks(77_777) {
        request.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\nX-Trailer: dropped\r\n\r\n");
    let (status, _, answer) = send(&proxy, &request).await;
    assert_eq!(
        (status, String::from_utf8(answer).unwrap()),
        (200, expected)
    );
    let recorded = origin.recorded();
    assert_eq!(recorded[1].header("transfer-encoding"), Some("chunked"));
    assert!(!recorded[1].head.contains("X-Trailer"));
}

/// An origin that answers every connection with these raw bytes, then closes.
async fn raw_origin(response: Vec<u8>) -> std::net::SocketAddr {
    serve("127.0.0.1:0", move |mut stream| {
        let response = response.clone();
        async move {
            if read_request_head(&mut stream).await.is_some() {
                let _ = stream.write_all(&response).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn chunked_and_close_delimited_responses_arrive_byte_exact() {
    let body = pattern(1 << 20, 12);
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n".to_vec();
    for piece in body.chunks(5000) {
        chunked.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
    let mut until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    until_close.extend_from_slice(&body);
    let proxy = forwarding_proxy("");
    for response in [chunked, until_close] {
        let origin = raw_origin(response).await;
        // HTTP/1.1 client: re-chunked, connection kept.
        let request = format!("GET http://{origin}/ HTTP/1.1\r\n\r\n");
        let (status, head, got) = send(&proxy, request.as_bytes()).await;
        assert_eq!(status, 200);
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert!(got == body, "body differs ({} bytes)", got.len());
        // HTTP/1.0 client: the body ends with the connection.
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream
            .write_all(format!("GET http://{origin}/ HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert!(all.ends_with(&body), "HTTP/1.0 body differs");
    }
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_the_connection_stays_usable() {
    let origin = Origin::start(|r| {
        let path = r.head.split(' ').nth(1).unwrap().to_string();
        match path.as_str() {
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/304" => {
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"e\"\r\n\r\n".to_vec()
            }
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n".to_vec(), // HEAD: no body follows
        }
    })
    .await;
    let proxy = forwarding_proxy("");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    for (method, path, status) in [
        ("HEAD", "/", 200),
        ("GET", "/204", 204),
        ("GET", "/304", 304),
        ("HEAD", "/", 200),
    ] {
        let request = format!("{method} http://{}{path} HTTP/1.1\r\n\r\n", origin.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let (got, head, body) = read_response(&mut stream, &mut buf, method == "HEAD")
            .await
            .unwrap();
        assert_eq!(got, status);
        assert!(body.is_empty());
        if status != 204 {
            assert!(
                head.contains("Content-Length: 50"),
                "the length describes the resource: {head}"
            );
        }
    }
    let mut extra = [0; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut extra)).await;
    assert!(read.is_err(), "no stray body bytes may follow");
}

#[tokio::test]
async fn expect_100_continue_works() {
    let origin = serve("127.0.0.1:0", |mut stream| async move {
        let head = read_request_head(&mut stream).await.unwrap();
        assert!(head.contains("Expect: 100-continue"), "{head}");
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        let mut body = [0; 5];
        stream.read_exact(&mut body).await.unwrap();
        stream.write_all(&ok(&body)).await.unwrap();
    })
    .await;
    let proxy = forwarding_proxy("");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "PUT http://{origin}/ HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The body is sent only after the 100 arrives, as a real client does.
    let interim = read_head(&mut stream).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(b"hello").await.unwrap();
    let mut buf = Vec::new();
    let (status, _, body) = read_response(&mut stream, &mut buf, false).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
}

#[tokio::test]
async fn smuggling_shapes_are_refused_before_reaching_the_origin() {
    let origin = Origin::start(|_| ok(b"")).await;
    let proxy = forwarding_proxy("");
    let target = format!("http://{}/", origin.addr);
    let shapes = [
        format!(
            "POST {target} HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!("POST {target} HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        format!("POST {target} HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        format!("POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!("POST {target} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nHost: a\r\n folded: value\r\nContent-Length: 0\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello"),
        format!("POST {target} HTTP/1.1\nContent-Length: 5\n\nhello"),
        format!("POST {target} HTTP/1.1\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"),
        format!("POST {target} HTTP/1.1\r\nX: a\0b\r\n\r\n"),
        format!(
            "POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"
        ),
        format!(
            "POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"
        ),
        format!(
            "POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
        ),
        format!(
            "POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloGET / HTTP/1.1\r\n\r\n"
        ),
    ];
    for shape in &shapes {
        let response = exchange(proxy.addr(), shape.as_bytes()).await;
        assert_eq!(response.status, 400, "{shape:?} got {}", response.head);
        response.assert_well_formed();
    }
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused request reached the origin: {:?}",
        origin.recorded()
    );
}

#[tokio::test]
async fn https_and_other_schemes_and_origin_form_are_400() {
    let proxy = forwarding_proxy("");
    for (request, says) in [
        ("GET https://127.0.0.1:1/ HTTP/1.1\r\n\r\n", "CONNECT"),
        ("GET ftp://127.0.0.1/ HTTP/1.1\r\n\r\n", "http"),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "absolute URI"),
    ] {
        let response = exchange(proxy.addr(), request.as_bytes()).await;
        assert_eq!(response.status, 400, "{request:?}");
        assert!(
            response.body.contains(says),
            "{request:?}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn port_policy_applies_to_forwarding() {
    let origin = Origin::start(|_| ok(b"")).await;
    let proxy = forwarding_proxy("proxy_http_allow 80 8080;");
    let response = exchange(
        proxy.addr(),
        format!("GET http://{}/ HTTP/1.1\r\n\r\n", origin.addr).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 403);
    assert!(
        response.body.contains("forwarding to port"),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn unreachable_and_silent_origins_are_502_and_504() {
    let refusing = ClosedPort::new();
    let closed = refusing.addr;
    let silent = serve("127.0.0.1:0", |stream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let proxy = forwarding_proxy("proxy_read_timeout 1s;");
    let response = exchange(
        proxy.addr(),
        format!("GET http://{closed}/ HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 502);
    let started = Instant::now();
    let response = exchange(
        proxy.addr(),
        format!("GET http://{silent}/ HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 504, "{}", response.body);
    assert!(started.elapsed() < Duration::from_secs(1) + LATENESS);
}

#[tokio::test]
async fn an_origin_that_dies_mid_response_leaves_the_client_a_visibly_short_response() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'x'; 1000]);
    let origin = raw_origin(response).await; // then closes: 99,000 bytes short
    let proxy = forwarding_proxy("");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(format!("GET http://{origin}/ HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the client was left hanging");
    assert!(
        got.len() < 100_000,
        "the client got a complete-looking response"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mib_response_streams_in_bounded_memory() {
    const SIZE: usize = 100 << 20;
    let origin = serve("127.0.0.1:0", |mut stream| async move {
        let mut head = [0; 1024];
        let _ = stream.read(&mut head).await;
        let _ = stream
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes())
            .await;
        let block = vec![7u8; 1 << 20];
        for _ in 0..100 {
            if stream.write_all(&block).await.is_err() {
                return;
            }
        }
    })
    .await;
    let proxy = forwarding_proxy("");
    let before = rss_kib(proxy.pid());
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(format!("GET http://{origin}/big HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut total = 0;
    let mut peak = before;
    let mut buf = vec![0; 256 * 1024];
    while total < SIZE {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        total += n;
        if total % (8 << 20) < n {
            peak = peak.max(rss_kib(proxy.pid()));
            tokio::time::sleep(Duration::from_millis(5)).await; // a slower reader, too
        }
    }
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "RSS grew by {grew} KiB while streaming 100 MiB"
    );
}

#[tokio::test]
async fn a_websocket_upgrade_becomes_a_tunnel() {
    let origin = serve("127.0.0.1:0", |mut stream| async move {
        let head = read_request_head(&mut stream).await.unwrap();
        assert!(head.contains("Upgrade: websocket"), "{head}");
        // The 101 and the first frame in one write: the frame must not be lost.
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\nhi")
            .await
            .unwrap();
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await;
    let proxy = forwarding_proxy("");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET http://{origin}/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Upgrade: websocket"), "{head}");
    let mut first = [0; 2];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hi");
    let data = pattern(1 << 20, 13);
    let (mut r, mut w) = stream.split();
    let (_, echoed) = tokio::join!(
        async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut echoed = Vec::new();
            r.read_to_end(&mut echoed).await.unwrap();
            echoed
        }
    );
    assert!(
        echoed == data,
        "the upgraded connection lost or changed bytes"
    );
}

#[tokio::test]
async fn without_a_proxy_pass_location_only_connect_is_served() {
    let origin = Origin::start(|_| ok(b"")).await;
    let proxy = Proxy::start(&open_config(""));
    let response = exchange(
        proxy.addr(),
        format!("GET http://{}/ HTTP/1.1\r\n\r\n", origin.addr).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn curl_and_python_urllib_fetch_through_the_proxy() {
    let origin = Origin::start(|_| ok(b"fetched")).await;
    let proxy = forwarding_proxy("");
    let proxy_url = format!("http://{}", proxy.addr());
    let url = format!("http://{}/file", origin.addr);
    if require_tool("curl") {
        let out = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "10",
                "-x",
                &proxy_url,
                &url,
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "fetched",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And a POST with a body, as pip and git send.
        let out = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "10",
                "-x",
                &proxy_url,
                "--data-binary",
                "payload",
                &url,
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fetched");
        assert_eq!(origin.recorded().last().unwrap().body, b"payload");
    }
    if require_tool("python3") {
        let script = "import sys, urllib.request as u\n\
                      opener = u.build_opener(u.ProxyHandler({'http': sys.argv[1]}))\n\
                      sys.stdout.write(opener.open(sys.argv[2], timeout=10).read().decode())\n";
        let out = tokio::process::Command::new("python3")
            .args(["-c", script, &proxy_url, &url])
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "fetched",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A response head is passed on when it arrives, not held back until body bytes follow: a
/// slow origin's client sees the status at once, and each piece of body as it comes.
#[tokio::test]
async fn a_head_and_each_piece_of_a_slow_body_are_passed_on_as_they_arrive() {
    let (release, released) = tokio::sync::mpsc::channel::<()>(4);
    let released = std::sync::Arc::new(tokio::sync::Mutex::new(Some(released)));
    let origin = serve("127.0.0.1:0", move |mut stream| {
        let released = std::sync::Arc::clone(&released);
        async move {
            let Some(mut released) = released.lock().await.take() else {
                return;
            };
            read_request_head(&mut stream).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                .await
                .unwrap();
            released.recv().await;
            stream.write_all(b"hello").await.unwrap();
            released.recv().await;
            stream.write_all(b"world").await.unwrap();
        }
    })
    .await;
    let proxy = forwarding_proxy("");
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(
            format!("GET http://{origin}/slow HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(3), read_head(&mut client))
        .await
        .expect("the head was held back");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    for piece in [&b"hello"[..], b"world"] {
        release.send(()).await.unwrap();
        let mut got = vec![0u8; piece.len()];
        tokio::time::timeout(Duration::from_secs(3), client.read_exact(&mut got))
            .await
            .expect("a body piece was held back")
            .unwrap();
        assert_eq!(got, piece);
    }
}

/// A request whose body is empty but framed (`Content-Length: 0`) is complete once its head is
/// sent: an origin that answers at once must not make sluice close a keep-alive session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_an_empty_body_keeps_the_connection() {
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 300;
    let proxy = Proxy::start(&open_config(
        "    location / { proxy_pass http://$http_host$request_uri; }",
    ));
    // Answers every head at once, without waiting for anything else.
    let origin = serve("127.0.0.1:0", |mut stream| async move {
        while read_request_head(&mut stream).await.is_some() {
            if stream.write_all(&ok(b"hi")).await.is_err() {
                return;
            }
        }
    })
    .await;
    let closed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (proxy, closed) = (proxy.addr(), closed.clone());
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(proxy).await.unwrap();
                let mut buf = Vec::new();
                let request = format!(
                    "POST http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 0\r\n\r\n"
                );
                for i in 0..REQUESTS {
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let (status, head, _) = read_response(&mut stream, &mut buf, false)
                        .await
                        .unwrap_or_else(|| panic!("request {i}: no complete response"));
                    assert_eq!(status, 200);
                    if head.to_ascii_lowercase().contains("connection: close") {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        closed.load(Ordering::Relaxed),
        0,
        "sessions closed after a POST with Content-Length: 0"
    );
}

/// Asks an origin that never answers (and notices a close within `hold`) for `/slow` through
/// `proxy`, closes the client's connection once the request is at the origin, and returns
/// how the origin's connection then ended (`closed` or `held`).
async fn leave_before_the_answer(proxy: &Proxy, hold: Duration) -> Option<&'static str> {
    let (slow, mut seen) = unanswering_origin(hold).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET http://{slow}/slow HTTP/1.1\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .ok()
            .flatten()
    };
    assert_eq!(next().await, Some("asked"));
    drop(client);
    next().await
}

/// A client that leaves while its answer is awaited ends the request, as in nginx: the origin's
/// connection is closed at once rather than held until the origin answers or
/// `proxy_read_timeout`, the request is logged with status 499, and the client's place
/// (`max_connections_per_client`) is free again.
#[tokio::test]
async fn a_client_that_leaves_before_its_answer_ends_the_origin_request() {
    let proxy = forwarding_proxy(
        "access_log stderr;\n    max_connections_per_client 1;\n    proxy_read_timeout 60s;",
    );
    assert_eq!(
        leave_before_the_answer(&proxy, Duration::from_secs(60)).await,
        Some("closed"),
        "the origin's connection outlived the client"
    );
    proxy.wait_for_log("/slow HTTP/1.1\" 499 ").await;
    let origin = Origin::start(|_| ok(b"hi")).await;
    let request = format!("GET http://{}/ HTTP/1.1\r\n\r\n", origin.addr);
    let (status, _, body) = send(&proxy, request.as_bytes()).await;
    assert_eq!((status, body.as_slice()), (200, &b"hi"[..]));
}

/// `proxy_ignore_client_abort on`: sluice keeps waiting for the answer after the client left.
#[tokio::test]
async fn proxy_ignore_client_abort_on_keeps_the_origin_request() {
    let proxy = forwarding_proxy("proxy_ignore_client_abort on;\n    proxy_read_timeout 60s;");
    assert_eq!(
        leave_before_the_answer(&proxy, Duration::from_secs(1)).await,
        Some("held")
    );
}
