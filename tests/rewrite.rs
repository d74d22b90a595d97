//! nginx's rewrite module and nginx 1.31's tunnel module through the real binary: `map`-based
//! ACLs, `tunnel_pass`, `set` and `if` choosing where a CONNECT goes, regex captures, `return`
//! answering before access checks, and the refusals of what sluice does not run.

mod common;
#[allow(dead_code)] // this file uses a few of the test DNS server's knobs
mod dns {
    pub mod server;
}

use std::process::Command;

use common::*;
use dns::server::DnsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a few bytes through an open tunnel and expects them back from the echo server.
async fn assert_echoes(stream: &mut TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

/// The answer to a CONNECT that is refused (or answered by `return`), read to the close.
async fn answer(proxy: std::net::SocketAddr, target: &str, extra: &str) -> ErrorResponse {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    exchange(proxy, request.as_bytes()).await
}

/// nginx's own tunnel-module example (nginx.org, ngx_http_tunnel_module), with the test's
/// name server, listener and origin port: hosts and ports outside the maps get the `return`
/// status before anything is dialled; the others are tunnelled to `$host:$request_port`.
#[tokio::test]
async fn the_tunnel_module_example_is_a_map_acl() {
    let echo = echo_server().await;
    let port = echo.port();
    let dns = DnsServer::start().await;
    for name in [
        "example.org",
        "www.example.org",
        "a.b.example.org",
        "example.net",
    ] {
        dns.answer(name, &["127.0.0.1"]);
    }
    let proxy = Proxy::start(&format!(
        "http {{\n\
         map $request_port $allow_port {{ {port} 1; }}\n\
         map $host $allow_host {{ hostnames; example.org 1; *.example.org 1; }}\n\
         server {{\n\
             listen 127.0.0.1:0;\n\
             resolver {};\n\
             destination_allow 127.0.0.0/8;\n\
             if ($allow_port != 1) {{ return 403; }}\n\
             if ($allow_host != 1) {{ return 403; }}\n\
             tunnel_pass;\n\
         }}\n}}\n",
        dns.addr
    ));
    for allowed in [
        "example.org",
        "www.example.org",
        "a.b.example.org",
        "WWW.Example.ORG",
    ] {
        let mut stream = tunnel(proxy.addr(), &format!("{allowed}:{port}")).await;
        assert_echoes(&mut stream).await;
    }
    for refused in [format!("example.net:{port}"), "example.org:443".to_string()] {
        let response = answer(proxy.addr(), &refused, "").await;
        assert_eq!(response.status, 403, "{refused}: {}", response.head);
        response.assert_well_formed();
    }
    // Refused by `return` before anything was resolved.
    assert_eq!(dns.queries("example.net", 1), 0);
    // A tunnel_pass server serves CONNECT only, as nginx's does.
    let response = exchange(
        proxy.addr(),
        format!("GET http://example.org:{port}/ HTTP/1.1\r\nHost: example.org:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(response.status, 405, "{}", response.head);
}

/// `tunnel_pass ADDRESS` sends every tunnel there, whatever the client named.
#[tokio::test]
async fn tunnel_pass_with_an_address_proxies_connect_there() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&format!(
        "server {{ listen 127.0.0.1:0; destination_allow 127.0.0.0/8; tunnel_pass {echo};\n\
         tunnel_connect_timeout 5s; tunnel_read_timeout 30s; }}\n"
    ));
    let mut stream = tunnel(proxy.addr(), "anything.invalid:443").await;
    assert_echoes(&mut stream).await;
}

/// Captures of a `map` regex make its value; the value is the tunnel's address.
#[tokio::test]
async fn map_regex_captures_choose_the_address() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&format!(
        "http {{\n    map $host $dest {{ default \"\"; ~^p([0-9]+)\\.svc$ 127.0.0.1:$1; }}\n{}}}\n",
        open_config("    proxy_connect_address $dest;")
    ));
    let mut stream = tunnel(proxy.addr(), &format!("p{}.svc:443", echo.port())).await;
    assert_echoes(&mut stream).await;
}

/// `if` with a regex sets `$1` for what it contains; `set` gives `proxy_connect_address` its
/// value, and an empty value leaves the client's target.
#[tokio::test]
async fn if_captures_and_set_route_a_connect() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(&format!(
        "    set $addr \"\";\n\
             if ($host = \"alias.test\") {{ set $addr 127.0.0.1:{}; }}\n\
             if ($host ~* ^HELLO\\.(\\w+)$) {{ return 200 \"hello $1 from $host:$request_port\"; }}\n\
             proxy_connect_address $addr;",
        echo.port()
    )));
    let mut stream = tunnel(proxy.addr(), "alias.test:443").await;
    assert_echoes(&mut stream).await;
    let mut stream = tunnel(proxy.addr(), &echo.to_string()).await;
    assert_echoes(&mut stream).await;
    let response = answer(proxy.addr(), "hello.world:8443", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "hello world from hello.world:8443");
}

/// nginx's phase order: a `return` in the rewrite phase answers before `auth_basic` asks for
/// credentials and before `deny` refuses; other requests still meet both.
#[tokio::test]
async fn return_answers_before_access_checks() {
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, "sam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
    let proxy = Proxy::start(&open_config(&format!(
        "    auth_basic \"sluice test\";\n    auth_basic_user_file {};\n\
             if ($host = \"blocked.test\") {{ return 403 \"blocked by policy\\n\"; }}\n\
             location / {{ if ($args ~ (^|&)go=away) {{ return 302 http://elsewhere.test/; }} }}",
        users.display()
    )));
    let response = answer(proxy.addr(), "blocked.test:443", "").await;
    assert_eq!(response.status, 403, "{}", response.head);
    assert_eq!(response.body, "blocked by policy\n");
    let response = answer(proxy.addr(), "other.test:443", "").await;
    assert_eq!(response.status, 407, "{}", response.head);
    let response = exchange(
        proxy.addr(),
        b"GET http://x.test/a?go=away HTTP/1.1\r\nHost: x.test\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 302, "{}", response.head);
    assert!(
        response
            .head
            .contains("\r\nLocation: http://elsewhere.test/")
    );
}

/// `sluice -t` on `config`: whether it loaded, and its standard error.
fn check(config: &str) -> (bool, String, String) {
    let dir = TempDir::new();
    let path = dir.0.join("proxy.conf");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr, path.display().to_string())
}

#[test]
fn what_sluice_does_not_run_is_refused_with_file_and_line() {
    for (line, directive, reason) in [
        (
            "rewrite ^/old /new permanent;",
            "\"rewrite\" directive is not supported",
            "answer with \"return\"",
        ),
        ("break;", "\"break\" outside \"if\" is not supported", ""),
        (
            "rewrite_log on;",
            "\"rewrite_log\" directive is not supported",
            "",
        ),
        (
            "access_by_lua_block { ngx.exit(403); }",
            "\"access_by_lua_block\" directive is not supported: sluice runs no Lua",
            "",
        ),
        (
            "rewrite_by_lua 'ngx.sleep(1)';",
            "\"rewrite_by_lua\" directive is not supported: sluice runs no Lua",
            "",
        ),
        (
            "if ($host ~ \"^(?!internal)\") { return 403; }",
            "uses the PCRE-only negative look-ahead \"(?!...)\"",
            "linear time",
        ),
        (
            "if ($host ~ \"(a)\\1\") { return 403; }",
            "uses the PCRE-only backreference \"\\1\"",
            "",
        ),
        (
            "if (-f /etc/passwd) { return 403; }",
            "the file test \"-f\" in \"if\" is not supported",
            "",
        ),
        ("return 1000;", "invalid return code \"1000\"", ""),
        ("set $host x;", "invalid variable name \"$host\"", ""),
        (
            "tunnel_send_timeout 5s; location / { tunnel_pass; }",
            "\"tunnel_pass\" in a location is not supported",
            "",
        ),
    ] {
        let config =
            format!("server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    {line}\n}}\n");
        let (ok, stderr, path) = check(&config);
        assert!(!ok, "{line} loaded");
        assert!(stderr.contains(directive), "{line}: {stderr}");
        assert!(stderr.contains(reason), "{line}: {stderr}");
        assert!(
            stderr.contains(&format!(" in {path}:4\n")),
            "{line}: {stderr}"
        );
    }
}

#[test]
fn tunnel_directives_without_effect_warn_with_file_and_line() {
    let (ok, stderr, path) = check(
        "server {\n    listen 127.0.0.1:0;\n    tunnel_pass;\n    tunnel_buffer_size 16k;\n    \
         tunnel_socket_keepalive on;\n    tunnel_send_timeout 10s;\n    tunnel_bind 127.0.0.1;\n}\n",
    );
    assert!(ok, "{stderr}");
    for (line, name) in [
        (4, "tunnel_buffer_size"),
        (5, "tunnel_socket_keepalive"),
        (6, "tunnel_send_timeout"),
    ] {
        assert!(
            stderr.contains(&format!("\"{name}\" has no effect in sluice"))
                && stderr.contains(&format!("in {path}:{line}\n")),
            "{name}: {stderr}"
        );
    }
}

/// `map` and `set` variables, and the request's own, in `proxy_set_header` and in a log
/// format; the map is read once per request wherever it is used.
#[tokio::test]
async fn variables_reach_headers_and_the_log() {
    let origin = Origin::start(|_| ok(b"fine")).await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "http {{\n\
         map $http_user_agent $client_kind {{ default other; ~*^curl/(\\d+) cli-$1; }}\n\
         log_format kinds '$client_kind $tag $host $request_port $uri $args';\n\
         server {{\n\
             listen 127.0.0.1:0;\n\
             destination_allow 127.0.0.0/8;\n\
             access_log {} kinds;\n\
             location / {{\n\
                 set $tag \"t-$request_method\";\n\
                 proxy_pass http://$http_host$request_uri;\n\
                 proxy_set_header X-Kind $client_kind;\n\
                 proxy_set_header X-Tag \"$tag $request_port\";\n\
             }}\n\
         }}\n}}\n",
        log.display()
    ));
    let port = origin.addr.port();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "GET http://127.0.0.1:{port}/p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         User-Agent: CURL/8.5\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_to_close(&mut stream).await;
    assert_eq!(response.status, 200, "{}", response.head);
    let seen = origin.recorded();
    assert_eq!(seen[0].header("x-kind"), Some("cli-8"));
    assert_eq!(seen[0].header("x-tag"), Some(&*format!("t-GET {port}")));
    let line = format!("cli-8 t-GET 127.0.0.1 {port} /p q=1\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&line)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no line {line:?} in the log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A `hostnames` map picks as nginx's does: the exact name, then the longest leading
/// wildcard, then a trailing one, then the regexes, then `default`.
#[tokio::test]
async fn a_hostnames_map_picks_in_nginx_order() {
    let proxy = Proxy::start(
        "http {\n\
         map $host $which {\n\
             hostnames;\n\
             default none;\n\
             .example.org dot;\n\
             *.a.example.org star;\n\
             exact.a.example.org exact;\n\
             www.example.* tail;\n\
             ~^re\\.(\\w+)\\.example\\.net$ re-$1;\n\
         }\n\
         server { listen 127.0.0.1:0; return 200 \"$which\"; }\n\
         }\n",
    );
    for (host, which) in [
        ("example.org", "dot"),
        ("x.example.org", "dot"),
        ("b.a.example.org", "star"),
        ("Exact.A.example.org", "exact"),
        ("www.example.com", "tail"),
        ("re.zz.example.net", "re-zz"),
        ("other.net", "none"),
    ] {
        let response = answer(proxy.addr(), &format!("{host}:443"), "").await;
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, which),
            "{host}"
        );
    }
}

/// A `return` is logged like any refusal: its status and the variables of its request.
#[tokio::test]
async fn a_return_is_logged() {
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "log_format ret '$status $host $request_port $bytes_sent';\n{}",
        open_config(&format!(
            "    access_log {} ret;\n    if ($host = \"gone.test\") {{ return 410; }}",
            log.display()
        ))
    ));
    let response = answer(proxy.addr(), "gone.test:8443", "").await;
    assert!(
        response.head.starts_with("HTTP/1.1 410 Gone\r\n"),
        "{}",
        response.head
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.starts_with("410 gone.test 8443 ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log: {text:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
