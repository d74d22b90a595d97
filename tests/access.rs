//! Who may use the proxy and where it may go, through the real binary: client allow/deny,
//! proxy authentication in every htpasswd format, destination rules over resolved addresses,
//! connection limits and head size limits. Each rule is shown both ways.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server block on a free loopback port with these directives, forwarding and tunnelling.
fn config(directives: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n{directives}\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

#[tokio::test]
async fn client_allow_and_deny_decide_before_anything_is_dialled() {
    let origin = Origin::start(|_| ok(b"in")).await;
    let denied = Proxy::start(&config(
        "    destination_allow 127.0.0.1;\n    allow 10.0.0.0/8;\n    deny all;",
    ));
    for request in [
        format!("CONNECT {} HTTP/1.1\r\n\r\n", origin.addr),
        format!("GET http://{}/ HTTP/1.1\r\n\r\n", origin.addr),
    ] {
        let response = exchange(denied.addr(), request.as_bytes()).await;
        assert_eq!(response.status, 403, "{request:?}");
        response.assert_well_formed();
    }
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        0,
        "a denied client's request was dialled"
    );

    let allowed = Proxy::start(&config(
        "    destination_allow 127.0.0.1;\n    deny 10.0.0.0/8;\n    allow 127.0.0.1;\n    deny all;",
    ));
    tunnel(allowed.addr(), &origin.addr.to_string()).await;
}

/// "secret" hashed by tools other than the crates sluice uses (see src/access/auth.rs).
const USERS: &str = "\
bob:$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
amy:$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1
sam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
sue:{SSHA}gVK8WC9YyFT1gMsQHTGCgT3sSv5zYWx0
pat:{PLAIN}secret
";

fn auth_proxy() -> (Proxy, TempDir) {
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, USERS).unwrap();
    let proxy = Proxy::start(&config(&format!(
        "    destination_allow 127.0.0.1;\n    auth_basic \"sluice test\";\n    auth_basic_user_file {};",
        users.display()
    )));
    (proxy, dir)
}

#[tokio::test]
async fn proxy_authentication_answers_407_and_accepts_every_hash_format() {
    let echo = echo_server().await;
    let (proxy, _dir) = auth_proxy();
    let connect = |credentials: Option<String>| {
        let header = credentials
            .map(|c| format!("Proxy-Authorization: {c}\r\n"))
            .unwrap_or_default();
        format!("CONNECT {echo} HTTP/1.1\r\n{header}\r\n")
    };
    let response = exchange(proxy.addr(), connect(None).as_bytes()).await;
    assert_eq!(response.status, 407);
    assert!(
        response
            .head
            .contains("\r\nProxy-Authenticate: Basic realm=\"sluice test\""),
        "{}",
        response.head
    );
    response.assert_well_formed();
    for bad in [
        basic("bob", "wrong"),
        basic("nobody", "secret"),
        "Basic !!!".to_string(),
        "Bearer x".to_string(),
    ] {
        let response = exchange(proxy.addr(), connect(Some(bad.clone())).as_bytes()).await;
        assert_eq!(response.status, 407, "{bad}");
    }
    for user in ["bob", "amy", "sam", "sue", "pat"] {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream
            .write_all(connect(Some(basic(user, "secret"))).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{user}: {head}");
    }
}

#[tokio::test]
async fn credentials_never_reach_the_origin_and_curl_authenticates() {
    let origin = Origin::start(|_| ok(b"authorised")).await;
    let (proxy, _dir) = auth_proxy();
    let request = format!(
        "GET http://{}/ HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
        origin.addr,
        basic("amy", "secret")
    );
    let response = exchange(
        proxy.addr(),
        request
            .replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    let got = &origin.recorded()[0];
    assert!(got.header("proxy-authorization").is_none(), "{}", got.head);
    if require_tool("curl") {
        let proxy_url = format!("http://pat:secret@{}", proxy.addr());
        let out = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "10",
                "-x",
                &proxy_url,
                &format!("http://{}/", origin.addr),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "authorised");
        let wrong = format!("http://pat:nope@{}", proxy.addr());
        let out = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &wrong,
            ])
            .arg(format!("http://{}/", origin.addr))
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "407");
    }
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_denied_unless_an_address_rule_allows_it() {
    let echo = echo_server().await;
    // No resolver directive: the system's /etc/hosts answers "localhost" with loopback.
    let target = format!("localhost:{}", echo.port());
    let default = Proxy::start(&config(""));
    let response = exchange(
        default.addr(),
        format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert!(response.body.contains("loopback"), "{}", response.body);

    let by_address = Proxy::start(&config("    destination_allow 127.0.0.0/8 ::1;"));
    tunnel(by_address.addr(), &target).await;
    // A name rule says which names may be asked for, not that they may resolve to loopback.
    let by_name = Proxy::start(&config("    destination_allow localhost;"));
    let response = exchange(
        by_name.addr(),
        format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.body);
}

#[tokio::test]
async fn metadata_multicast_and_unspecified_addresses_are_denied() {
    let proxy = Proxy::start(&config(""));
    for target in [
        "169.254.169.254:80",
        "[fe80::1]:443",
        "0.0.0.0:443",
        "224.0.0.1:443",
        "[::ffff:127.0.0.1]:443",
    ] {
        let response = exchange(
            proxy.addr(),
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(response.status, 403, "{target}: {}", response.body);
    }
    let response = exchange(
        proxy.addr(),
        b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 403);
}

#[tokio::test]
async fn host_patterns_decide_without_dns_and_name_their_rule() {
    // A name server that never answers: any query would end in a 504, not a 403.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap();
    let proxy = Proxy::start(&config(&format!(
        "    resolver {dns};\n    resolver_timeout 5s;\n    destination_deny *.blocked.test exact.test;\n    destination_allow all;"
    )));
    for target in [
        "a.blocked.test:443",
        "deep.a.blocked.test:443",
        "exact.test:443",
    ] {
        let response = exchange(
            proxy.addr(),
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(response.status, 403, "{target}");
        assert!(
            response.body.contains("destination_deny in "),
            "{}",
            response.body
        );
        assert!(response.body.contains("proxy.conf:7"), "{}", response.body);
    }
    // Not matched by the pattern: resolution is attempted, and times out against the silent server.
    let response = exchange(proxy.addr(), b"CONNECT blocked.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 504, "{}", response.body);
    assert!(
        response.body.contains("\"blocked.test\""),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn the_proxys_own_port_is_never_a_destination() {
    let proxy = Proxy::start(&config("    destination_allow all;"));
    let own = proxy.addr();
    for request in [
        format!("CONNECT {own} HTTP/1.1\r\n\r\n"),
        format!("GET http://{own}/ HTTP/1.1\r\n\r\n"),
    ] {
        let response = exchange(own, request.as_bytes()).await;
        assert_eq!(response.status, 403, "{request:?}: {}", response.body);
        assert!(response.body.contains("own listener"), "{}", response.body);
    }
}

/// Past `max_connections` a new client waits in the kernel's backlog and is served when a
/// place frees up (no descriptor spent on it meanwhile); see tests/resources.rs.
#[tokio::test]
async fn past_max_connections_a_new_client_waits_and_is_served_when_a_place_frees() {
    let echo = echo_server().await;
    let text = format!(
        "max_connections 2;\n{}",
        config("    destination_allow 127.0.0.1;")
    );
    let proxy = Proxy::start(&text);
    let first = tunnel(proxy.addr(), &echo.to_string()).await;
    let mut second = tunnel(proxy.addr(), &echo.to_string()).await;
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    third
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    second.write_all(b"still here").await.unwrap();
    let mut buf = [0; 10];
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    drop(first);
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut third))
        .await
        .expect("the waiting client is served once a place frees");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

#[tokio::test]
async fn past_max_connections_per_client_new_clients_get_503_and_open_tunnels_keep_flowing() {
    let echo = echo_server().await;
    let text = config("    destination_allow 127.0.0.1;\n    max_connections_per_client 2;");
    let proxy = Proxy::start(&text);
    let mut first = tunnel(proxy.addr(), &echo.to_string()).await;
    let _second = tunnel(proxy.addr(), &echo.to_string()).await;
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    // The answer comes without a request: the refusal is made at accept.
    let response = read_to_close(&mut third).await;
    assert_eq!(response.status, 503, "{}", response.head);
    first.write_all(b"still here").await.unwrap();
    let mut buf = [0; 10];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    drop(first);
    // A place frees up when a connection ends (once sluice has seen it end).
    let freed = eventually(async || {
        let (stream, head) = connect(proxy.addr(), &echo.to_string()).await;
        head.starts_with("HTTP/1.1 200 ").then_some(stream)
    })
    .await;
    assert!(
        freed.is_some(),
        "the place of a closed connection was not returned"
    );
}

#[tokio::test]
async fn large_client_header_buffers_sets_414_and_431() {
    let proxy = Proxy::start(&config("    large_client_header_buffers 2 1k;"));
    let long_target = format!("CONNECT {}.test:443 HTTP/1.1\r\n\r\n", "a".repeat(1100));
    assert_eq!(
        exchange(proxy.addr(), long_target.as_bytes()).await.status,
        414
    );
    let long_line = format!(
        "CONNECT a.test:443 HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "b".repeat(1100)
    );
    assert_eq!(
        exchange(proxy.addr(), long_line.as_bytes()).await.status,
        431
    );
    let many = format!(
        "CONNECT a.test:443 HTTP/1.1\r\n{}\r\n",
        format!("X-Each: {}\r\n", "c".repeat(900)).repeat(3)
    );
    assert_eq!(exchange(proxy.addr(), many.as_bytes()).await.status, 431);
}
