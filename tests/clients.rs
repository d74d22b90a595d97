//! Real clients and real configs: `curl -x` through tunnels (plain HTTP and TLS inside), the
//! embedded default configuration, and the nginx server block users paste.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = "hello from origin";

/// A minimal HTTP origin: answers every request with [`BODY`] and closes.
async fn http_origin(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(local)
}

/// Runs curl with a time limit and returns (HTTP code, body).
async fn curl(args: &[&str]) -> (String, String) {
    let mut full = vec![
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--write-out",
        "\n%{http_code}",
    ];
    full.extend_from_slice(args);
    let output = tokio::process::Command::new("curl")
        .args(&full)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

#[tokio::test]
async fn curl_tunnels_plain_http_through_connect() {
    if !require_tool("curl") {
        return;
    }
    let origin = http_origin("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(&open_config(""));
    let proxy_url = format!("http://{}", proxy.addr());
    // -p: tunnel through CONNECT even for http:// URLs.
    let (code, body) = curl(&["-p", "-x", &proxy_url, &format!("http://{origin}/")]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", BODY));
}

/// `openssl s_server` with a fresh self-signed certificate, stopped on drop.
struct TlsOrigin {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_origin() -> Option<TlsOrigin> {
    let dir = TempDir::new();
    let (cert, key) = certificates::self_signed(&dir.0, "localhost", "/CN=localhost", &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let origin = TlsOrigin {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(origin);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn curl_reaches_a_tls_origin_through_the_tunnel() {
    if !require_tool("curl") || !require_tool("openssl") {
        return;
    }
    let origin = tls_origin().await.expect("openssl s_server starts");
    let proxy = Proxy::start(&open_config(""));
    let proxy_url = format!("http://{}", proxy.addr());
    let url = format!("https://localhost:{}/", origin.port);
    let (code, body) = curl(&["--insecure", "-x", &proxy_url, &url]).await;
    assert_eq!(code, "200", "{body}");
    // s_server -www answers with a page describing the TLS session.
    assert!(body.contains("Cipher"), "{body}");
}

#[tokio::test]
async fn the_embedded_default_is_a_safe_loopback_proxy() {
    if std::net::TcpListener::bind("127.0.0.1:3128").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:3128 is in use");
        return;
    }
    let proxy = Proxy::spawn(&[], 1, temp_dir());
    assert_eq!(proxy.addr(), "127.0.0.1:3128".parse().unwrap());
    // Ports other than 443 and 563 are refused before anything else...
    let (_, head) = connect(proxy.addr(), "192.0.2.1:8443").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
    // ...and the machine's own loopback services are not a destination, by either method.
    let refused = exchange(proxy.addr(), b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("loopback"), "{}", refused.body);
    let refused = exchange(proxy.addr(), b"GET http://127.0.0.1:443/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = exchange(
        proxy.addr(),
        b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(
        refused.status, 403,
        "the cloud metadata address: {}",
        refused.body
    );
    if require_tool("curl") {
        let (code, _) = curl(&["-x", "http://127.0.0.1:3128", "https://127.0.0.1/"]).await;
        assert_eq!(code, "000", "curl must not get through to loopback");
    }
}

#[tokio::test]
async fn the_pasted_nginx_block_loads_and_serves_as_is() {
    if std::net::TcpListener::bind("0.0.0.0:10101").is_err() {
        eprintln!("SKIPPED: port 10101 is in use");
        return;
    }
    let proxy = Proxy::start(NGINX_SEED_BLOCK);
    assert_eq!(proxy.addr(), "0.0.0.0:10101".parse().unwrap());
    let log = proxy.log();
    assert!(log.contains("\"root\" directive is ignored"), "{log}");
    assert!(log.contains("\"index\" directive is ignored"), "{log}");
    let via = "127.0.0.1:10101".parse().unwrap();
    // The module's default port list, then sluice's built-in destination rules: both answer
    // without resolving anything (8.8.8.8 is never asked: these are address literals).
    let (_, head) = connect(via, "192.0.2.1:22").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
    let refused = exchange(via, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("loopback"), "{}", refused.body);
    // Its own port is never a destination, even by another name for it.
    let refused = exchange(via, b"GET http://127.0.0.1:10101/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}
