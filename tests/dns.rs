//! DNS through the real binary against a DNS server the tests run on 127.0.0.1: the
//! `resolver` and `resolver_timeout` directives, the cache, coalescing, name-server failover,
//! and Happy Eyeballs over the addresses a name resolves to.

mod common;
mod dns {
    pub mod server;
}

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dns::server::{A, AAAA, DnsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An echo server on `ip` (any loopback address), port chosen by the kernel.
async fn echo_on(ip: &str) -> SocketAddr {
    serve(&format!("{ip}:0"), |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Sends a few bytes through an open tunnel and expects them back from the echo server.
async fn assert_echoes(stream: &mut TcpStream) {
    stream.write_all(b"through sluice").await.unwrap();
    let mut buf = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .expect("the echo answers")
        .unwrap();
    assert_eq!(&buf, b"through sluice");
}

/// The whole answer to `CONNECT target`, which must be an error.
async fn refused(proxy: SocketAddr, target: &str) -> ErrorResponse {
    let response = exchange(
        proxy,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
    )
    .await;
    response.assert_well_formed();
    response
}

/// A proxy that may CONNECT to loopback, with these extra directives.
fn proxy(extra: &str) -> Proxy {
    Proxy::start(&open_config(extra))
}

/// A name /etc/hosts lists with some address, other than localhost (which RFC 6761 answers
/// without asking anyone).
fn a_name_from_etc_hosts() -> Option<(String, String)> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let line = line.split('#').next()?;
        let mut words = line.split_whitespace();
        let addr = words.next()?;
        let name = words.find(|n| {
            !n.contains("localhost")
                && !n.starts_with("ip6-")
                && n.parse::<std::net::IpAddr>().is_err()
        })?;
        Some((name.to_ascii_lowercase(), addr.to_string()))
    })
}

#[tokio::test]
async fn a_name_resolves_through_the_configured_resolver_and_not_etc_hosts() {
    let dns = DnsServer::start().await;
    // The echo listens on 127.0.0.3 only: a name that reaches it was resolved by `dns`.
    let echo = echo_on("127.0.0.3").await;
    dns.answer("origin.sluice.test", &["127.0.0.3"]);
    let hosts_name = a_name_from_etc_hosts().filter(|(_, addr)| addr != "127.0.0.3");
    if let Some((name, _)) = &hosts_name {
        dns.answer(name, &["127.0.0.3"]);
    }
    let proxy = proxy(&format!("resolver {};", dns.addr));

    let mut stream = tunnel(proxy.addr(), &format!("origin.sluice.test:{}", echo.port())).await;
    assert_echoes(&mut stream).await;
    assert_eq!(dns.queries("origin.sluice.test", A), 1);
    assert_eq!(dns.queries("origin.sluice.test", AAAA), 1);
    let line = proxy
        .wait_for_log("resolved \"origin.sluice.test\" in ")
        .await;
    assert!(line.contains("(DNS): 127.0.0.3"), "{line}");

    match hosts_name {
        Some((name, addr)) => {
            // /etc/hosts says `addr`; the configured resolver says 127.0.0.3, and wins.
            let mut stream = tunnel(proxy.addr(), &format!("{name}:{}", echo.port())).await;
            assert_echoes(&mut stream).await;
            assert_eq!(dns.queries(&name, A), 1, "/etc/hosts has {name} as {addr}");
        }
        None => eprintln!("no name in /etc/hosts to check that it is ignored"),
    }
}

#[tokio::test]
async fn ip_literals_never_touch_dns() {
    let dns = DnsServer::start().await;
    let v4 = echo_on("127.0.0.1").await;
    let v6 = echo_on("[::1]").await;
    let proxy = proxy(&format!("resolver {};", dns.addr));
    for target in [
        format!("127.0.0.1:{}", v4.port()),
        format!("127.0.0.1.:{}", v4.port()),
        format!("[::1]:{}", v6.port()),
    ] {
        let mut stream = tunnel(proxy.addr(), &target).await;
        assert_echoes(&mut stream).await;
    }
    assert_eq!(dns.total_queries(), 0);
}

#[tokio::test]
async fn nxdomain_and_servfail_are_502_naming_the_host() {
    let dns = DnsServer::start().await;
    dns.nxdomain("gone.sluice.test")
        .servfail("broken.sluice.test")
        .answer("v6only.sluice.test", &["::1"]);
    let proxy = proxy(&format!("resolver {} ipv6=off;", dns.addr));

    let response = refused(proxy.addr(), "gone.sluice.test:443").await;
    assert_eq!(response.status, 502, "{}", response.body);
    assert_eq!(
        response.body,
        "502 Bad Gateway: cannot resolve \"gone.sluice.test\": no such host\n"
    );
    let response = refused(proxy.addr(), "broken.sluice.test:443").await;
    assert_eq!(response.status, 502, "{}", response.body);
    assert!(
        response.body.contains("\"broken.sluice.test\"") && response.body.contains("SERVFAIL"),
        "{}",
        response.body
    );
    // A name with no address sluice may use.
    let response = refused(proxy.addr(), "v6only.sluice.test:443").await;
    assert_eq!(response.status, 502, "{}", response.body);
    assert_eq!(
        response.body,
        "502 Bad Gateway: cannot resolve \"v6only.sluice.test\": no IPv4 address (ipv6=off)\n"
    );
}

#[tokio::test]
async fn a_silent_name_server_is_504_within_resolver_timeout() {
    // The server knows nothing about the name, so it never answers.
    let dns = DnsServer::start().await;
    let proxy = proxy(&format!("resolver {};\n    resolver_timeout 1s;", dns.addr));
    let started = Instant::now();
    let response = refused(proxy.addr(), "silent.sluice.test:443").await;
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.body);
    assert_eq!(
        response.body,
        "504 Gateway Timeout: resolving \"silent.sluice.test\" timed out\n"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(1) + LATENESS,
        "took {took:?}"
    );
    assert!(dns.queries("silent.sluice.test", A) >= 1);
    let line = proxy
        .wait_for_log("resolving \"silent.sluice.test\" failed in ")
        .await;
    assert!(line.contains("timed out"), "{line}");
}

#[tokio::test]
async fn answers_are_kept_for_valid_then_asked_for_again() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    // A TTL far longer than valid=: valid= decides.
    dns.ttl(3600).answer("cached.sluice.test", &["127.0.0.1"]);
    let proxy = proxy(&format!("resolver {} valid=1s;", dns.addr));
    let target = format!("cached.sluice.test:{}", echo.port());

    tunnel(proxy.addr(), &target).await;
    tunnel(proxy.addr(), &target).await;
    assert_eq!(dns.queries("cached.sluice.test", A), 1);
    let line = proxy
        .wait_for_log("resolved \"cached.sluice.test\" in ")
        .await;
    assert!(line.contains("(DNS)"), "{line}");
    proxy.wait_for_log("(cache): 127.0.0.1").await;

    tokio::time::sleep(Duration::from_millis(1300)).await;
    tunnel(proxy.addr(), &target).await;
    assert_eq!(dns.queries("cached.sluice.test", A), 2);
}

#[tokio::test]
async fn without_valid_the_record_ttl_decides() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    dns.ttl(1).answer("short.sluice.test", &["127.0.0.1"]);
    dns.ttl(3600).answer("long.sluice.test", &["127.0.0.1"]);
    let proxy = proxy(&format!("resolver {};", dns.addr));
    let short = format!("short.sluice.test:{}", echo.port());
    let long = format!("long.sluice.test:{}", echo.port());
    for target in [&short, &long, &short, &long] {
        tunnel(proxy.addr(), target).await;
    }
    assert_eq!(dns.queries("short.sluice.test", A), 1);
    assert_eq!(dns.queries("long.sluice.test", A), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    tunnel(proxy.addr(), &short).await;
    tunnel(proxy.addr(), &long).await;
    assert_eq!(dns.queries("short.sluice.test", A), 2, "a 1 s TTL expired");
    assert_eq!(dns.queries("long.sluice.test", A), 1, "a 1 h TTL did not");
}

#[tokio::test]
async fn negative_answers_are_cached_too_and_valid_caps_them() {
    let dns = DnsServer::start().await;
    // The SOA says negative answers may be kept an hour.
    dns.negative_ttl(3600).nxdomain("gone.sluice.test");
    let plain = proxy(&format!("resolver {};", dns.addr));
    for _ in 0..3 {
        assert_eq!(
            refused(plain.addr(), "gone.sluice.test:443").await.status,
            502
        );
    }
    assert_eq!(dns.queries("gone.sluice.test", A), 1);

    let other = DnsServer::start().await;
    other.negative_ttl(3600).nxdomain("gone.sluice.test");
    let capped = proxy(&format!("resolver {} valid=1s;", other.addr));
    assert_eq!(
        refused(capped.addr(), "gone.sluice.test:443").await.status,
        502
    );
    assert_eq!(
        refused(capped.addr(), "gone.sluice.test:443").await.status,
        502
    );
    assert_eq!(other.queries("gone.sluice.test", A), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        refused(capped.addr(), "gone.sluice.test:443").await.status,
        502
    );
    assert_eq!(other.queries("gone.sluice.test", A), 2);
}

#[tokio::test]
async fn fifty_concurrent_connects_to_a_new_name_send_one_query() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    // The answer takes a while, so every CONNECT arrives while the first query is out.
    dns.answer("busy.sluice.test", &["127.0.0.1"])
        .delay("busy.sluice.test", Duration::from_millis(200));
    let proxy = proxy(&format!("resolver {};", dns.addr));
    let target = format!("busy.sluice.test:{}", echo.port());
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (addr, target) = (proxy.addr(), target.clone());
        clients.push(tokio::spawn(async move {
            let mut stream = tunnel(addr, &target).await;
            assert_echoes(&mut stream).await;
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(dns.queries("busy.sluice.test", A), 1);
    assert_eq!(dns.queries("busy.sluice.test", AAAA), 1);
}

#[tokio::test]
async fn connects_arriving_during_a_failover_share_its_one_query() {
    // The first server is silent, so the lookup moves to the second after a second. CONNECTs
    // keep arriving meanwhile; each joins the lookup in progress instead of starting its own
    // (which would reach the second server a second after its own start, once the first
    // lookup's query there is over).
    let dead = DnsServer::start().await;
    let live = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    live.answer("later.sluice.test", &["127.0.0.1"]);
    let proxy = proxy(&format!(
        "resolver {} {};\n    resolver_timeout 5s;",
        dead.addr, live.addr
    ));
    let target = format!("later.sluice.test:{}", echo.port());
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (addr, target) = (proxy.addr(), target.clone());
        clients.push(tokio::spawn(async move {
            let mut stream = tunnel(addr, &target).await;
            assert_echoes(&mut stream).await;
        }));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(live.queries("later.sluice.test", A), 1);
    assert_eq!(dead.queries("later.sluice.test", A), 1);
}

#[tokio::test]
async fn many_different_names_at_once_all_resolve() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    for i in 0..100 {
        dns.answer(&format!("n{i}.sluice.test"), &["127.0.0.1"]);
    }
    let proxy = proxy(&format!("resolver {};", dns.addr));
    let mut clients = Vec::new();
    for i in 0..100 {
        let (addr, target) = (proxy.addr(), format!("n{i}.sluice.test:{}", echo.port()));
        clients.push(tokio::spawn(async move {
            let mut stream = tunnel(addr, &target).await;
            assert_echoes(&mut stream).await;
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(dns.queries(&format!("n{i}.sluice.test"), A), 1);
    }
}

#[tokio::test]
async fn ipv6_off_never_asks_aaaa_and_ipv4_off_never_asks_a() {
    let dns = DnsServer::start().await;
    let v4 = echo_on("127.0.0.1").await;
    let v6 = echo_on("[::1]").await;
    dns.answer("both.sluice.test", &["127.0.0.1", "::1"]);

    let no_v6 = proxy(&format!("resolver {} ipv6=off;", dns.addr));
    let mut stream = tunnel(no_v6.addr(), &format!("both.sluice.test:{}", v4.port())).await;
    assert_echoes(&mut stream).await;
    assert_eq!(dns.queries("both.sluice.test", A), 1);
    assert_eq!(dns.queries("both.sluice.test", AAAA), 0);

    let no_v4 = proxy(&format!("resolver {} ipv4=off;", dns.addr));
    let mut stream = tunnel(no_v4.addr(), &format!("both.sluice.test:{}", v6.port())).await;
    assert_echoes(&mut stream).await;
    assert_eq!(
        dns.queries("both.sluice.test", A),
        1,
        "no A query with ipv4=off"
    );
    assert_eq!(dns.queries("both.sluice.test", AAAA), 1);
}

#[tokio::test]
async fn a_silent_first_name_server_hands_over_to_the_second() {
    // `dead` knows no names: it counts the query and never answers.
    let dead = DnsServer::start().await;
    let live = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    live.answer("failover.sluice.test", &["127.0.0.1"]);
    let proxy = proxy(&format!(
        "resolver {} {};\n    resolver_timeout 5s;",
        dead.addr, live.addr
    ));
    let started = Instant::now();
    let mut stream = tunnel(
        proxy.addr(),
        &format!("failover.sluice.test:{}", echo.port()),
    )
    .await;
    let took = started.elapsed();
    assert_echoes(&mut stream).await;
    assert!(
        dead.queries("failover.sluice.test", A) >= 1,
        "the first server was asked first"
    );
    assert_eq!(live.queries("failover.sluice.test", A), 1);
    // The second server is asked a second after the first (resolver_timeout 5s / 3 servers+1
    // would be longer; the step is at most a second).
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_name_server_on_a_closed_port_hands_over_to_the_second() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let live = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    live.answer("failover.sluice.test", &["127.0.0.1"]);
    let proxy = proxy(&format!(
        "resolver {dead} {};\n    resolver_timeout 5s;",
        live.addr
    ));
    let started = Instant::now();
    let mut stream = tunnel(
        proxy.addr(),
        &format!("failover.sluice.test:{}", echo.port()),
    )
    .await;
    assert_echoes(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}

/// The quickest of `ROUNDS` runs of `run`: what it costs on this machine, without the stalls a
/// loaded machine adds to some runs (a fixed cost, such as a wait, is in every run).
async fn quickest(mut run: impl AsyncFnMut(usize)) -> Duration {
    const ROUNDS: usize = 3;
    let mut best = Duration::MAX;
    for round in 0..ROUNDS {
        let started = Instant::now();
        run(round).await;
        best = best.min(started.elapsed());
    }
    best
}

#[tokio::test]
async fn a_failing_first_name_server_hands_over_at_once() {
    let failing = DnsServer::start().await;
    let live = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    for round in 0..3 {
        failing
            .servfail(&format!("failover{round}.sluice.test"))
            .answer(&format!("direct{round}.sluice.test"), &["127.0.0.1"]);
        live.answer(&format!("failover{round}.sluice.test"), &["127.0.0.1"]);
    }
    let proxy = proxy(&format!(
        "resolver {} {};\n    resolver_timeout 10s;",
        failing.addr, live.addr
    ));
    // Against names the first server answers itself: the failover costs the second server's
    // answer, not the wait (a second) before a silent server's successor is asked.
    let tunnel_to = async |name: String| {
        let mut stream = tunnel(proxy.addr(), &format!("{name}:{}", echo.port())).await;
        assert_echoes(&mut stream).await;
    };
    let direct =
        quickest(async |round| tunnel_to(format!("direct{round}.sluice.test")).await).await;
    let failover =
        quickest(async |round| tunnel_to(format!("failover{round}.sluice.test")).await).await;
    for round in 0..3 {
        assert_eq!(
            failing.queries(&format!("failover{round}.sluice.test"), A),
            1
        );
    }
    assert!(
        failover < direct + Duration::from_millis(500),
        "failover took {failover:?}, a direct answer {direct:?}"
    );
}

#[tokio::test]
async fn name_servers_are_asked_in_the_order_written() {
    let first = DnsServer::start().await;
    let second = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    for server in [&first, &second] {
        server.ttl(0);
        for i in 0..5 {
            server.answer(&format!("o{i}.sluice.test"), &["127.0.0.1"]);
        }
    }
    let proxy = proxy(&format!("resolver {} {};", first.addr, second.addr));
    for i in 0..5 {
        tunnel(proxy.addr(), &format!("o{i}.sluice.test:{}", echo.port())).await;
    }
    for i in 0..5 {
        assert_eq!(first.queries(&format!("o{i}.sluice.test"), A), 1);
    }
    assert_eq!(
        second.total_queries(),
        0,
        "the second server is asked only for failover"
    );
}

#[tokio::test]
async fn a_name_server_that_drops_aaaa_costs_at_most_half_a_second() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    dns.answer("v4.sluice.test", &["127.0.0.1"])
        .drop_type("v4.sluice.test", AAAA);
    let proxy = proxy(&format!(
        "resolver {};\n    resolver_timeout 10s;",
        dns.addr
    ));
    let started = Instant::now();
    let mut stream = tunnel(proxy.addr(), &format!("v4.sluice.test:{}", echo.port())).await;
    let took = started.elapsed();
    assert_echoes(&mut stream).await;
    assert!(dns.queries("v4.sluice.test", AAAA) >= 1);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(500) + LATENESS,
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_name_whose_first_address_refuses_connects_to_the_second_at_once() {
    let dns = DnsServer::start().await;
    let echo = echo_on("127.0.0.1").await;
    // Nothing listens on 127.0.0.2 at the echo's port: that address refuses.
    assert!(
        std::net::TcpStream::connect(("127.0.0.2", echo.port())).is_err(),
        "something listens on 127.0.0.2:{}",
        echo.port()
    );
    dns.answer("two.sluice.test", &["127.0.0.2", "127.0.0.1"]);
    let proxy = proxy(&format!("resolver {};", dns.addr));
    let target = format!("two.sluice.test:{}", echo.port());
    // Against a name of the echo's address alone; the first CONNECT to each resolves, the
    // measured ones dial alone. A refused first address must not cost the 250 ms that a
    // silent one gives before the next is tried.
    dns.answer("one.sluice.test", &["127.0.0.1"]);
    let single = format!("one.sluice.test:{}", echo.port());
    tunnel(proxy.addr(), &target).await;
    tunnel(proxy.addr(), &single).await;
    let tunnel_to = async |target: &str| {
        let mut stream = tunnel(proxy.addr(), target).await;
        assert_echoes(&mut stream).await;
    };
    let one = quickest(async |_| tunnel_to(&single).await).await;
    let two = quickest(async |_| tunnel_to(&target).await).await;
    assert!(
        two < one + Duration::from_millis(200),
        "a refused address held the next back: {two:?}, {one:?} with one address"
    );
    proxy.wait_for_log("connect to 127.0.0.2:").await;
}

/// A listener on `addr` whose accept queue is full, so connects to it hang; `None` if the
/// address is taken or the kernel answers anyway.
async fn blackhole(addr: SocketAddr) -> Option<(socket2::Socket, Vec<TcpStream>)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.bind(&addr.into()).ok()?;
    socket.listen(0).ok()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Err(_) => return Some((socket, fillers)),
            Ok(Err(_)) => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_name_whose_first_address_is_silent_connects_to_the_second_after_250ms() {
    // The same port on two loopback addresses: a black hole on 127.0.0.2, the echo on
    // 127.0.0.1. Ports are retried a few times in case one is taken on 127.0.0.2.
    let mut found = None;
    for _ in 0..5 {
        let echo = echo_on("127.0.0.1").await;
        if let Some(hole) = blackhole(SocketAddr::from(([127, 0, 0, 2], echo.port()))).await {
            found = Some((echo, hole));
            break;
        }
    }
    let Some((echo, _hole)) = found else {
        eprintln!("SKIPPED: could not make a listener that ignores SYNs");
        return;
    };
    let dns = DnsServer::start().await;
    dns.answer("hole.sluice.test", &["127.0.0.2", "127.0.0.1"]);
    let proxy = proxy(&format!(
        "resolver {};\n    proxy_connect_connect_timeout 10s;",
        dns.addr
    ));
    let target = format!("hole.sluice.test:{}", echo.port());
    let started = Instant::now();
    let mut stream = tunnel(proxy.addr(), &target).await;
    let took = started.elapsed();
    assert_echoes(&mut stream).await;
    assert!(
        took >= Duration::from_millis(240) && took < Duration::from_millis(250) + LATENESS,
        "took {took:?}: the second address should start 250 ms after the first, long before \
         the connect timeout"
    );
}

#[tokio::test]
async fn without_a_resolver_etc_hosts_alone_answers_the_names_it_lists() {
    let Some((name, addr)) = a_name_from_etc_hosts() else {
        eprintln!("SKIPPED: no name in /etc/hosts");
        return;
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return;
    };
    let shown = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let echo = echo_on(&shown).await;
    let proxy = Proxy::start(&open_config(&format!("    destination_allow {ip};")));
    let started = Instant::now();
    let mut stream = tunnel(proxy.addr(), &format!("{name}:{}", echo.port())).await;
    assert_echoes(&mut stream).await;
    // No query for the family the file does not list, so no wait for one.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn every_directive_form_parses_and_bad_forms_name_their_line() {
    let dir = TempDir::new();
    let check = |directives: &str| {
        let path = dir.0.join("proxy.conf");
        std::fs::write(
            &path,
            format!("server {{\n    listen 127.0.0.1:0;\n    {directives}\n}}\n"),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-t", "-c", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr, path.display().to_string())
    };
    for good in [
        "resolver 8.8.8.8 1.1.1.1 valid=300s ipv6=off;",
        "resolver 127.0.0.1:5353 [::1]:53;",
        "resolver [::1] valid=500ms ipv4=on ipv6=on;",
        "resolver 127.0.0.1 ipv4=off;",
        "resolver 127.0.0.1; resolver_timeout 5s;",
        "resolver_timeout 250ms;",
    ] {
        let (ok, stderr, _) = check(good);
        assert!(ok, "{good}: {stderr}");
    }
    for (bad, message) in [
        (
            "resolver dns.example.invalid;",
            "host not found in resolver \"dns.example.invalid\"",
        ),
        (
            "resolver dns.example.invalid:53;",
            "host not found in resolver \"dns.example.invalid:53\"",
        ),
        ("resolver dns_example;", "invalid address \"dns_example\""),
        ("resolver 127.0.0.1:0;", "invalid address \"127.0.0.1:0\""),
        ("resolver valid=30s;", "no name server address"),
        (
            "resolver 127.0.0.1 valid=0;",
            "invalid parameter \"valid=0\"",
        ),
        (
            "resolver 127.0.0.1 ipv6=no;",
            "invalid parameter \"ipv6=no\"",
        ),
        (
            "resolver 127.0.0.1 ipv4=off ipv6=off;",
            "cannot both be \"off\"",
        ),
        (
            "resolver_timeout soon;",
            "\"resolver_timeout\" directive invalid value",
        ),
        (
            "resolver_timeout 0;",
            "\"resolver_timeout\" directive invalid value",
        ),
    ] {
        let (ok, stderr, path) = check(bad);
        assert!(!ok, "{bad} was accepted");
        assert!(
            stderr.contains(message) && stderr.contains(&format!(" in {path}:3\n")),
            "{bad}: {stderr}"
        );
    }
}

/// The SSRF guard holds for names: a public-looking name that the configured name server
/// points at loopback is refused after resolution, with no connection made, until a rule
/// allows that address.
#[tokio::test]
async fn a_name_the_resolver_points_at_loopback_is_denied_by_default() {
    let dns = DnsServer::start().await;
    let dialled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&dialled);
    let echo = serve("127.0.0.1:0", move |mut stream| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    })
    .await;
    dns.answer("rebind.sluice.test", &["127.0.0.1"]);
    let target = format!("rebind.sluice.test:{}", echo.port());
    let guarded = Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         resolver {};\n}}\n",
        dns.addr
    ));
    let response = refused(guarded.addr(), &target).await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert!(response.body.contains("127.0.0.1"), "{}", response.body);
    assert_eq!(dns.queries("rebind.sluice.test", A), 1, "refused after DNS");
    assert_eq!(dialled.load(std::sync::atomic::Ordering::SeqCst), 0);

    let allowed = proxy(&format!("resolver {};", dns.addr));
    let mut stream = tunnel(allowed.addr(), &target).await;
    assert_echoes(&mut stream).await;
    assert_eq!(dialled.load(std::sync::atomic::Ordering::SeqCst), 1);
}
