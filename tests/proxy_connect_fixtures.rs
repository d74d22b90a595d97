//! Every `server` block with `proxy_connect` of ngx_http_proxy_connect_module's own test suite
//! that uses no Lua (tests/fixtures/proxy_connect/, each naming its source), run by the real
//! binary: they load, and behave as that suite checks — `if ($host = ...) { return ...; }`,
//! `proxy_connect_address` and `proxy_connect_bind` from `set`, `$proxy_connect_response`,
//! the per-request timeouts, and `$connect_host`/`$connect_port`/`$connect_addr` in a log.
//!
//! What is adapted, by [`Harness::config`] only: the harness's `%%...%%` markers, its fixed
//! ports (the proxy's 8080 becomes a free port, the backends' 8081-8083 become this test's
//! origins, the name server's becomes the test DNS server), and `destination_allow
//! 127.0.0.0/8` after `proxy_connect;`, since sluice refuses loopback destinations unless told.
//! The fixtures' own edits are marked `# sluice:` in them (a reverse `proxy_pass` to a backend).

mod common;
#[allow(dead_code)] // this file uses a few of the test DNS server's knobs
mod dns {
    pub mod server;
}

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dns::server::DnsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proxy_connect");

/// The test's stand-ins for the suite's backends and name server.
struct Harness {
    /// For the backends on 8081, 8082 and 8083: each greets with its name and the address it
    /// sees the client at.
    origins: [SocketAddr; 3],
    dns: DnsServer,
    dir: TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let mut origins = Vec::new();
        for name in ["8081", "8082", "8083"] {
            origins.push(
                serve("127.0.0.1:0", move |mut stream| async move {
                    let peer = stream.peer_addr().unwrap().ip();
                    let greeting = format!("backend {name} sees {peer}\n");
                    let _ = stream.write_all(greeting.as_bytes()).await;
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await,
            );
        }
        let dns = DnsServer::start().await;
        for name in [
            "www.test-a.com",
            "www.test-b.com",
            "get-default-response.com",
            "set-response-header.com",
            "set-response-status.com",
        ] {
            dns.answer(name, &["127.0.0.1"]);
        }
        dns.nxdomain("www.no-dns-reply.com");
        Harness {
            origins: origins.try_into().unwrap(),
            dns,
            dir: TempDir::new(),
        }
    }

    /// The fixture's text with the harness's markers and ports replaced (see the file's doc).
    fn config(&self, fixture: &str) -> String {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(fixture)).unwrap();
        let mut text = text
            .replace("%%TEST_GLOBALS_HTTP%%", "")
            .replace("%%TEST_GLOBALS%%", "")
            .replace("127.0.0.1:8080", "127.0.0.1:0")
            .replace("127.0.0.1:8085", &self.dns.addr.to_string())
            .replace(
                "proxy_connect;",
                "proxy_connect;\n        destination_allow 127.0.0.0/8;",
            );
        for (port, origin) in ["8081", "8082", "8083"].iter().zip(self.origins) {
            text = text.replace(port, &origin.port().to_string());
        }
        text.replace("%%PORT_8981_UDP%%", &self.dns.addr.port().to_string())
            .replace("%%TESTDIR%%", &self.dir.0.display().to_string())
    }

    fn start(&self, fixture: &str) -> Proxy {
        Proxy::start(&self.config(fixture))
    }

    fn port(&self, backend: usize) -> u16 {
        self.origins[backend].port()
    }

    /// The access log the fixture writes, once it holds a line containing `needle`.
    async fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self.dir.0.join("connect.log")).unwrap_or_default();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// CONNECT through `proxy` with `extra` header lines; the response head and what followed it
/// (a backend's greeting through the tunnel, or a refusal's body), read to the close.
async fn connect_with(proxy: SocketAddr, target: &str, extra: &str) -> (String, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    let mut rest = Vec::new();
    let mut byte = [0u8; 1];
    // A greeting is one line; a refusal's body ends with the close.
    while !rest.ends_with(b"\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(1)) => rest.push(byte[0]),
            _ => break,
        }
    }
    (head, String::from_utf8_lossy(&rest).into_owned())
}

async fn connect(proxy: SocketAddr, target: &str) -> (String, String) {
    connect_with(proxy, target, "").await
}

#[tokio::test]
async fn every_fixture_without_lua_loads() {
    let harness = Harness::new().await;
    let mut fixtures: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    assert_eq!(fixtures.len(), 8, "{fixtures:?}");
    for fixture in &fixtures {
        let path = harness.dir.0.join("check.conf");
        std::fs::write(&path, harness.config(fixture)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-t", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// t/http_proxy_connect.t, configuration 1: ports, names, `set` choosing the address and the
/// source address, GET `return`, and the log variables.
#[tokio::test]
async fn addresses_from_set_and_the_log_variables() {
    let harness = Harness::new().await;
    let proxy = harness.start("http_proxy_connect-1.conf");
    let a = harness.port(0);
    let (head, greeting) = connect(proxy.addr(), &format!("127.0.0.1:{a}")).await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection Established\r\n"),
        "{head}"
    );
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let (_, greeting) = connect(proxy.addr(), &format!("www.test-a.com:{a}")).await;
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let (head, _) = connect(proxy.addr(), "www.no-dns-reply.com:80").await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    let (head, _) = connect(proxy.addr(), "127.0.0.1:9999").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    // `set $proxy_remote_address` in an `if`, read by `proxy_connect_address`.
    let (_, greeting) = connect(proxy.addr(), &format!("address.com:{a}")).await;
    assert_eq!(greeting, "backend 8082 sees 127.0.0.1\n");
    let (_, greeting) = connect(proxy.addr(), &format!("bind.com:{a}")).await;
    assert_eq!(greeting, "backend 8083 sees 127.0.0.1\n");
    let (_, greeting) = connect(
        proxy.addr(),
        &format!("proxy-remote-address-resolve-domain.com:{a}"),
    )
    .await;
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let hello = exchange(
        proxy.addr(),
        b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!((hello.status, hello.body.as_str()), (200, "world"));
    let needle = format!("var:127.0.0.1-{a}-127.0.0.1:{a}");
    let log = harness.log_with("var:www.no-dns-reply.com-80--").await;
    assert!(
        log.contains(&format!("\"CONNECT 127.0.0.1:{a} HTTP/1.1\" 200")),
        "{log}"
    );
    assert!(log.contains(&needle), "{log}");
    assert!(log.contains("var:www.no-dns-reply.com-80--"), "{log}");
}

/// Configuration 2: `if ... return` and a server-level `return` answer CONNECT themselves.
#[tokio::test]
async fn return_answers_connect() {
    let harness = Harness::new().await;
    let proxy = harness.start("http_proxy_connect-2.conf");
    let (head, body) = connect(proxy.addr(), "address.com:8081").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, "skip proxy connect: address.com,,address.com:8081,\n");
    let (_, body) = connect(proxy.addr(), "if-return-skip.com:8081").await;
    assert_eq!(body, "if-return\n");
}

/// Configuration 3: a bare proxy_connect server tunnels.
#[tokio::test]
async fn a_bare_server_tunnels() {
    let harness = Harness::new().await;
    let proxy = harness.start("http_proxy_connect-3.conf");
    let (_, greeting) = connect(proxy.addr(), &format!("127.0.0.1:{}", harness.port(1))).await;
    assert_eq!(greeting, "backend 8082 sees 127.0.0.1\n");
}

/// Configurations 4 and 5: `$proxy_connect_response` read and set, and `$connect_addr` in
/// `proxy_connect_response`.
#[tokio::test]
async fn the_connect_response_variable_and_directive() {
    let harness = Harness::new().await;
    let a = harness.port(0);
    let proxy = harness.start("http_proxy_connect-4.conf");
    let (head, body) = connect(proxy.addr(), &format!("www.test-a.com:{a}")).await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection Established"),
        "{head}"
    );
    assert_eq!(body, "backend 8081 sees 127.0.0.1\n");
    let response = exchange(
        proxy.addr(),
        format!("CONNECT get-default-response.com:{a} HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body, format!("|{}|", established()));
    let (head, _) = connect(proxy.addr(), &format!("set-response-header.com:{a}")).await;
    assert_eq!(head, "HTTP/1.1 200\r\nFoo: bar\r\n\r\n");
    let (head, _) = connect(proxy.addr(), &format!("set-response-status.com:{a}")).await;
    assert_eq!(head, "HTTP/1.1 403\r\n\r\n");

    let proxy = harness.start("http_proxy_connect-5.conf");
    let (head, _) = connect(proxy.addr(), &format!("set-response-header.com:{a}")).await;
    assert!(
        head.contains(&format!("\r\nX-Proxy-Connected-Addr: 127.0.0.1:{a}\r\n")),
        "{head}"
    );
}

/// t/http_proxy_connect_timeout.t: timeouts set per request, logged as set.
#[tokio::test]
async fn timeouts_set_per_request() {
    let harness = Harness::new().await;
    let a = harness.port(0);
    let proxy = harness.start("http_proxy_connect_timeout-1.conf");
    let (_, greeting) = connect(proxy.addr(), &format!("127.0.0.1:{a}")).await;
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let log = harness.log_with(" c:101ms,r:103ms").await;
    assert!(
        log.contains(&format!("var:127.0.0.1-{a}-127.0.0.1:{a}  c:101ms,r:103ms")),
        "{log}"
    );

    let proxy = harness.start("http_proxy_connect_timeout-2.conf");
    let (_, greeting) = connect_with(proxy.addr(), "anywhere.test:443", "X-Timeout: 5s\r\n").await;
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let log = harness.log_with("anywhere.test").await;
    assert!(log.contains(" c:-,r:5s"), "{log}");
}

/// t/http_proxy_connect_resolve_variables.t: `if ($uri = ...)` for a GET, and the timing
/// variables of a tunnel in the log.
#[tokio::test]
async fn resolve_variables_and_uri_conditions() {
    let harness = Harness::new().await;
    let a = harness.port(0);
    let proxy = harness.start("http_proxy_connect_resolve_variables-1.conf");
    let response = exchange(
        proxy.addr(),
        b"GET /200 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    let (_, greeting) = connect(proxy.addr(), &format!("www.test-a.com:{a}")).await;
    assert_eq!(greeting, "backend 8081 sees 127.0.0.1\n");
    let log = harness
        .log_with(&format!("var:www.test-a.com-{a}-127.0.0.1:{a}"))
        .await;
    let line = log
        .lines()
        .find(|l| l.contains("CONNECT www.test-a.com"))
        .unwrap_or_default();
    assert!(line.contains(" resolve:0.0"), "{log}");
    assert!(line.contains(",connect:0.0"), "{log}");
    assert!(line.ends_with(",fbt:-,"), "{log}");
}
