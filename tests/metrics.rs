//! `status_listen` through the real binary: `/metrics` parses as strict Prometheus text and
//! its counters move exactly with the traffic; `/healthz`; nothing else is served there, and
//! the status address can never be a tunnel's destination.

mod common;
#[allow(dead_code)] // this file uses a few of the test DNS server's knobs
mod dns {
    pub mod server;
}

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;

use common::*;
use dns::server::DnsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One scrape: every sample by `name{labels}` as written.
#[derive(Debug, Clone)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The value of `name{labels}` (`labels` as written, e.g. `class="2xx"`).
    fn get(&self, name: &str, labels: &str) -> f64 {
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labels}}}")
        };
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }
}

/// Parses Prometheus text format 0.0.4 strictly, panicking on anything it does not allow.
fn parse(text: &str) -> Scrape {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut seen_families = HashSet::new();
    // Histogram families: (bucket bounds and counts in order, count).
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    let mut last_family = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    assert!(valid_name(name), "{line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_string(), kind.to_string()).is_none(),
                        "a second TYPE line: {line}"
                    );
                    assert!(!seen_families.contains(*name), "TYPE after samples: {line}");
                    if *kind == "counter" {
                        assert!(name.ends_with("_total"), "a counter without _total: {line}");
                    }
                }
                ["HELP", name, help] => {
                    assert!(valid_name(name), "{line}");
                    assert!(!help.is_empty(), "{line}");
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "an empty line");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                (name, parse_labels(labels, line))
            }
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        if family != last_family {
            assert!(
                seen_families.insert(family.to_string()),
                "the samples of {family} are not together"
            );
            last_family = family.to_string();
        }
        if kind == "counter" || kind == "gauge" {
            assert!(value >= 0.0, "{line}");
        }
        if kind == "histogram" {
            if name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .unwrap_or_else(|| panic!("a bucket without le: {line}"));
                let bound = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().unwrap()
                };
                buckets
                    .entry(family.to_string())
                    .or_default()
                    .push((bound, value));
            } else if name.ends_with("_count") {
                counts.insert(family.to_string(), value);
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "a duplicate series: {line}"
        );
    }
    for (family, list) in &buckets {
        for pair in list.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{family}: bounds not increasing");
            assert!(pair[0].1 <= pair[1].1, "{family}: buckets not cumulative");
        }
        let last = list.last().unwrap();
        assert!(last.0.is_infinite(), "{family}: no +Inf bucket");
        assert_eq!(
            Some(&last.1),
            counts.get(family),
            "{family}: +Inf != _count"
        );
        assert!(
            samples.contains_key(&format!("{family}_sum")),
            "{family}_sum"
        );
    }
    Scrape(samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
        assert!(valid_name(name) && !name.starts_with("__"), "{line}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape in {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        };
        assert!(
            !labels.iter().any(|(n, _)| n == name),
            "a repeated label: {line}"
        );
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else {
            assert!(rest.is_empty(), "{line}");
        }
    }
    labels
}

/// `GET path` on the status listener.
async fn get(addr: SocketAddr, path: &str) -> ErrorResponse {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(
        response
            .head
            .contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{}",
        response.head
    );
    response.assert_well_formed();
    parse(&response.body)
}

/// Scrapes until no connection or tunnel is open (their counts are added when they end).
async fn settled(addr: SocketAddr) -> Scrape {
    eventually(async || {
        let now = scrape(addr).await;
        (now.get("sluice_connections_open", "") == 0.0 && now.get("sluice_tunnels_open", "") == 0.0)
            .then_some(now)
    })
    .await
    .expect("connections stayed open")
}

#[tokio::test]
async fn counters_move_exactly_with_the_traffic() {
    let dns = DnsServer::start().await;
    dns.ttl(300)
        .answer("sink.test", &["127.0.0.1"])
        .nxdomain("nope.test");
    let sink = sink_server().await;
    let origin = Origin::start(|_| ok(b"0123456789")).await;
    let config = format!(
        "status_listen 127.0.0.1:0;\n{}",
        open_config(&format!(
            "    resolver {} ipv6=off;\n    location / {{ proxy_pass http://$http_host$request_uri; }}",
            dns.addr
        ))
    );
    let proxy = Proxy::start(&config);
    let status = proxy.status_addr();
    let before = settled(status).await;
    assert_eq!(before.get("sluice_tunnels_total", ""), 0.0);

    // Two tunnels to a name: one DNS query, then a cache hit.
    let target = format!("sink.test:{}", sink.port());
    let mut up_total = 0;
    let mut down_total = 0;
    for _ in 0..2 {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        stream.write_all(&pattern(5000, 1)).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut down = Vec::new();
        stream.read_to_end(&mut down).await.unwrap();
        up_total += request.len() + 5000;
        down_total += head.len() + down.len();
    }
    // A forwarded request.
    let request = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        origin.addr, origin.addr
    );
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    // A name that does not exist, a refused port, a forbidden destination.
    assert_eq!(
        exchange(proxy.addr(), b"CONNECT nope.test:443 HTTP/1.1\r\n\r\n")
            .await
            .status,
        502
    );
    assert_eq!(
        exchange(proxy.addr(), b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
            .await
            .status,
        502
    );
    assert_eq!(
        exchange(
            proxy.addr(),
            b"CONNECT 169.254.169.254:443 HTTP/1.1\r\n\r\n"
        )
        .await
        .status,
        403
    );

    let after = settled(status).await;
    let delta = |name: &str, labels: &str| after.get(name, labels) - before.get(name, labels);
    assert_eq!(delta("sluice_connections_accepted_total", ""), 6.0);
    assert_eq!(delta("sluice_tunnels_total", ""), 2.0);
    assert_eq!(delta("sluice_http_requests_total", "class=\"2xx\""), 3.0);
    assert_eq!(delta("sluice_http_requests_total", "class=\"4xx\""), 1.0);
    assert_eq!(delta("sluice_http_requests_total", "class=\"5xx\""), 2.0);
    assert_eq!(
        delta("sluice_bytes_total", "mode=\"tunnel\",direction=\"up\""),
        up_total as f64
    );
    assert_eq!(
        delta("sluice_bytes_total", "mode=\"tunnel\",direction=\"down\""),
        down_total as f64
    );
    assert_eq!(
        delta("sluice_bytes_total", "mode=\"forward\",direction=\"up\""),
        request.len() as f64
    );
    assert_eq!(
        delta("sluice_bytes_total", "mode=\"forward\",direction=\"down\""),
        answer.len() as f64
    );
    // sink.test once (then cached), nope.test once.
    assert_eq!(delta("sluice_dns_lookups_total", ""), 2.0);
    assert_eq!(delta("sluice_dns_cache_hits_total", ""), 1.0);
    assert_eq!(delta("sluice_dns_lookup_seconds_count", ""), 2.0);
    assert_eq!(delta("sluice_dns_failures_total", "kind=\"nxdomain\""), 1.0);
    assert_eq!(delta("sluice_dns_failures_total", "kind=\"timeout\""), 0.0);
    assert_eq!(
        delta(
            "sluice_upstream_connect_failures_total",
            "cause=\"refused\""
        ),
        1.0
    );
    assert_eq!(
        delta("sluice_upstream_connect_failures_total", "cause=\"denied\""),
        1.0
    );
    assert_eq!(delta("sluice_refused_total", "reason=\"destination\""), 1.0);
    assert_eq!(delta("sluice_access_log_dropped_total", ""), 0.0);
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, "pat:{PLAIN}secret\n").unwrap();
    let config = format!(
        "status_listen 127.0.0.1:0;\n\
         server {{ listen 127.0.0.1:0; proxy_connect; allow 10.0.0.0/8; deny all; }}\n\
         server {{ listen 127.0.0.1:0; proxy_connect; auth_basic \"x\"; auth_basic_user_file {}; }}\n\
         server {{ listen 127.0.0.1:0; proxy_connect; max_connections_per_client 1; }}\n",
        users.display()
    );
    let proxy = Proxy::start_with(&config, 3);
    let status = proxy.status_addr();
    let before = settled(status).await;
    let connect = b"CONNECT example.org:443 HTTP/1.1\r\n\r\n";
    assert_eq!(exchange(proxy.addrs[0], connect).await.status, 403);
    assert_eq!(exchange(proxy.addrs[1], connect).await.status, 407);
    let held = TcpStream::connect(proxy.addrs[2]).await.unwrap();
    // Accepted in order: `held` has the client's one place before the next connection asks.
    assert_eq!(exchange(proxy.addrs[2], connect).await.status, 503);
    assert_eq!(
        exchange(proxy.addrs[2], b"CONNECT 127.0.0.1:25 HTTP/1.1\r\n\r\n")
            .await
            .status,
        503,
        "still one held"
    );
    drop(held);
    // Its place is given back when its connection ends.
    settled(status).await;
    assert_eq!(
        exchange(proxy.addrs[2], b"CONNECT 127.0.0.1:25 HTTP/1.1\r\n\r\n")
            .await
            .status,
        403
    );
    let after = settled(status).await;
    let delta = |reason: &str| {
        let labels = format!("reason=\"{reason}\"");
        after.get("sluice_refused_total", &labels) - before.get("sluice_refused_total", &labels)
    };
    assert_eq!(delta("acl"), 1.0);
    assert_eq!(delta("auth"), 1.0);
    assert_eq!(delta("limit"), 2.0);
    assert_eq!(delta("port"), 1.0);
    assert_eq!(delta("destination"), 0.0);
}

#[tokio::test]
async fn the_status_listener_serves_health_and_nothing_else() {
    let proxy = Proxy::start(&format!("status_listen 127.0.0.1:0;\n{}", open_config("")));
    let status = proxy.status_addr();
    let health = get(status, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    health.assert_well_formed();
    assert_eq!(get(status, "/").await.status, 404);
    assert_eq!(get(status, "/metrics/x").await.status, 404);
    assert_eq!(get(status, "http://example.org/metrics").await.status, 404);
    let post = exchange(
        status,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(post.status, 405);
    // Not a proxy, whatever is asked.
    let target = proxy.addr().to_string();
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    assert_eq!(exchange(status, connect.as_bytes()).await.status, 405);
    // And never a destination, though the rules allow 127.0.0.0/8.
    let connect = format!("CONNECT {status} HTTP/1.1\r\nHost: {status}\r\n\r\n");
    let refused = exchange(proxy.addr(), connect.as_bytes()).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    // Still serving.
    assert_eq!(get(status, "/healthz").await.status, 200);
}

#[test]
fn status_listen_errors_name_their_line() {
    let dir = TempDir::new();
    let path = dir.0.join("proxy.conf");
    for (value, expected) in [
        (
            "localhost:9145",
            "invalid address \"localhost:9145\" in \"status_listen\" directive",
        ),
        ("9145", "invalid address \"9145\" in \"status_listen\""),
        (
            "127.0.0.1:3128",
            "status_listen 127.0.0.1:3128 is also a proxy listener",
        ),
    ] {
        std::fs::write(
            &path,
            format!("status_listen {value};\nserver {{\n    listen 127.0.0.1:3128;\n}}\n"),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-t", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{value}: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains(&format!("in {}:1", path.display())),
            "{stderr}"
        );
    }
    std::fs::write(
        &path,
        "server {\n    listen 127.0.0.1:3128;\n    status_listen 127.0.0.1:9145;\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "\"status_listen\" directive is not allowed here in {}:3",
            path.display()
        )),
        "{stderr}"
    );
}
