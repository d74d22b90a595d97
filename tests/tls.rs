//! `listen ... ssl` through the real binary: certificates made by the `openssl` CLI for each
//! test, and real TLS clients (curl with `--proxy https://`, Python's `ssl`, rustls) over
//! loopback: CONNECT and plain-HTTP forwarding inside TLS, a mebibyte each way with
//! half-closes, clients that do not trust the certificate or speak plain HTTP, client
//! certificates, the `$ssl_*` variables, certificates swapped by SIGHUP, and a sluice
//! reached as a parent over TLS.

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// The key formats `ssl_certificate_key` reads.
#[derive(Clone, Copy)]
enum Key {
    /// EC, `BEGIN PRIVATE KEY`.
    Pkcs8,
    /// EC, `BEGIN EC PRIVATE KEY`.
    Sec1,
    /// RSA, `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
}

/// A test CA and the certificates it issued, made by the `openssl` CLI in a fresh directory.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA with a server certificate `server` (localhost, 127.0.0.1; SEC1 key) and a client
    /// certificate `alice` (`CN=alice,O=Example`). `None` when openssl is missing.
    fn new() -> Option<Pki> {
        if !require_tool("openssl") {
            return None;
        }
        let pki = Pki {
            dir: TempDir::new(),
        };
        certificates::self_signed(
            &pki.dir.0,
            "ca",
            "/CN=sluice test CA",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        pki.issue("server", "/CN=localhost", Key::Sec1, true);
        pki.issue("alice", "/O=Example/CN=alice", Key::Pkcs8, false);
        Some(pki)
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).to_str().unwrap().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        certificates::openssl(&self.dir.0, args);
    }

    /// Issues `NAME.pem` and `NAME.key` for `subject`: a server certificate for localhost and
    /// 127.0.0.1, or a client one.
    fn issue(&self, name: &str, subject: &str, key: Key, server: bool) {
        static SERIAL: AtomicU64 = AtomicU64::new(1000);
        let key_file = format!("{name}.key");
        match key {
            Key::Pkcs1 => self.openssl(&["genrsa", "-traditional", "-out", &key_file, "2048"]),
            Key::Pkcs8 | Key::Sec1 => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                &key_file,
            ]),
        }
        if let Key::Sec1 = key {
            self.openssl(&["ec", "-in", &key_file, "-out", &key_file]);
        }
        let csr = format!("{name}.csr");
        self.openssl(&[
            "req", "-new", "-key", &key_file, "-out", &csr, "-subj", subject,
        ]);
        let extensions = if server {
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.0.join(&ext), extensions).unwrap();
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed).to_string();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &ext,
        ]);
    }

    /// The server block lines that make a listener TLS with the `server` certificate.
    fn ssl(&self) -> String {
        format!(
            "    ssl_certificate {};\n    ssl_certificate_key {};\n",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// A rustls client trusting this CA, presenting `identity`'s certificate if given.
    fn client_config(&self, identity: Option<&str>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match identity {
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        }
    }

    /// Connects to `addr` over TLS as a client of this CA, asking for `localhost`.
    async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.client_config(None)));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.expect("TLS handshake")
    }
}

/// The SHA-256 of the certificate the server presented.
fn fingerprint(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    Sha256::digest(leaf.as_ref()).to_vec()
}

/// The SHA-256 of a PEM certificate file's first certificate.
fn file_fingerprint(path: &str) -> Vec<u8> {
    let cert = CertificateDer::from_pem_file(path).unwrap();
    Sha256::digest(cert.as_ref()).to_vec()
}

/// A config with one TLS listener on a free port that may CONNECT and forward to loopback,
/// logging the `$ssl_*` variables to standard error.
fn tls_config(pki: &Pki, extra: &str) -> String {
    format!(
        "log_format tls 'TLS $request $status proto=$ssl_protocol cipher=$ssl_cipher \
         sni=$ssl_server_name dn=\"$ssl_client_s_dn\" verify=$ssl_client_verify user=$remote_user \
         scheme=$scheme';\n\
         server {{\n    listen 127.0.0.1:0 ssl;\n{}    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8 ::1;\n    access_log stderr tls;\n    location / {{\n        \
         proxy_pass http://$http_host$request_uri;\n    }}\n{extra}\n}}\n",
        pki.ssl()
    )
}

/// A loopback HTTPS origin with the `server` certificate: answers every request with `body`.
async fn tls_origin(pki: &Pki, body: &'static str) -> SocketAddr {
    let chain = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Runs curl with these arguments (bounded by `--max-time`).
async fn curl(args: &[&str]) -> Output {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl runs")
}

/// The proxy URL curl is given for `proxy`.
fn proxy_url(proxy: &Proxy) -> String {
    format!("https://localhost:{}", proxy.addr().port())
}

#[tokio::test]
async fn curl_tunnels_and_forwards_through_the_tls_listener() {
    let Some(pki) = Pki::new() else { return };
    if !require_tool("curl") {
        return;
    }
    // `$scheme` is `https` on a TLS listener, as in nginx: in the log and in the fields sent on.
    let proxy = Proxy::start(&tls_config(
        &pki,
        "    proxy_set_header X-Forwarded-Proto $scheme;",
    ));
    let origin = tls_origin(&pki, "hello over two TLS layers").await;
    let url = format!("https://localhost:{}/", origin.port());
    let ca = pki.path("ca.pem");
    let proxy_url = proxy_url(&proxy);
    let tunnelled = curl(&[
        "--proxy",
        &proxy_url,
        "--proxy-cacert",
        &ca,
        "--cacert",
        &ca,
        "-p",
        "--resolve",
        &format!("localhost:{}:127.0.0.1", origin.port()),
        &url,
    ])
    .await;
    assert!(
        tunnelled.status.success(),
        "curl: {}\n{}",
        String::from_utf8_lossy(&tunnelled.stderr),
        proxy.log()
    );
    assert_eq!(tunnelled.stdout, b"hello over two TLS layers");
    let line = proxy.wait_for_log("TLS CONNECT").await;
    assert!(line.contains(" 200 proto=TLSv1.3 cipher=TLS_"), "{line}");
    assert!(
        line.contains("sni=localhost dn=\"-\" verify=NONE user=- scheme=https"),
        "{line}"
    );

    let plain = Origin::start(|_| ok(b"plain inside TLS")).await;
    let forwarded = curl(&[
        "--proxy",
        &proxy_url,
        "--proxy-cacert",
        &ca,
        &format!("http://{}/page", plain.addr),
        &format!("http://{}/again", plain.addr),
    ])
    .await;
    assert!(
        forwarded.status.success(),
        "{}",
        String::from_utf8_lossy(&forwarded.stderr)
    );
    assert_eq!(forwarded.stdout, b"plain inside TLSplain inside TLS");
    let recorded = plain.recorded();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(
        plain.connections.load(Ordering::SeqCst),
        1,
        "keep-alive on both sides"
    );
    let line = proxy.wait_for_log("TLS GET http://").await;
    assert!(line.contains(" 200 proto=TLSv1.3"), "{line}");
}

/// Python's `ssl` through a CONNECT tunnel: the CONNECT head and the first bytes in one TLS
/// record, a mebibyte up, close_notify as the half-close (the origin must see its FIN to
/// answer), a mebibyte down, and the origin's FIN arriving as close_notify.
const PYTHON_TUNNEL: &str = r#"
import hashlib, os, socket, ssl, sys
port, target, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ssl.create_default_context(cafile=ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
def push():
    data = outgoing.read()
    if data:
        raw.sendall(data)
def pull():
    data = raw.recv(65536)
    if data:
        incoming.write(data)
    else:
        incoming.write_eof()
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        push()
        pull()
push()
def read():
    while True:
        try:
            return tls.read(65536)
        except ssl.SSLWantReadError:
            push()
            pull()
        except ssl.SSLZeroReturnError:
            return b""
payload = os.urandom(1 << 20)
tls.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()) + payload[:1000])
push()
for start in range(1000, len(payload), 16384):
    tls.write(payload[start:start + 16384])
    push()
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
push()
head = b""
while b"\r\n\r\n" not in head:
    data = read()
    if not data:
        sys.exit("closed before the tunnel's answer")
    head += data
head, received = head.split(b"\r\n\r\n", 1)
assert head.startswith(b"HTTP/1.1 200"), head
while True:
    data = read()
    if not data:
        break
    received += data
print(hashlib.sha256(payload).hexdigest(), len(received), hashlib.sha256(received).hexdigest())
"#;

#[tokio::test]
async fn python_moves_a_mebibyte_each_way_and_half_closes_through_a_tunnel() {
    let Some(pki) = Pki::new() else { return };
    if !require_tool("python3") {
        return;
    }
    let proxy = Proxy::start(&tls_config(&pki, ""));
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<(usize, String)>();
    let got_tx = Arc::new(std::sync::Mutex::new(Some(got_tx)));
    let down = pattern(1 << 20, 3);
    let down_hash = hex(&Sha256::digest(&down));
    let origin = serve("127.0.0.1:0", move |mut stream| {
        let got_tx = Arc::clone(&got_tx);
        let down = down.clone();
        async move {
            let mut received = Vec::new();
            if stream.read_to_end(&mut received).await.is_err() {
                return;
            }
            let hash = hex(&Sha256::digest(&received));
            if let Some(tx) = got_tx.lock().unwrap().take() {
                let _ = tx.send((received.len(), hash));
            }
            let _ = stream.write_all(&down).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let script = pki.path("tunnel.py");
    std::fs::write(&script, PYTHON_TUNNEL).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("python3")
            .args([
                &script,
                &proxy.addr().port().to_string(),
                &origin.to_string(),
                &pki.path("ca.pem"),
            ])
            .output(),
    )
    .await
    .expect("python finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let (up_len, up_hash) = got_rx.await.unwrap();
    assert_eq!(up_len, 1 << 20, "every byte up, the early ones included");
    assert_eq!(up_hash, fields[0]);
    assert_eq!(fields[1], (1 << 20).to_string());
    assert_eq!(fields[2], down_hash);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The status listener's `/metrics` text.
async fn metrics(proxy: &Proxy) -> String {
    let line = proxy.wait_for_log("(status_listen in ").await;
    let addr: SocketAddr = line
        .split(" on ")
        .nth(1)
        .unwrap()
        .split_once(' ')
        .unwrap()
        .0
        .parse()
        .unwrap();
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: s\r\n\r\n").await;
    response.body
}

/// Waits until `/metrics` has the line `sample` (a failed handshake is counted after the
/// client has seen it fail).
async fn wait_for_metric(proxy: &Proxy, sample: &str) {
    let found = eventually(async || {
        metrics(proxy)
            .await
            .lines()
            .any(|l| l == sample)
            .then_some(())
    })
    .await;
    if found.is_none() {
        panic!("no {sample:?} in:\n{}", metrics(proxy).await);
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_and_counted() {
    let Some(pki) = Pki::new() else { return };
    if !require_tool("curl") {
        return;
    }
    let config = format!("status_listen 127.0.0.1:0;\n{}", tls_config(&pki, ""));
    let proxy = Proxy::start(&config);
    let origin = Origin::start(|_| ok(b"never")).await;
    let out = curl(&[
        "--proxy",
        &proxy_url(&proxy),
        &format!("http://{}/", origin.addr),
    ])
    .await;
    assert!(!out.status.success());
    assert!(origin.recorded().is_empty());
    wait_for_metric(
        &proxy,
        "sluice_tls_handshake_failures_total{reason=\"alert\"} 1",
    )
    .await;
    proxy.wait_for_log("TLS handshake failed").await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_400_before_the_handshake_timeout() {
    let Some(pki) = Pki::new() else { return };
    let config = format!("status_listen 127.0.0.1:0;\n{}", tls_config(&pki, ""));
    let proxy = Proxy::start(&config);
    // ssl_handshake_timeout is 10 s by default: the answer comes without waiting for it.
    let answered = tokio::time::timeout(
        LATENESS,
        exchange(
            proxy.addr(),
            b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",
        ),
    )
    .await
    .expect("answered before the handshake timeout");
    assert_eq!(answered.status, 400, "{}", answered.head);
    assert!(answered.body.contains("plain HTTP request"));
    // Bytes that are neither TLS nor HTTP: closed at once.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"\x00\x01\x02\x03").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(LATENESS, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "closed before the handshake timeout");
    wait_for_metric(
        &proxy,
        "sluice_tls_handshake_failures_total{reason=\"plain_http\"} 1",
    )
    .await;
    wait_for_metric(
        &proxy,
        "sluice_tls_handshake_failures_total{reason=\"protocol\"} 1",
    )
    .await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_ssl_handshake_timeout() {
    let Some(pki) = Pki::new() else { return };
    let config = format!(
        "status_listen 127.0.0.1:0;\n{}",
        tls_config(&pki, "    ssl_handshake_timeout 200ms;")
    );
    let proxy = Proxy::start(&config);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "closed by the handshake timeout");
    assert!(rest.is_empty());
    wait_for_metric(
        &proxy,
        "sluice_tls_handshake_failures_total{reason=\"timeout\"} 1",
    )
    .await;
    wait_for_metric(&proxy, "sluice_tls_handshakes_total 0").await;
}

#[tokio::test]
async fn over_max_connections_per_client_the_503_comes_inside_tls() {
    let Some(pki) = Pki::new() else { return };
    let proxy = Proxy::start(&tls_config(&pki, "    max_connections_per_client 1;"));
    let echo = echo_server().await;
    let mut first = pki.connect(proxy.addr()).await;
    let connect = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    first.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut second = pki.connect(proxy.addr()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_handshakes_only() {
    let Some(pki) = Pki::new() else { return };
    let proxy = Proxy::start(&tls_config(&pki, ""));
    let echo = echo_server().await;
    let old = file_fingerprint(&pki.path("server.pem"));
    let mut open = pki.connect(proxy.addr()).await;
    assert_eq!(fingerprint(&open), old);
    let connect = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    open.write_all(connect.as_bytes()).await.unwrap();
    let head = read_tls_head(&mut open).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // A new certificate (RSA, PKCS#1 key) at the same paths.
    pki.issue("server", "/CN=localhost", Key::Pkcs1, true);
    let new = file_fingerprint(&pki.path("server.pem"));
    assert_ne!(old, new);
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reloaded"), "{outcome}");
    let next = pki.connect(proxy.addr()).await;
    assert_eq!(
        fingerprint(&next),
        new,
        "the next handshake uses the new one"
    );

    open.write_all(b"still here").await.unwrap();
    let mut echoed = [0u8; 10];
    open.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still here", "the open tunnel keeps its session");
}

#[tokio::test]
async fn a_key_that_does_not_match_is_a_file_line_error_and_the_old_one_stays() {
    let Some(pki) = Pki::new() else { return };
    let proxy = Proxy::start(&tls_config(&pki, ""));
    let old = file_fingerprint(&pki.path("server.pem"));
    // alice's key beside the server's certificate.
    std::fs::copy(pki.path("alice.key"), pki.path("server.key")).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(
        outcome.contains("proxy.conf:5") && outcome.contains("does not match the certificate"),
        "{outcome}"
    );
    let next = pki.connect(proxy.addr()).await;
    assert_eq!(fingerprint(&next), old);

    // The same file refused by `sluice -t`, and an unreadable certificate named too.
    let check = |config: &str| {
        let path = pki.path("check.conf");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-t", "-c", &path])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let error = check(&tls_config(&pki, ""));
    assert!(error.contains("check.conf:5"), "{error}");
    let missing = tls_config(&pki, "").replace("server.pem", "missing.pem");
    let error = check(&missing);
    assert!(
        error.contains("check.conf:4") && error.contains("missing.pem"),
        "{error}"
    );
    let no_certificate = "server {\n    listen 127.0.0.1:0 ssl;\n}\n";
    let error = check(no_certificate);
    assert!(
        error.contains("check.conf:2") && error.contains("no \"ssl_certificate\""),
        "{error}"
    );
}

/// Reads a response head from a TLS stream, byte by byte.
async fn read_tls_head(stream: &mut TlsStream<TcpStream>) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Client certificates: `on` refuses a client without one and names the one that has one;
/// `optional` serves both and records which.
#[tokio::test]
async fn client_certificates_on_optional_and_missing() {
    let Some(pki) = Pki::new() else { return };
    if !require_tool("curl") {
        return;
    }
    let origin = Origin::start(|_| ok(b"ok")).await;
    let url = format!("http://{}/", origin.addr);
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("alice.pem"), pki.path("alice.key"));
    for verify in ["on", "optional"] {
        let extra = format!("    ssl_client_certificate {ca};\n    ssl_verify_client {verify};");
        let proxy = Proxy::start(&tls_config(&pki, &extra));
        let proxy_url = proxy_url(&proxy);
        let with = curl(&[
            "--proxy",
            &proxy_url,
            "--proxy-cacert",
            &ca,
            "--proxy-cert",
            &cert,
            "--proxy-key",
            &key,
            &url,
        ])
        .await;
        assert!(
            with.status.success(),
            "{verify}: {}",
            String::from_utf8_lossy(&with.stderr)
        );
        let line = proxy.wait_for_log("TLS GET").await;
        assert!(
            line.contains("dn=\"CN=alice,O=Example\" verify=SUCCESS user=alice"),
            "{line}"
        );
        let without = curl(&["--proxy", &proxy_url, "--proxy-cacert", &ca, &url]).await;
        if verify == "on" {
            assert!(!without.status.success(), "on refuses a client without one");
        } else {
            assert!(without.status.success());
            let line = proxy.wait_for_log("verify=NONE").await;
            assert!(line.contains("dn=\"-\" verify=NONE user=-"), "{line}");
        }
    }
    assert_eq!(origin.recorded().len(), 3);
}
/// A parent's server over TLS, verified against `ssl_trusted_certificate`.
fn parent_config(parent: SocketAddr, trusted: &str) -> String {
    format!(
        "parent corp {{\n    server localhost:{} ssl;\n    ssl_trusted_certificate {trusted};\n}}\n{}",
        parent.port(),
        open_config(
            "    route default corp;\n    location / {\n        proxy_pass http://$http_host$request_uri;\n    }"
        )
    )
}

#[tokio::test]
async fn a_parent_over_tls_carries_tunnels_and_forwarded_requests() {
    let Some(pki) = Pki::new() else { return };
    let parent = Proxy::start(&tls_config(&pki, ""));
    let child = Proxy::start(&parent_config(parent.addr(), &pki.path("ca.pem")));
    let echo = echo_server().await;
    let (mut tunnel, head) = connect(child.addr(), &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", child.log());
    tunnel.write_all(b"through two proxies").await.unwrap();
    let mut echoed = [0u8; 19];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"through two proxies");
    drop(tunnel); // its log line is written when it ends
    parent.wait_for_log("TLS CONNECT").await;

    let origin = Origin::start(|_| ok(b"forwarded")).await;
    let request = format!(
        "GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
        origin.addr
    );
    let response = exchange(child.addr(), request.as_bytes()).await;
    assert_eq!(response.status, 200, "{}\n{}", response.head, child.log());
    assert_eq!(response.body, "forwarded");
    parent.wait_for_log("TLS GET http://").await;
}

#[tokio::test]
async fn a_parent_whose_certificate_fails_is_a_502_naming_it() {
    let Some(pki) = Pki::new() else { return };
    let parent = Proxy::start(&tls_config(&pki, ""));
    // Trusting another CA: the parent's certificate does not verify.
    let other = Pki::new().unwrap();
    let child = Proxy::start(&parent_config(parent.addr(), &other.path("ca.pem")));
    let (_, head) = connect(child.addr(), "127.0.0.1:9").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let line = child.wait_for_log("certificate").await;
    assert!(line.contains("corp"), "{line}");
}

/// A PROXY header and the ClientHello in one segment: the header names the client, and the
/// bytes read past it start the TLS handshake.
#[tokio::test]
async fn proxy_protocol_then_tls_in_one_segment() {
    let Some(pki) = Pki::new() else { return };
    let config = tls_config(&pki, "    set_real_ip_from 127.0.0.1;")
        .replace(
            "listen 127.0.0.1:0 ssl;",
            "listen 127.0.0.1:0 ssl proxy_protocol;",
        )
        .replace("'TLS $request", "'TLS $remote_addr $request");
    let proxy = Proxy::start(&config);
    let origin = Origin::start(|_| ok(b"behind a balancer")).await;
    let client = Arc::new(pki.client_config(None));
    let addr = proxy.addr();
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(client, name).unwrap();
        let mut first = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 3128\r\n".to_vec();
        tls.write_tls(&mut first).unwrap(); // the ClientHello
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(&first).unwrap();
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        let request = format!(
            "GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("behind a balancer"), "{response}");
    let line = proxy.wait_for_log("TLS 203.0.113.7 GET").await;
    assert!(line.contains(" 200 proto=TLSv1"), "{line}");
}

/// Basic authentication works inside TLS and names the user, before a client certificate.
#[tokio::test]
async fn basic_auth_inside_tls_names_the_user_before_a_certificate() {
    let Some(pki) = Pki::new() else { return };
    if !require_tool("curl") {
        return;
    }
    let htpasswd = pki.path("htpasswd");
    std::fs::write(&htpasswd, "bob:{PLAIN}secret\n").unwrap();
    let ca = pki.path("ca.pem");
    let extra = format!(
        "    auth_basic proxy;\n    auth_basic_user_file {htpasswd};\n    \
         ssl_client_certificate {ca};\n    ssl_verify_client optional;"
    );
    let proxy = Proxy::start(&tls_config(&pki, &extra));
    let origin = Origin::start(|_| ok(b"ok")).await;
    let url = format!("http://{}/", origin.addr);
    let port = proxy.addr().port();
    let refused = curl(&[
        "--proxy",
        &format!("https://localhost:{port}"),
        "--proxy-cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ])
    .await;
    assert_eq!(refused.stdout, b"407");
    let (cert, key) = (pki.path("alice.pem"), pki.path("alice.key"));
    let admitted = curl(&[
        "--proxy",
        &format!("https://bob:secret@localhost:{port}"),
        "--proxy-cacert",
        &ca,
        "--proxy-cert",
        &cert,
        "--proxy-key",
        &key,
        &url,
    ])
    .await;
    assert_eq!(admitted.stdout, b"ok");
    let line = proxy.wait_for_log("TLS GET http://").await;
    let line = if line.contains(" 407 ") {
        proxy.wait_for_log(" 200 proto").await
    } else {
        line
    };
    assert!(
        line.contains("dn=\"CN=alice,O=Example\" verify=SUCCESS user=bob"),
        "{line}"
    );
}
