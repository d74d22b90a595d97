//! The access log through the real binary: exact fields and byte counts for tunnels, forwarded
//! requests and refusals, the predefined formats, escaping, `access_log stderr`, levels and
//! `off`, config errors, and reopening on SIGUSR1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (the writer flushes within a second) until `path` holds at least `count` lines.
async fn lines(path: &Path, count: usize) -> Vec<String> {
    eventually(async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= count).then_some(lines)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{} did not get {count} lines: {:?}",
            path.display(),
            std::fs::read_to_string(path)
        )
    })
}

/// A server block on a free loopback port, tunnelling and forwarding to loopback, with these
/// directives; `http` holds directives for the http block around it (log_format).
fn config(http: &str, directives: &str) -> String {
    format!(
        "http {{\n{http}\n    server {{\n        listen 127.0.0.1:0;\n        proxy_connect;\n        \
         proxy_connect_allow all;\n        destination_allow 127.0.0.0/8;\n{directives}\n        \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n    }}\n}}\n"
    )
}

/// The fields of a line written in a `|`-separated format.
fn fields(line: &str) -> Vec<&str> {
    line.split('|').collect()
}

const FIELDS: &str = "log_format fields '$status|$bytes_sent|$bytes_received|$body_bytes_sent|\
                      $connect_host|$connect_port|$connect_addr|$upstream_addr|$remote_user|\
                      $request|$http_user_agent|$request_method|$request_uri|$server_protocol|\
                      $connection|$connection_requests|$remote_addr|$server_port|$pid|\
                      $proxy_connect_resolve_time|$proxy_connect_connect_time|$request_time';";

#[tokio::test]
async fn a_tunnel_is_logged_when_it_ends_with_exact_byte_counts() {
    let sink = sink_server().await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&config(
        FIELDS,
        &format!("        access_log {} fields;", log.display()),
    ));
    let request =
        format!("CONNECT {sink} HTTP/1.1\r\nHost: {sink}\r\nUser-Agent: tunnel-test/1.0\r\n\r\n");
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert_eq!(head, established());
    let up = pattern(100_000, 3);
    stream.write_all(&up).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut down = Vec::new();
    stream.read_to_end(&mut down).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&down),
        format!("{} {:016x}\n", up.len(), Fnv::of(&up).hash)
    );

    let line = lines(&log, 1).await.remove(0);
    let f = fields(&line);
    assert_eq!(f.len(), 22, "{line}");
    assert_eq!(f[0], "200", "{line}");
    assert_eq!(
        f[1],
        (head.len() + down.len()).to_string(),
        "$bytes_sent: {line}"
    );
    assert_eq!(
        f[2],
        (request.len() + up.len()).to_string(),
        "$bytes_received: {line}"
    );
    assert_eq!(f[3], down.len().to_string(), "$body_bytes_sent: {line}");
    assert_eq!(f[4], "127.0.0.1", "{line}");
    assert_eq!(f[5], sink.port().to_string(), "{line}");
    assert_eq!(f[6], sink.to_string(), "$connect_addr: {line}");
    assert_eq!(f[7], sink.to_string(), "$upstream_addr: {line}");
    assert_eq!(f[8], "-", "no user without auth_basic: {line}");
    assert_eq!(f[9], format!("CONNECT {sink} HTTP/1.1"), "{line}");
    assert_eq!(f[10], "tunnel-test/1.0", "{line}");
    assert_eq!(&f[11..14], ["CONNECT", &sink.to_string(), "HTTP/1.1"]);
    assert_eq!(f[15], "1", "{line}");
    assert_eq!(f[16], "127.0.0.1", "{line}");
    assert_eq!(f[17], proxy.addr().port().to_string(), "{line}");
    assert_eq!(f[18], proxy.pid().to_string(), "{line}");
    for time in &f[19..22] {
        let (secs, millis) = time.split_once('.').expect("seconds.millis");
        assert!(secs.parse::<u64>().is_ok() && millis.len() == 3, "{line}");
    }
}

#[tokio::test]
async fn forwarded_requests_get_one_line_each_in_the_combined_format() {
    let origin = Origin::start(|_| ok(b"hello")).await;
    let dir = TempDir::new();
    let combined = dir.0.join("combined.log");
    let detail = dir.0.join("fields.log");
    let proxy = Proxy::start(&config(
        FIELDS,
        &format!(
            "        access_log {};\n        access_log {} fields;",
            combined.display(),
            detail.display()
        ),
    ));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    let mut heads = Vec::new();
    for (i, path) in ["/first?a=1", "/second"].iter().enumerate() {
        let request = format!(
            "GET http://{}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ua/{i}\r\n\
             Referer: http://referer.example/{i}\r\n\r\n",
            origin.addr, origin.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, head, body) = read_response(&mut stream, &mut buf, false).await.unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
        requests.push(request);
        heads.push(head);
    }

    let combined_lines = lines(&combined, 2).await;
    for (i, line) in combined_lines.iter().enumerate() {
        // 127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET http://... HTTP/1.1" 200 5 "ref" "ua"
        let (before, after) = line.split_once(" [").unwrap();
        assert_eq!(before, "127.0.0.1 - -", "{line}");
        let (time, rest) = after.split_once("] ").unwrap();
        assert_eq!(time.len(), 26, "$time_local: {line}");
        assert_eq!(&time[2..3], "/", "{line}");
        assert!(time[20..].starts_with(" +") || time[20..].starts_with(" -"));
        let path = ["/first?a=1", "/second"][i];
        assert_eq!(
            rest,
            format!(
                "\"GET http://{}{path} HTTP/1.1\" 200 5 \"http://referer.example/{i}\" \"ua/{i}\"",
                origin.addr
            ),
            "{line}"
        );
    }
    let detail_lines = lines(&detail, 2).await;
    let mut connection = None;
    for (i, line) in detail_lines.iter().enumerate() {
        let f = fields(line);
        assert_eq!(f[0], "200", "{line}");
        assert_eq!(
            f[1],
            (heads[i].len() + 5).to_string(),
            "$bytes_sent: {line}"
        );
        assert_eq!(
            f[2],
            requests[i].len().to_string(),
            "$bytes_received: {line}"
        );
        assert_eq!(f[3], "5", "{line}");
        assert_eq!(&f[4..7], ["-", "-", "-"], "no CONNECT target: {line}");
        assert_eq!(f[7], origin.addr.to_string(), "$upstream_addr: {line}");
        assert_eq!(f[15], (i + 1).to_string(), "$connection_requests: {line}");
        // One connection for both requests.
        assert_eq!(*connection.get_or_insert(f[14]), f[14], "{line}");
    }
    // The second request reused the pooled origin connection: nothing was resolved or dialled.
    let second = fields(&detail_lines[1]);
    assert_eq!(&second[19..21], ["-", "-"], "{}", detail_lines[1]);
}

/// "secret" for pat, in htpasswd's plain-text form.
const USERS: &str = "pat:{PLAIN}secret\n";

#[tokio::test]
async fn refusals_are_logged_with_their_status_bytes_and_user() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, USERS).unwrap();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&config(
        FIELDS,
        &format!(
            "        auth_basic \"test\";\n        auth_basic_user_file {};\n        \
             access_log {} fields;",
            users.display(),
            log.display()
        ),
    ));
    let credentials = format!("Proxy-Authorization: {}\r\n", basic("pat", "secret"));
    let cases = [
        // No credentials: 407.
        format!("CONNECT {echo} HTTP/1.1\r\n\r\n"),
        // A destination the built-in rules refuse: 403, with the user.
        format!("CONNECT 169.254.169.254:443 HTTP/1.1\r\n{credentials}\r\n"),
        // A port with nothing listening: 502 after a refused connect.
        format!("CONNECT 127.0.0.1:1 HTTP/1.1\r\n{credentials}\r\n"),
    ];
    let mut answers = Vec::new();
    for request in &cases {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answers.push(answer);
    }
    let logged = lines(&log, 3).await;
    for ((line, request), (answer, status)) in logged
        .iter()
        .zip(&cases)
        .zip(answers.iter().zip(["407", "403", "502"]))
    {
        let f = fields(line);
        let text = String::from_utf8_lossy(answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert_eq!(f[0], status, "{line}");
        assert_eq!(f[1], answer.len().to_string(), "$bytes_sent: {line}");
        assert_eq!(f[2], request.len().to_string(), "$bytes_received: {line}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(f[3], body.len().to_string(), "$body_bytes_sent: {line}");
    }
    let user = |i: usize| fields(&logged[i])[8].to_string();
    assert_eq!(user(0), "-");
    assert_eq!(user(1), "pat");
    assert_eq!(user(2), "pat");
    // The refused connect was resolved and dialled: both times are there, and the target.
    let f = fields(&logged[2]);
    assert_eq!(&f[4..6], ["127.0.0.1", "1"], "{}", logged[2]);
    assert_ne!(f[20], "-", "{}", logged[2]);
    assert_eq!(f[7], "-", "no upstream was reached: {}", logged[2]);
}

#[tokio::test]
async fn values_are_escaped_as_nginx_escapes_them() {
    let origin = Origin::start(|_| ok(b"")).await;
    let dir = TempDir::new();
    let json = dir.0.join("json.log");
    let plain = dir.0.join("plain.log");
    let raw = dir.0.join("raw.log");
    let proxy = Proxy::start(&config(
        "log_format j escape=json '{\"ua\":\"$http_user_agent\",'\n            \
         '\"user\":\"$remote_user\",\"status\":$status,\"missing\":\"$http_x_missing\"}';\n    \
         log_format d '$http_user_agent $remote_user';\n    \
         log_format n escape=none '$http_user_agent $remote_user';",
        &format!(
            "        access_log {} j;\n        access_log {} d;\n        access_log {} n;",
            json.display(),
            plain.display(),
            raw.display()
        ),
    ));
    let mut request = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: {}\r\nUser-Agent: a\"b\\c\td",
        origin.addr, origin.addr
    )
    .into_bytes();
    request.extend_from_slice("é\r\n\r\n".as_bytes());
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let (status, _, _) = read_response(&mut stream, &mut buf, false).await.unwrap();
    assert_eq!(status, 200);

    let json_line = lines(&json, 1).await.remove(0);
    assert_eq!(
        json_line,
        "{\"ua\":\"a\\\"b\\\\c\\tdé\",\"user\":\"\",\"status\":200,\"missing\":\"\"}"
    );
    let plain_line = lines(&plain, 1).await.remove(0);
    assert_eq!(plain_line, "a\\x22b\\x5Cc\\x09d\\xC3\\xA9 -");
    let raw_line = lines(&raw, 1).await.remove(0);
    assert_eq!(raw_line, "a\"b\\c\tdé -");
}

#[tokio::test]
async fn access_log_stderr_writes_to_standard_error() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&config(
        "log_format marked 'ACCESS $status $request_method $connect_port';",
        "        access_log stderr marked;",
    ));
    drop(tunnel(proxy.addr(), &echo.to_string()).await);
    let expected = format!("ACCESS 200 CONNECT {}", echo.port());
    let found = eventually(async || proxy.log().lines().any(|l| l == expected).then_some(())).await;
    assert!(found.is_some(), "no \"{expected}\" in:\n{}", proxy.log());
}

#[tokio::test]
async fn a_location_may_have_its_own_log_or_none() {
    let origin = Origin::start(|_| ok(b"x")).await;
    let dir = TempDir::new();
    let server_log = dir.0.join("server.log");
    let api_log = dir.0.join("api.log");
    let config = format!(
        "server {{\n    listen 127.0.0.1:0;\n    destination_allow 127.0.0.0/8;\n    \
         access_log {};\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n    \
         location /api {{ access_log {} sluice; proxy_pass http://$http_host$request_uri; }}\n    \
         location /quiet {{ access_log off; proxy_pass http://$http_host$request_uri; }}\n}}\n",
        server_log.display(),
        api_log.display()
    );
    let proxy = Proxy::start(&config);
    for path in ["/quiet/1", "/api/1", "/other"] {
        let response = exchange(
            proxy.addr(),
            format!(
                "GET http://{}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                origin.addr, origin.addr
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(response.status, 200);
    }
    let server_lines = lines(&server_log, 1).await;
    let api_lines = lines(&api_log, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server_lines_later = lines(&server_log, 1).await;
    assert_eq!(server_lines, server_lines_later);
    assert_eq!(server_lines.len(), 1, "{server_lines:?}");
    assert!(
        server_lines[0].contains("/other HTTP/1.1\" 200 1 "),
        "{server_lines:?}"
    );
    assert_eq!(api_lines.len(), 1, "{api_lines:?}");
    // The `sluice` format: bytes both ways, time, agent, upstream and its timings.
    assert!(
        api_lines[0].contains(&format!(" upstream={} resolve=", origin.addr)),
        "{api_lines:?}"
    );
}

fn sluice_t(config: &str) -> (bool, String, PathBuf, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("proxy.conf");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        path,
        dir,
    )
}

#[test]
fn format_errors_name_their_line() {
    let cases = [
        (
            "log_format bad '$remote_addr $no_such_thing';\n",
            "unknown \"no_such_thing\" variable in {path}:2",
        ),
        (
            "log_format combined '$status';\n",
            "duplicate \"log_format\" name \"combined\" in {path}:2",
        ),
        (
            "log_format e escape=xml '$status';\n",
            "unknown log format escaping \"xml\" in {path}:2",
        ),
    ];
    for (http, expected) in cases {
        let config = format!("http {{\n{http}server {{ listen 127.0.0.1:0; }}\n}}\n");
        let (ok, stderr, path, _dir) = sluice_t(&config);
        let expected = expected.replace("{path}", path.to_str().unwrap());
        assert!(!ok, "{config}");
        assert!(stderr.contains(&expected), "{stderr}\nexpected: {expected}");
    }
    let config = "server {\n    listen 127.0.0.1:0;\n    access_log /tmp/x.log nope;\n}\n";
    let (ok, stderr, path, _dir) = sluice_t(config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "unknown log format \"nope\" in {}:3",
            path.display()
        )),
        "{stderr}"
    );
    // A format defined at the top level, used by a later server, loads cleanly; -t creates
    // the log file, as nginx -t does.
    let config = "log_format mine '$status';\nserver {\n    listen 127.0.0.1:0;\n    \
                  access_log stderr mine;\n    access_log y.log combined buffer=32k flush=5s;\n}\n";
    let (ok, stderr, path, _dir) = sluice_t(config);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("[warn]"), "{stderr}");
    assert!(
        path.with_file_name("y.log").exists(),
        "relative to the config file"
    );
}

#[test]
fn an_unwritable_log_path_fails_at_startup() {
    let dir = TempDir::new();
    let path = dir.0.join("proxy.conf");
    let log = dir.0.join("no-such-dir").join("access.log");
    std::fs::write(
        &path,
        format!(
            "server {{\n    listen 127.0.0.1:0;\n    access_log {};\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    for args in [vec!["-c"], vec!["-t", "-c"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args.iter().chain(&[path.to_str().unwrap()]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains(&format!(
                "[emerg] open() \"{}\" failed (No such file or directory), access_log in {}:3",
                log.display(),
                path.display()
            )),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn sigusr1_reopens_the_log_after_a_rotation() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let proxy = Proxy::start(&config(
        "log_format port '$connect_port $connection';",
        &format!("        access_log {} port;", log.display()),
    ));
    drop(tunnel(proxy.addr(), &echo.to_string()).await);
    let first = lines(&log, 1).await;

    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(libc::SIGUSR1);
    proxy.wait_for_log("SIGUSR1 received").await;
    // The file is created again at once, before any new line.
    let reopened = eventually(async || log.exists().then_some(())).await;
    assert!(reopened.is_some(), "the log was not reopened");

    drop(tunnel(proxy.addr(), &echo.to_string()).await);
    let second = lines(&log, 1).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "a new connection, a new line");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().collect::<Vec<_>>(), first);
    // Still running.
    drop(tunnel(proxy.addr(), &echo.to_string()).await);
    assert_eq!(lines(&log, 2).await.len(), 2);
}

#[tokio::test]
async fn lines_are_flushed_when_the_proxy_stops() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let mut proxy = Proxy::start(&config(
        "log_format port '$connect_port';",
        &format!("        access_log {} port;", log.display()),
    ));
    // A tunnel still open when SIGQUIT comes ends during the drain, and its line is written.
    let mut open = tunnel(proxy.addr(), &echo.to_string()).await;
    proxy.signal(libc::SIGQUIT);
    proxy.wait_for_log("SIGQUIT received").await;
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest).await;
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", proxy.log());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, format!("{}\n", echo.port()));
}
