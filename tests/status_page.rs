//! The live view (`/status`, `/status.json`) through the real binary: real tunnels and
//! forwarded requests appear with their destinations and the bytes the test sent, filters
//! narrow the list, the orders hold, `status_allow` / `status_deny` refuse with 403, a hostile
//! host name is escaped, and a real headless browser (chromium) renders the page.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::json::Json;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `GET path` from `from` (a loopback address of the test's choice).
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> ErrorResponse {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_to_close(&mut stream).await
}

async fn get(addr: SocketAddr, path: &str) -> ErrorResponse {
    get_from("127.0.0.1", addr, path).await
}

async fn status_json(addr: SocketAddr, query: &str) -> Json {
    let response = get(addr, &format!("/status.json{query}")).await;
    assert_eq!(response.status, 200, "{}\n{}", response.head, response.body);
    assert!(
        response.head.contains("Content-Type: application/json"),
        "{}",
        response.head
    );
    Json::parse(&response.body)
}

/// Loads `/status.json?query` until `done` holds for it; bounded.
async fn wait_for(addr: SocketAddr, query: &str, done: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let json = status_json(addr, query).await;
        if done(&json) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the expected state: {json:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn connections(json: &Json) -> &[Json] {
    json.get("connections").array()
}

/// The entry of the connection from `client`.
fn entry(json: &Json, client: SocketAddr) -> Option<&Json> {
    let client = client.to_string();
    connections(json)
        .iter()
        .find(|c| c.get("client").str() == Some(client.as_str()))
}

/// Writes `len` bytes through a tunnel to the echo server and reads them back.
async fn echo_through(stream: &mut TcpStream, len: usize) {
    let data = pattern(len, len as u64);
    stream.write_all(&data).await.unwrap();
    let mut back = vec![0; len];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("the echo came back")
        .unwrap();
    assert!(back == data);
}

fn config(extra: &str) -> String {
    format!(
        "status_listen 127.0.0.1:0;\n{extra}\n{}",
        open_config("    location / { proxy_pass http://$http_host$request_uri; }")
    )
}

/// What a scenario left open: two tunnels, one keep-alive connection after a forwarded
/// request; the exact bytes each carried.
struct Scene {
    small: (TcpStream, SocketAddr),
    large: (TcpStream, SocketAddr),
    forwarded: (TcpStream, SocketAddr),
    echo: SocketAddr,
    origin: Origin,
    /// Bytes of one CONNECT request head.
    connect_head: u64,
    /// Bytes of the forwarded request, and of its response.
    forwarded_up: u64,
    forwarded_down: u64,
}

const SMALL: usize = 1000;
const LARGE: usize = 300_000;

async fn scene(proxy: &Proxy) -> Scene {
    let echo = echo_server().await;
    let origin = Origin::start(|_| ok(&[b'x'; 5000])).await;
    let target = echo.to_string();
    let mut small = tunnel(proxy.addr(), &target).await;
    echo_through(&mut small, SMALL).await;
    let mut large = tunnel(proxy.addr(), &target).await;
    echo_through(&mut large, LARGE).await;
    let connect_head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").len();
    let mut forwarded = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET http://{0}/file HTTP/1.1\r\nHost: {0}\r\n\r\n",
        origin.addr
    );
    forwarded.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut forwarded).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0; 5000];
    forwarded.read_exact(&mut body).await.unwrap();
    let (small_addr, large_addr, forwarded_addr) = (
        small.local_addr().unwrap(),
        large.local_addr().unwrap(),
        forwarded.local_addr().unwrap(),
    );
    Scene {
        small: (small, small_addr),
        large: (large, large_addr),
        forwarded: (forwarded, forwarded_addr),
        echo,
        origin,
        connect_head: connect_head as u64,
        forwarded_up: request.len() as u64,
        forwarded_down: (head.len() + 5000) as u64,
    }
}

/// Tunnels and a forwarded request appear with their destinations, upstreams, states and the
/// exact bytes that crossed; the filters narrow the list; the orders hold.
#[tokio::test]
async fn tunnels_and_forwarded_requests_appear_with_their_bytes_and_filter_and_sort() {
    let proxy = Proxy::start(&config(""));
    let status = proxy.status_addr();
    let scene = scene(&proxy).await;
    let established = established().len() as u64;
    let (small, large) = (scene.small.1, scene.large.1);
    let expected_up = |n: usize| scene.connect_head + n as u64;
    let expected_down = |n: usize| established + n as u64;
    let json = wait_for(status, "", |json| {
        [(small, SMALL), (large, LARGE)].iter().all(|&(client, n)| {
            entry(json, client).is_some_and(|e| {
                e.get("bytes_up").num() as u64 == expected_up(n)
                    && e.get("bytes_down").num() as u64 == expected_down(n)
            })
        }) && entry(json, scene.forwarded.1).is_some_and(|e| e.get("requests").num() == 1.0)
    })
    .await;
    let echo = scene.echo.to_string();
    for client in [small, large] {
        let e = entry(&json, client).unwrap();
        assert_eq!(e.get("destination").str(), Some(echo.as_str()));
        assert_eq!(e.get("upstream").str(), Some(echo.as_str()));
        assert_eq!(e.get("route").str(), Some("direct"));
        assert_eq!(e.get("state").str(), Some("tunnel"));
        assert_eq!(e.get("user").str(), None);
    }
    let forwarded = entry(&json, scene.forwarded.1).unwrap();
    let origin = scene.origin.addr.to_string();
    assert_eq!(forwarded.get("destination").str(), Some(origin.as_str()));
    assert_eq!(forwarded.get("upstream").str(), Some(origin.as_str()));
    assert_eq!(forwarded.get("state").str(), Some("reading-head"));
    assert_eq!(
        forwarded.get("bytes_up").num() as u64,
        scene.forwarded_up,
        "{forwarded:?}"
    );
    assert_eq!(
        forwarded.get("bytes_down").num() as u64,
        scene.forwarded_down,
        "{forwarded:?}"
    );
    assert_eq!(json.get("matched").num(), 3.0, "{json:?}");
    assert_eq!(json.get("limit").num(), 500.0);
    assert_eq!(json.get("totals").get("tunnels_open").num(), 2.0);
    assert_eq!(json.get("totals").get("connections_open").num(), 3.0);
    assert_eq!(json.get("version").str(), Some(env!("CARGO_PKG_VERSION")));
    let listeners = json.get("listeners").array();
    assert_eq!(listeners, [Json::String(proxy.addr().to_string())]);
    let config_path = proxy.config_path().display().to_string();
    assert_eq!(
        json.get("config").get("file").str(),
        Some(config_path.as_str())
    );

    // Filters narrow, on the JSON and the page alike.
    let only = |json: &Json| -> Vec<String> {
        connections(json)
            .iter()
            .map(|c| c.get("client").str().unwrap().to_string())
            .collect()
    };
    let by_host = status_json(status, &format!("?host={}", scene.echo)).await;
    assert_eq!(by_host.get("matched").num(), 2.0, "{by_host:?}");
    let by_client = status_json(status, &format!("?client={small}")).await;
    assert_eq!(only(&by_client), [small.to_string()]);
    let by_range = status_json(status, "?client=127.0.0.0%2F8&host=127.0.0.*").await;
    assert_eq!(by_range.get("matched").num(), 3.0);
    let nobody = status_json(status, "?user=nobody").await;
    assert_eq!(nobody.get("matched").num(), 0.0);
    assert!(connections(&nobody).is_empty());
    let elsewhere = status_json(status, "?host=*.example.org").await;
    assert_eq!(elsewhere.get("matched").num(), 0.0);
    let page = get(status, &format!("/status?client={small}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!(">{small}<")), "{}", page.body);
    assert!(!page.body.contains(&format!(">{large}<")), "{}", page.body);
    let bad = get(status, "/status.json?client=somewhere").await;
    assert_eq!(bad.status, 400, "{}", bad.head);

    // Orders: most bytes first; oldest first; highest rate first.
    let by_bytes = status_json(status, "?sort=bytes").await;
    assert_eq!(&only(&by_bytes)[..1], [large.to_string()]);
    let by_age = status_json(status, "?sort=age").await;
    assert_eq!(&only(&by_age)[..2], [small.to_string(), large.to_string()]);
    let ages: Vec<f64> = connections(&by_age)
        .iter()
        .map(|c| c.get("age_seconds").num())
        .collect();
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");
    let by_rate = status_json(status, "?sort=rate").await;
    let rates: Vec<f64> = connections(&by_rate)
        .iter()
        .map(|c| c.get("rate_up").num() + c.get("rate_down").num())
        .collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "{rates:?}");
    assert_eq!(by_rate.get("query").get("sort").str(), Some("rate"));

    // A closed tunnel leaves the list.
    drop(scene.small);
    wait_for(status, "", |json| entry(json, small).is_none()).await;
}

/// `status_allow` / `status_deny` decide who sees `/status` and `/status.json`; others get
/// 403. `/metrics` and `/healthz` stay open to whoever reaches the listener.
#[tokio::test]
async fn only_allowed_viewers_see_the_status_pages() {
    let proxy = Proxy::start(&config("status_allow 127.0.0.2;"));
    let status = proxy.status_addr();
    for path in ["/status", "/status.json", "/status.json?host=x"] {
        let refused = get_from("127.0.0.1", status, path).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.head);
        assert!(!refused.body.contains("connections"), "{}", refused.body);
        let allowed = get_from("127.0.0.2", status, path).await;
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.head);
    }
    assert_eq!(get_from("127.0.0.1", status, "/metrics").await.status, 200);
    assert_eq!(get_from("127.0.0.1", status, "/healthz").await.status, 200);

    let proxy = Proxy::start(&config("status_deny 127.0.0.1;\nstatus_allow 127.0.0.0/8;"));
    let status = proxy.status_addr();
    assert_eq!(get_from("127.0.0.1", status, "/status").await.status, 403);
    assert_eq!(get_from("127.0.0.3", status, "/status").await.status, 200);

    // The default: loopback only, so a test from loopback is let in.
    let proxy = Proxy::start(&config(""));
    let status = proxy.status_addr();
    assert_eq!(get_from("127.0.0.5", status, "/status").await.status, 200);
}

#[test]
fn status_allow_errors_name_their_line() {
    let dir = TempDir::new();
    let path = dir.0.join("p.conf");
    std::fs::write(
        &path,
        "status_listen 127.0.0.1:0;\nstatus_allow 10.0.0.1/8;\nserver {\n    listen 127.0.0.1:0;\n}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("invalid address \"10.0.0.1/8\" in \"status_allow\" directive")
            && stderr.contains("p.conf:2"),
        "{stderr}"
    );
}

/// A host name is the client's text: shown on the page, it is escaped, never markup. A CONNECT
/// refuses such a name outright (400), so it never reaches the page; a forwarded request's
/// `Host` is shown while it is answered.
#[tokio::test]
async fn a_hostile_host_name_is_escaped() {
    let proxy = Proxy::start(&config(""));
    let status = proxy.status_addr();
    let hostile = "<img src=x onerror=alert(1)>\"'&";
    let refused = exchange(
        proxy.addr(),
        format!("CONNECT {hostile}:443 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.head);
    let escaped = "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;";
    // The refused request is shown while its close lingers (up to 2 s): keep it open and look.
    let mut found = false;
    for _ in 0..20 {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!("GET /x HTTP/1.1\r\nHost: {hostile}\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 4"), "{head}");
        let page = get(status, "/status").await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("<img"), "{}", page.body);
        let json = get(status, "/status.json").await;
        assert!(!json.body.contains('<'), "{}", json.body);
        Json::parse(&json.body);
        if page.body.contains(escaped) {
            found = true;
            let parsed = Json::parse(&json.body);
            assert!(
                connections(&parsed)
                    .iter()
                    .any(|c| c.get("destination").str() == Some(&format!("{hostile}:80"))),
                "{parsed:?}"
            );
            break;
        }
    }
    assert!(found, "the hostile host never appeared on the page");
}

/// The page as an operator sees it: loaded in Debian's chromium, headless. The DOM it built
/// lists the tunnels with their destinations and byte counts; a filter narrows it; a client
/// `status_allow` does not list gets 403. A screenshot is written to
/// `target/status-screenshot.png` (docs/status.png is a copy of one).
#[tokio::test]
async fn a_real_browser_shows_the_tunnels_and_filters_them() {
    if !require_tool("chromium") {
        return;
    }
    let proxy = Proxy::start(&config("status_allow 127.0.0.1;"));
    let status = proxy.status_addr();
    let scene = scene(&proxy).await;
    let (small, large) = (scene.small.1, scene.large.1);
    wait_for(status, "", |json| {
        entry(json, large).is_some_and(|e| e.get("bytes_down").num() as usize > LARGE)
    })
    .await;
    let profile = TempDir::new();
    let chromium = |args: &[&str], url: &str| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--timeout=10000",
                &format!("--user-data-dir={}", profile.0.display()),
            ])
            .args(args)
            .arg(url)
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = format!("http://{status}/status");
    let dom = chromium(&["--dump-dom"], &url);
    assert!(dom.contains("<table id=\"connections\">"), "{dom}");
    let rows: Vec<&str> = dom.split("<tr data-id=").skip(1).collect();
    assert_eq!(rows.len(), 3, "{dom}");
    let row_of = |client: SocketAddr| {
        rows.iter()
            .find(|r| r.contains(&format!(">{client}<")))
            .unwrap_or_else(|| panic!("no row for {client} in {dom}"))
    };
    let echo = scene.echo.to_string();
    let established = established().len();
    for (client, n) in [(small, SMALL), (large, LARGE)] {
        let row = row_of(client);
        assert!(row.contains(&format!(">{echo}<")), "{row}");
        assert!(row.contains(">tunnel<"), "{row}");
        let up = scene.connect_head as usize + n;
        assert!(
            row.contains(&format!("data-bytes=\"{up}\"")),
            "{up} up in {row}"
        );
        let down = established + n;
        assert!(
            row.contains(&format!("data-bytes=\"{down}\"")),
            "{down} down in {row}"
        );
    }
    // The busiest first.
    assert!(rows[0].contains(&format!(">{large}<")), "{dom}");

    let filtered = chromium(
        &["--dump-dom"],
        &format!("{url}?host={}", scene.origin.addr),
    );
    let filtered_rows = filtered.split("<tr data-id=").count() - 1;
    assert_eq!(filtered_rows, 1, "{filtered}");
    assert!(filtered.contains(&format!(">{}<", scene.forwarded.1)));

    // From an address status_allow does not list: chromium cannot pick its source address,
    // so the page is asked for at 127.0.0.2 through a listener that allows only 127.0.0.1...
    // which the browser's 127.0.0.1 source is: the refusal is checked on a second proxy that
    // allows only 127.0.0.2.
    let strict = Proxy::start(&config("status_allow 127.0.0.2;"));
    let strict_url = format!("http://{}/status", strict.status_addr());
    let refused = chromium(&["--dump-dom"], &strict_url);
    assert!(refused.contains("forbidden"), "{refused}");
    assert!(!refused.contains("<table"), "{refused}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,520",
            "--hide-scrollbars",
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    drop(scene);
}
