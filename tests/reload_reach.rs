//! A reload reaches connections already open: the next request on a keep-alive connection is
//! judged by the new configuration, while open tunnels keep flowing and per-client connection
//! counts carry over.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends SIGHUP and waits (bounded) until sluice logs that the reload succeeded.
async fn reload(proxy: &Proxy) {
    let outcome = sighup(proxy).await;
    assert!(outcome.contains("reloaded "), "{outcome}\n{}", proxy.log());
}

/// A forwarding server on a free loopback port with `extra` inside.
fn forwarding(extra: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n\
         {extra}\n    location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

/// Sends a keep-alive GET for `origin` through the proxy connection and reads the answer.
async fn get(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    origin: SocketAddr,
    auth: Option<&str>,
) -> (u16, String) {
    let auth = auth.map_or_else(String::new, |a| format!("Proxy-Authorization: {a}\r\n"));
    let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, _) =
        tokio::time::timeout(Duration::from_secs(10), read_response(stream, buf, false))
            .await
            .expect("an answer")
            .expect("a whole response");
    (status, head)
}

#[tokio::test]
async fn a_newly_denied_destination_is_refused_on_an_open_keep_alive_connection() {
    let origin = Origin::start(|_| ok(b"hello")).await;
    let echo = echo_server().await;
    let allowed = forwarding("    destination_allow 127.0.0.0/8;");
    let proxy = Proxy::start(&allowed);
    let mut open_tunnel = tunnel(proxy.addr(), &echo.to_string()).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(get(&mut client, &mut buf, origin.addr, None).await.0, 200);

    // Without the allow rule, loopback destinations are refused by the built-in rules.
    std::fs::write(proxy.config_path(), forwarding("")).unwrap();
    reload(&proxy).await;

    let (status, head) = get(&mut client, &mut buf, origin.addr, None).await;
    assert_eq!(status, 403, "{head}");
    assert_eq!(
        origin.recorded().len(),
        1,
        "the refused request never reached the origin"
    );
    // The tunnel opened before the reload keeps flowing.
    open_tunnel.write_all(b"across").await.unwrap();
    let mut back = [0; 6];
    tokio::time::timeout(Duration::from_secs(5), open_tunnel.read_exact(&mut back))
        .await
        .expect("the tunnel still echoes")
        .unwrap();
    assert_eq!(&back, b"across");
}

#[tokio::test]
async fn a_user_removed_from_the_user_file_is_refused_on_an_open_keep_alive_connection() {
    let origin = Origin::start(|_| ok(b"hello")).await;
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, "bob:{PLAIN}secret\namy:{PLAIN}other\n").unwrap();
    let config = forwarding(&format!(
        "    destination_allow 127.0.0.0/8;\n    auth_basic \"proxy\";\n    \
         auth_basic_user_file {};",
        users.display()
    ));
    let proxy = Proxy::start(&config);
    let bob = basic("bob", "secret");
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        get(&mut client, &mut buf, origin.addr, Some(&bob)).await.0,
        200
    );

    std::fs::write(&users, "amy:{PLAIN}other\n").unwrap();
    reload(&proxy).await;

    let (status, head) = get(&mut client, &mut buf, origin.addr, Some(&bob)).await;
    assert_eq!(status, 407, "{head}");
    assert_eq!(origin.recorded().len(), 1);
}

#[tokio::test]
async fn per_client_connection_counts_survive_a_reload() {
    let echo = echo_server().await;
    let config = open_config("    max_connections_per_client 2;");
    let proxy = Proxy::start(&config);
    // Two tunnels: both connections are accepted and hold their places.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tunnel(proxy.addr(), &echo.to_string()).await);
    }
    assert_eq!(
        exchange(proxy.addr(), b"CONNECT x:1 HTTP/1.1\r\n\r\n")
            .await
            .status,
        503
    );

    // The same limit, reloaded (a comment changes the file).
    std::fs::write(proxy.config_path(), format!("# reloaded\n{config}")).unwrap();
    reload(&proxy).await;
    let third = exchange(proxy.addr(), b"CONNECT x:1 HTTP/1.1\r\n\r\n").await;
    assert_eq!(third.status, 503, "{}", third.head);

    // A place given back is free again.
    drop(held.pop());
    let admitted = eventually(async || {
        let (stream, head) = connect(proxy.addr(), &echo.to_string()).await;
        head.starts_with("HTTP/1.1 200 ").then_some(stream)
    })
    .await;
    assert!(admitted.is_some(), "the freed place was never given again");
}
