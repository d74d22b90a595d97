//! Server-side request forgery, through the real binary: no rule, name or spelling of an
//! address lets a client reach the host's loopback, its cloud metadata service or the proxy's
//! own listeners. Every refusal here is a 403 sent before anything is dialled.

mod common;
#[allow(dead_code)] // only `answer` is needed here
mod dns {
    pub mod server;
}

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use common::*;
use dns::server::DnsServer;

/// A server block on a free loopback port, tunnelling and forwarding, with these directives.
fn config(directives: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n{directives}\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

/// Sends `request` and insists on a well-formed 403 whose body contains `reason`.
async fn assert_refused(proxy: SocketAddr, request: &str, reason: &str) {
    let response = exchange(proxy, request.as_bytes()).await;
    assert_eq!(response.status, 403, "{request:?}: {}", response.body);
    response.assert_well_formed();
    assert!(
        response.body.contains(reason),
        "{request:?}: {:?} lacks {reason:?}",
        response.body
    );
}

fn connect(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

fn get(authority: &str) -> String {
    format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn a_name_rule_does_not_open_loopback_or_metadata_addresses_its_dns_answers() {
    let echo = echo_server().await;
    let origin = Origin::start(|_| ok(b"reached")).await;
    let dns = DnsServer::start().await;
    dns.answer("evil.partner.example", &["127.0.0.1"]);
    dns.answer("meta.partner.example", &["169.254.169.254"]);
    dns.answer("mapped.partner.example", &["::ffff:127.0.0.1"]);
    let proxy = Proxy::start(&config(&format!(
        "    resolver {};\n    destination_allow *.partner.example;\n    destination_deny all;",
        dns.addr
    )));
    // Loopback first: before the fix these were dialled and reached the test's own servers.
    assert_refused(
        proxy.addr(),
        &connect(&format!("evil.partner.example:{}", echo.port())),
        "127.0.0.1 is a loopback address",
    )
    .await;
    assert_refused(
        proxy.addr(),
        &get(&format!("evil.partner.example:{}", origin.addr.port())),
        "127.0.0.1 is a loopback address",
    )
    .await;
    assert_refused(
        proxy.addr(),
        &connect(&format!("mapped.partner.example:{}", echo.port())),
        "loopback",
    )
    .await;
    for request in [
        connect("meta.partner.example:80"),
        get("meta.partner.example"),
    ] {
        assert_refused(
            proxy.addr(),
            &request,
            "169.254.169.254 is a link-local (cloud metadata) address",
        )
        .await;
    }
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
    assert!(origin.recorded().is_empty());
}

#[tokio::test]
async fn destination_allow_all_does_not_open_loopback_but_an_address_rule_does() {
    let echo = echo_server().await;
    let target = format!("127.0.0.1:{}", echo.port());
    let all = Proxy::start(&config("    destination_allow all;"));
    assert_refused(all.addr(), &connect(&target), "loopback").await;
    let wide = Proxy::start(&config("    destination_allow 0.0.0.0/0;"));
    assert_refused(wide.addr(), &connect(&target), "loopback").await;
    let named = Proxy::start(&config("    destination_allow 127.0.0.1;"));
    tunnel(named.addr(), &target).await;
}

#[tokio::test]
async fn ipv6_spellings_of_a_refused_ipv4_address_are_refused() {
    let proxy = Proxy::start(&config(""));
    for (target, reason) in [
        // NAT64, well-known and local-use prefixes.
        (
            "[64:ff9b::7f00:1]:3128",
            "carrying 127.0.0.1) is a loopback address",
        ),
        ("[64:ff9b::a9fe:a9fe]:80", "carrying 169.254.169.254"),
        ("[64:ff9b:1::7f00:1]:3128", "carrying 127.0.0.1"),
        // IPv4-translated and IPv4-compatible.
        (
            "[::ffff:0:127.0.0.1]:3128",
            "carrying 127.0.0.1) is a loopback",
        ),
        ("[::127.0.0.1]:3128", "carrying 127.0.0.1) is a loopback"),
        // 6to4 and Teredo (client 127.0.0.1, inverted).
        ("[2002:7f00:1::1]:3128", "carrying 127.0.0.1"),
        ("[2001:0:c000:201::80ff:fffe]:3128", "carrying 127.0.0.1"),
        // The other clouds' metadata services.
        ("[fd00:ec2::254]:80", "cloud metadata (AWS)"),
        ("[fd20:ce::254]:80", "cloud metadata (Google Cloud)"),
        ("100.100.100.200:80", "cloud metadata (Alibaba Cloud)"),
        ("[64:ff9b::6464:64c8]:80", "cloud metadata (Alibaba Cloud)"),
    ] {
        assert_refused(proxy.addr(), &connect(target), reason).await;
    }
    assert_refused(
        proxy.addr(),
        &get("[64:ff9b::a9fe:a9fe]"),
        "carrying 169.254.169.254",
    )
    .await;
}

#[tokio::test]
async fn an_address_rule_holds_for_the_ipv6_spellings_of_its_addresses() {
    let proxy = Proxy::start(&config(
        "    destination_deny 10.0.0.0/8;\n    destination_allow all;",
    ));
    for target in [
        "[64:ff9b::a00:1]:443",
        "[64:ff9b:1::a00:1]:443",
        "[::ffff:0:10.0.0.1]:443",
        "[2002:a00:1::1]:443",
        "[2001:0:c000:201::f5ff:fffe]:443",
    ] {
        assert_refused(proxy.addr(), &connect(target), "destination_deny in ").await;
    }
}

/// Every non-loopback address of this host in `family`, or loopback if it has no other.
fn host_addresses(v4: bool) -> Vec<IpAddr> {
    let all: Vec<IpAddr> = sluice::access::host_addresses()
        .into_iter()
        .filter(|ip| ip.is_ipv4() == v4)
        .collect();
    let others: Vec<IpAddr> = all.iter().copied().filter(|ip| !ip.is_loopback()).collect();
    if others.is_empty() {
        eprintln!("note: this host has no non-loopback address of that family; guarding {all:?}");
        return all;
    }
    others
}

fn authority(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[tokio::test]
async fn a_wildcard_listener_is_never_a_destination_at_any_address_of_this_host() {
    // Clients only from loopback: the listener is on every address for the test's sake.
    let proxy = Proxy::start_with(
        "server {\n    listen 0.0.0.0:0;\n    listen [::]:0;\n    proxy_connect;\n    \
         proxy_connect_allow all;\n    allow 127.0.0.1;\n    allow ::1;\n    deny all;\n    \
         destination_allow 127.0.0.0/8 ::1;\n    destination_allow all;\n}\n",
        2,
    );
    let (v4_port, v6_port) = (proxy.addrs[0].port(), proxy.addrs[1].port());
    let client = SocketAddr::from(([127, 0, 0, 1], v4_port));
    let mut targets = vec![
        authority("127.0.0.1".parse().unwrap(), v4_port),
        authority("::1".parse().unwrap(), v6_port),
    ];
    targets.extend(
        host_addresses(true)
            .into_iter()
            .map(|ip| authority(ip, v4_port)),
    );
    targets.extend(
        host_addresses(false)
            .into_iter()
            .map(|ip| authority(ip, v6_port)),
    );
    for target in &targets {
        assert_refused(client, &connect(target), "own listener").await;
    }
}

#[tokio::test]
async fn proxy_connect_address_may_not_point_at_the_proxys_own_wildcard_listener() {
    // A port free on every address, for a config that must name it.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(&format!(
        "server {{\n    listen 0.0.0.0:{port};\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         allow 127.0.0.1;\n    deny all;\n    proxy_connect_address 127.0.0.1;\n}}\n"
    ));
    let client = SocketAddr::from(([127, 0, 0, 1], proxy.addr().port()));
    assert_refused(
        client,
        &connect(&format!("anywhere.example:{port}")),
        "own listener",
    )
    .await;
}
