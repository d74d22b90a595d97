//! HTTP/2 on an HTTPS listener (`listen ... ssl` with `http2 on`, or `listen ... ssl http2`):
//! ALPN offers `h2` then `http/1.1`, so HTTP/2 clients get many tunnels on one TLS connection
//! and HTTP/1.1 clients keep working on the same port. Driven by rustls + the `h2` crate, and
//! by Python's `h2` package (Debian's python3-h2) as a second, independent client, over TLS
//! and by prior knowledge over plain TCP.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(15);

/// A self-signed certificate for localhost and 127.0.0.1, and its key. `None` when openssl is
/// missing.
fn certificate(dir: &TempDir) -> Option<(String, String)> {
    if !require_tool("openssl") {
        return None;
    }
    let (cert, key) = certificates::self_signed(
        &dir.0,
        "localhost",
        "/CN=localhost",
        &[
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            // A leaf, not a CA: rustls refuses a CA certificate as the server's own.
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    Some((
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    ))
}

/// A TLS listener with `listen_params` after `ssl`, and `extra` in the block.
fn config(cert: &(String, String), listen_params: &str, extra: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0 ssl{listen_params};\n    ssl_certificate {};\n    \
         ssl_certificate_key {};\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8 ::1;\n    location / {{ proxy_pass http://$http_host$request_uri; }}\n\
         {extra}\n}}\n",
        cert.0, cert.1
    )
}

/// Connects over TLS trusting `cert`, offering these ALPN protocols.
async fn tls_connect(addr: SocketAddr, cert: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Three tunnels at once on one TLS connection, each echoing its own bytes, and a GET.
async fn h2_over(stream: TlsStream<TcpStream>, echo: SocketAddr, origin: SocketAddr) {
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut runs = Vec::new();
    for seed in 0..3u64 {
        let send = send.clone();
        runs.push(tokio::spawn(async move {
            let request = Request::builder()
                .method(Method::CONNECT)
                .uri(echo.to_string())
                .body(())
                .unwrap();
            let mut ready = send.ready().await.unwrap();
            let (response, mut stream) = ready.send_request(request, false).unwrap();
            let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
            assert_eq!(response.status(), 200);
            let payload = pattern(100_000, seed);
            let mut body = response.into_body();
            let sending = async {
                stream.reserve_capacity(payload.len());
                let mut data = Bytes::from(payload.clone());
                while !data.is_empty() {
                    let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                        .await
                        .unwrap()
                        .unwrap();
                    stream
                        .send_data(data.split_to(granted.min(data.len())), false)
                        .unwrap();
                }
                stream.send_data(Bytes::new(), true).unwrap();
            };
            let receiving = async {
                let mut back = Vec::new();
                while let Some(data) = body.data().await {
                    let data = data.unwrap();
                    back.extend_from_slice(&data);
                    body.flow_control().release_capacity(data.len()).unwrap();
                }
                back
            };
            let ((), back) = tokio::time::timeout(WAIT, async { tokio::join!(sending, receiving) })
                .await
                .unwrap();
            assert!(back == payload, "tunnel {seed}");
        }));
    }
    for run in runs {
        run.await.unwrap();
    }
    let mut ready = send.ready().await.unwrap();
    let get = Request::builder()
        .uri(format!("http://{origin}/over-tls"))
        .body(())
        .unwrap();
    let (response, _) = ready.send_request(get, true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let data = body.data().await.unwrap().unwrap();
    assert_eq!(&data[..], b"forwarded");
}

#[tokio::test]
async fn alpn_h2_gives_many_tunnels_on_one_tls_connection_and_http1_still_works() {
    let dir = TempDir::new();
    let Some(cert) = certificate(&dir) else {
        return;
    };
    let echo = echo_server().await;
    let origin = Origin::start(|_| ok(b"forwarded")).await;
    // nginx >= 1.25.1's form, and the older `listen ... ssl http2`.
    for (listen, extra) in [("", "    http2 on;"), (" http2", "")] {
        let proxy = Proxy::start(&config(&cert, listen, extra));
        let stream = tls_connect(proxy.addr(), &cert.0, &[b"h2", b"http/1.1"]).await;
        assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
        h2_over(stream, echo, origin.addr).await;

        // A client that offers only HTTP/1.1, or no ALPN at all, speaks HTTP/1.1.
        for offered in [&[&b"http/1.1"[..]][..], &[]] {
            let mut stream = tls_connect(proxy.addr(), &cert.0, offered).await;
            let expected = offered.first().map(|p| p.to_vec());
            assert_eq!(alpn(&stream), expected);
            let request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            assert_eq!(String::from_utf8(head).unwrap(), established());
            stream.write_all(b"http/1.1 inside tls").await.unwrap();
            let mut back = [0u8; 19];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"http/1.1 inside tls");
        }
    }
}

#[tokio::test]
async fn without_http2_alpn_names_only_http1() {
    let dir = TempDir::new();
    let Some(cert) = certificate(&dir) else {
        return;
    };
    let proxy = Proxy::start(&config(&cert, "", ""));
    let stream = tls_connect(proxy.addr(), &cert.0, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
}

/// Python's h2 package as the client: over TLS with ALPN when a CA file is given, else by
/// prior knowledge. Three CONNECT streams at once, each sends its own bytes and ends its
/// side; each must get exactly them back, then END_STREAM. A fourth asks for a refused
/// port and must get 403 while the others flow.
const PYTHON_H2: &str = r#"
import socket, ssl, sys
import h2.config, h2.connection, h2.events

port, echo, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port), timeout=15)
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    sock = ctx.wrap_socket(sock, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
# python-h2 4.1 wants a :path even for CONNECT (RFC 9113 §8.5 forbids one): its own
# check of outbound headers is off.
config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
conn = h2.connection.H2Connection(config=config)
conn.initiate_connection()
payloads = {}
for i in range(3):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", echo)])
    payloads[sid] = bytes((i * 7 + n) % 251 for n in range(20000 + i))
refused = conn.get_next_available_stream_id()
conn.send_headers(refused, [(":method", "CONNECT"), (":authority", "127.0.0.1:1")], end_stream=True)
sock.sendall(conn.data_to_send())
got = {sid: b"" for sid in payloads}
ended, statuses, pending = set(), {}, dict(payloads)
while len(ended) < len(payloads) + 1:
    data = sock.recv(65536)
    if not data:
        sys.exit("closed early")
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived):
            statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
        elif isinstance(event, h2.events.DataReceived):
            if event.stream_id in got:
                got[event.stream_id] += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            sys.exit("stream %d reset" % event.stream_id)
    for sid in list(pending):
        if statuses.get(sid) == "200":
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            chunk, pending[sid] = pending[sid][:room], pending[sid][room:]
            conn.send_data(sid, chunk, end_stream=not pending[sid])
            if not pending[sid]:
                del pending[sid]
    sock.sendall(conn.data_to_send())
assert statuses[refused] == "403", statuses
for sid, payload in payloads.items():
    assert statuses[sid] == "200" and got[sid] == payload, (sid, statuses[sid], len(got[sid]))
print("ok", len(payloads), statuses[refused])
"#;

async fn python_h2(python: &str, port: u16, echo: SocketAddr, cafile: &str, dir: &TempDir) {
    let script = dir.0.join("h2client.py");
    std::fs::write(&script, PYTHON_H2).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(echo.to_string())
            .arg(cafile)
            .output(),
    )
    .await
    .expect("python finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 3 403");
}

/// A Python with the h2 package (Debian's python3-h2): `python3`, or the system's when
/// `python3` is another installation (pyenv) without it.
fn python_with_h2() -> Option<&'static str> {
    if !require_tool("python3") {
        return None;
    }
    let found = ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import h2"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3-h2 is not installed, and CI=true requires every tool the tests use"
        );
        eprintln!("SKIPPED: python3-h2 is not installed (CI=true would fail this test)");
    }
    found
}

#[tokio::test]
async fn python_h2_tunnels_over_tls_and_by_prior_knowledge() {
    let Some(python) = python_with_h2() else {
        return;
    };
    let dir = TempDir::new();
    let Some(cert) = certificate(&dir) else {
        return;
    };
    let echo = echo_server().await;
    let allow = |port: u16| {
        format!(
            "server {{\n    listen 127.0.0.1:0;\n    http2 on;\n    proxy_connect;\n    \
             proxy_connect_allow {port};\n    destination_allow 127.0.0.0/8;\n}}\n"
        )
    };
    let plain = Proxy::start(&allow(echo.port()));
    python_h2(python, plain.addr().port(), echo, "", &dir).await;
    let tls = Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0 ssl;\n    http2 on;\n    ssl_certificate {};\n    \
         ssl_certificate_key {};\n    proxy_connect;\n    proxy_connect_allow {};\n    \
         destination_allow 127.0.0.0/8;\n}}\n",
        cert.0,
        cert.1,
        echo.port()
    ));
    python_h2(python, tls.addr().port(), echo, &cert.0, &dir).await;
}
