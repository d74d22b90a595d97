//! The configuration language through the real binary's `-t` mode: every refusal with nginx's
//! exact wording and `file:line`, every accepted form, and no panic on hostile input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What `sluice -t -c proxy.conf` said about one config.
struct Tested {
    /// `proxy.conf`'s path as sluice prints it.
    path: String,
    /// Exit status 0.
    ok: bool,
    /// The exit code, `None` if a signal ended the process.
    code: Option<i32>,
    stderr: String,
}

/// A fresh, empty directory for one run.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-config-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("sluice runs")
}

/// Writes `text` to `proxy.conf` in a fresh directory and runs `sluice -t -c` on it.
fn test_bytes(text: &[u8]) -> Tested {
    let dir = fresh_dir();
    let path = dir.join("proxy.conf");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    let output = sluice(&["-t", "-c", &path]);
    let _ = std::fs::remove_dir_all(&dir);
    Tested {
        path,
        ok: output.status.success(),
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `sluice -t -c proxy.conf` on `text`: its exit, its standard error and the path it named.
fn test_config(text: &str) -> Tested {
    test_bytes(text.as_bytes())
}

/// Expects the config to be refused with exactly `message in proxy.conf:line`.
fn assert_refused(text: &str, line: u32, message: &str) {
    let t = test_config(text);
    let path = &t.path;
    assert_eq!(
        t.stderr,
        format!(
            "sluice: [emerg] {message} in {path}:{line}\nsluice: configuration file {path} test failed\n"
        ),
        "config:\n{text}"
    );
    assert!(!t.ok, "config:\n{text}");
    assert_eq!(t.code, Some(1), "config:\n{text}");
}

/// Like [`assert_refused`], for a message that names the file itself instead of a line.
fn assert_refused_whole(text: &str, message: impl Fn(&str) -> String) {
    let t = test_config(text);
    let path = &t.path;
    assert_eq!(
        t.stderr,
        format!(
            "sluice: [emerg] {}\nsluice: configuration file {path} test failed\n",
            message(path)
        ),
        "config:\n{text}"
    );
    assert_eq!(t.code, Some(1), "config:\n{text}");
}

/// Expects the config to load; returns its warnings (without the `sluice: [warn] ` prefix)
/// and the path they name.
fn assert_accepted(text: &str) -> (Vec<String>, String) {
    let t = test_config(text);
    assert!(t.ok, "config refused:\n{text}\nstderr:\n{}", t.stderr);
    assert_eq!(t.code, Some(0));
    let path = &t.path;
    let mut lines: Vec<&str> = t.stderr.lines().collect();
    assert_eq!(
        lines.split_off(lines.len().saturating_sub(2)),
        vec![
            format!("sluice: the configuration file {path} syntax is ok"),
            format!("sluice: configuration file {path} test is successful"),
        ],
        "stderr:\n{}",
        t.stderr
    );
    let warnings = lines
        .iter()
        .map(|line| {
            line.strip_prefix("sluice: [warn] ")
                .unwrap_or_else(|| panic!("not a warning line: {line:?}\nstderr:\n{}", t.stderr))
                .to_string()
        })
        .collect();
    (warnings, t.path)
}

/// Expects the config to load without a single warning.
fn assert_clean(text: &str) {
    let (warnings, _) = assert_accepted(text);
    assert_eq!(warnings, Vec::<String>::new(), "config:\n{text}");
}

/// A server block on a loopback address (so no "every host" warning) with `body` inside.
fn server(body: &str) -> String {
    format!("server {{\n    listen 127.0.0.1:3128;\n    proxy_connect;\n{body}\n}}\n")
}

/// The unspecified-address warning `listen PORT` gives.
fn open_listener_warning(addr: &str, path: &str, line: u32) -> String {
    format!(
        "{addr} accepts every host that can reach it: anyone may use this proxy; \
         restrict it with allow/deny, auth_basic, a firewall or a specific address, in {path}:{line}"
    )
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn unknown_directive_names_its_line() {
    let text = "\
# sluice test config            (line 1)

# a comment with ; { } in it    (line 3)
server {
    # \"quoted\" in a comment
    listen 127.0.0.1:3128;
    proxy_connect;              # trailing comment
    server_name \"two
lines\";
    proxy_connect_allow 443
        563;
    foo bar;
}
";
    assert_refused(text, 12, "unknown directive \"foo\"");
}

#[test]
fn crlf_line_endings_count_lines_too() {
    let text = "server {\r\n    listen 127.0.0.1:3128;\r\n\r\n    bogus;\r\n}\r\n";
    assert_refused(text, 4, "unknown directive \"bogus\"");
}

#[test]
fn listen_with_an_invalid_port() {
    assert_refused(
        "server {\n    proxy_connect;\n    listen x:99999;\n}\n",
        3,
        "invalid port in \"x:99999\" of the \"listen\" directive",
    );
    assert_refused(
        "server {\n    proxy_connect;\n    listen 127.0.0.1:0x;\n}\n",
        3,
        "invalid port in \"127.0.0.1:0x\" of the \"listen\" directive",
    );
    for bad in [
        "65536",
        "127.0.0.1:",
        "127.0.0.1:-1",
        "[::1]x",
        "[::1]:99999",
    ] {
        assert_refused(
            &format!("server {{\n    listen {bad};\n}}\n"),
            2,
            &format!("invalid port in \"{bad}\" of the \"listen\" directive"),
        );
    }
}

#[test]
fn listen_with_an_invalid_ipv6_address() {
    assert_refused(
        "server {\n    listen [zz]:3128;\n}\n",
        2,
        "host not found in \"[zz]:3128\" of the \"listen\" directive",
    );
}

#[test]
fn listen_parameters_that_are_refused() {
    let ssl_like = |param: &str| {
        format!(
            "the \"{param}\" parameter of the \"listen\" directive is not supported yet \
             (sluice listens for plain-text proxy requests; HTTPS sites are still reached through CONNECT)"
        )
    };
    assert_refused(
        "server {\n    listen 3128 ssl;\n}\n",
        2,
        "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 http3;\n}\n",
        2,
        &ssl_like("http3"),
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 backlog=abc;\n}\n",
        2,
        "invalid backlog \"abc\"",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 sideways;\n}\n",
        2,
        "invalid parameter \"sideways\"",
    );
    assert_refused(
        "server {\n    listen unix:/run/sluice.sock;\n}\n",
        2,
        "unix sockets in \"unix:/run/sluice.sock\" of the \"listen\" directive are not supported",
    );
}

#[test]
fn server_inside_server_is_not_allowed() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    server {\n        listen 127.0.0.1:3129;\n    }\n}\n",
        3,
        "\"server\" directive is not allowed here",
    );
}

#[test]
fn directives_in_the_wrong_context() {
    assert_refused(
        "listen 127.0.0.1:3128;\n",
        1,
        "\"listen\" directive is not allowed here",
    );
    assert_refused(
        "http {\n    proxy_connect;\n    server {\n        listen 127.0.0.1:3128;\n    }\n}\n",
        2,
        "\"proxy_connect\" directive is not allowed here",
    );
    assert_refused(
        "http {\n    http {\n    }\n}\n",
        2,
        "\"http\" directive is not allowed here",
    );
    assert_refused(
        &server("    location / {\n        proxy_connect_allow all;\n    }"),
        5,
        "\"proxy_connect_allow\" directive is not allowed here",
    );
    assert_refused(
        &server("    proxy_pass http://$http_host$request_uri;"),
        4,
        "\"proxy_pass\" directive is not allowed here",
    );
}

#[test]
fn missing_semicolon_before_close_brace() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128\n}\n",
        3,
        "unexpected \"}\"",
    );
}

#[test]
fn missing_semicolon_at_end_of_file() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n}\nworker_processes 1",
        4,
        "unexpected end of file, expecting \";\" or \"}\"",
    );
}

#[test]
fn extra_close_brace() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n}\n}\n",
        4,
        "unexpected \"}\"",
    );
}

#[test]
fn missing_close_brace() {
    // The line is that of the last token, where the block should have been closed.
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    proxy_connect;\n",
        3,
        "unexpected end of file, expecting \"}\"",
    );
}

#[test]
fn stray_semicolon_and_brace() {
    assert_refused(&server("    ;"), 4, "unexpected \";\"");
    assert_refused(&server("    {}"), 4, "unexpected \"{\"");
}

#[test]
fn unterminated_quotes() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    proxy_connect_response \"HTTP/1.1 200 OK\\r\\n\\r\\n;\n}\n",
        3,
        "unexpected end of file, expecting terminating \"",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    server_name 'oops;\n}\n",
        3,
        "unexpected end of file, expecting terminating '",
    );
}

#[test]
fn closing_quote_needs_a_separator() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    server_name \"a\"b;\n}\n",
        3,
        "unexpected \"b\"",
    );
}

#[test]
fn invalid_utf8_is_refused() {
    let t = test_bytes(b"server {\n    listen 127.0.0.1:3128;\n    server_name \xff\xfe;\n}\n");
    let path = &t.path;
    assert_eq!(
        t.stderr,
        format!(
            "sluice: [emerg] invalid UTF-8 in a word in {path}:3\nsluice: configuration file {path} test failed\n"
        )
    );
    assert_eq!(t.code, Some(1));
}

#[test]
fn invalid_number_of_arguments() {
    let message = "invalid number of arguments in \"proxy_connect_connect_timeout\" directive";
    assert_refused(&server("    proxy_connect_connect_timeout;"), 4, message);
    assert_refused(
        &server("    proxy_connect_connect_timeout 1s 2s;"),
        4,
        message,
    );
    assert_refused(
        &server("    proxy_connect on;"),
        4,
        "invalid number of arguments in \"proxy_connect\" directive",
    );
    assert_refused(
        &server("    proxy_connect_allow;"),
        4,
        "invalid number of arguments in \"proxy_connect_allow\" directive",
    );
    assert_refused(
        &server("    location {\n    }"),
        4,
        "invalid number of arguments in \"location\" directive",
    );
    assert_refused(
        "server x {\n    listen 127.0.0.1:3128;\n}\n",
        1,
        "invalid number of arguments in \"server\" directive",
    );
}

#[test]
fn duplicate_directive() {
    assert_refused(
        &server("    resolver_timeout 3s;\n    resolver_timeout 5s;"),
        5,
        "\"resolver_timeout\" directive is duplicate",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    proxy_connect;\n    proxy_connect;\n}\n",
        4,
        "\"proxy_connect\" directive is duplicate",
    );
}

#[test]
fn bad_time_values() {
    for bad in [
        "5x",
        "1.5s",
        "-1",
        "s",
        "0",
        "0s",
        "1 s",
        "366d",
        "1y1ms",
        "31536001",
        "18446744073709551615",
    ] {
        let text = server(&format!("    proxy_connect_connect_timeout \"{bad}\";"));
        assert_refused(
            &text,
            4,
            &format!(
                "\"proxy_connect_connect_timeout\" directive invalid value \"{bad}\" \
                 (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)"
            ),
        );
    }
    assert_refused(
        &server("    resolver_timeout soon;"),
        4,
        "\"resolver_timeout\" directive invalid value \"soon\" (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
    );
}

#[test]
fn bad_proxy_connect_allow_ports() {
    for bad in [
        "0",
        "70000",
        "2000-1000",
        "abc",
        "443-",
        "-443",
        "1-2-3",
        "+443",
    ] {
        assert_refused(
            &server(&format!("    proxy_connect_allow 443 {bad};")),
            4,
            &format!("invalid port \"{bad}\" in \"proxy_connect_allow\" directive"),
        );
    }
}

#[test]
fn proxy_connect_allow_all_still_checks_the_other_ports() {
    assert_refused(
        &server("    proxy_connect_allow all abc;"),
        4,
        "invalid port \"abc\" in \"proxy_connect_allow\" directive",
    );
}

#[test]
fn resolver_refusals() {
    assert_refused(
        &server("    resolver dns.example.invalid;"),
        4,
        "host not found in resolver \"dns.example.invalid\" (a name server is given by its IP \
         address, or by a name this machine can resolve)",
    );
    assert_refused(
        &server("    resolver 127.0.0.1 ipv4=off ipv6=off;"),
        4,
        "\"ipv4\" and \"ipv6\" cannot both be \"off\"",
    );
    assert_refused(
        &server("    resolver valid=30s;"),
        4,
        "no name server address in \"resolver\" directive",
    );
    assert_refused(
        &server("    resolver 127.0.0.1 ipv6=maybe;"),
        4,
        "invalid parameter \"ipv6=maybe\"",
    );
    assert_refused(
        &server("    resolver 127.0.0.1 valid=later;"),
        4,
        "invalid parameter \"valid=later\"",
    );
    assert_refused(
        &server("    resolver 127.0.0.1 ttl=5;"),
        4,
        "invalid parameter \"ttl=5\"",
    );
}

#[test]
fn proxy_connect_bind_refusals() {
    assert_refused(
        &server("    proxy_connect_bind 1.2.3.4 transparent;"),
        4,
        "the \"transparent\" parameter of \"proxy_connect_bind\" is not supported",
    );
    assert_refused(
        &server("    proxy_connect_bind $var;"),
        4,
        "unknown \"var\" variable",
    );
    assert_refused(
        &server("    proxy_connect_bind localhost;"),
        4,
        "invalid address \"localhost\" in \"proxy_connect_bind\" directive: an IP address is needed",
    );
}

#[test]
fn proxy_connect_address_refusals() {
    assert_refused(
        &server("    proxy_connect_address $x;"),
        4,
        "unknown \"x\" variable",
    );
    assert_refused(
        &server("    proxy_connect_address upstream..example:443;"),
        4,
        "invalid address \"upstream..example:443\" in \"proxy_connect_address\" directive: \
         an IP address or a host name, optionally with a port, is needed",
    );
}

#[test]
fn proxy_connect_response_refusals() {
    assert_refused(
        &server("    proxy_connect_response \"HTTP/1.1 200 OK\\r\\nX-Host: $nope\\r\\n\\r\\n\";"),
        4,
        "unknown \"nope\" variable",
    );
    assert_refused(
        &server("    proxy_connect_response \"HTTP/1.1 200 OK\\r\\n\";"),
        4,
        "\"proxy_connect_response\" must be a whole response head ending in \"\\r\\n\\r\\n\"",
    );
    assert_refused(
        &server("    proxy_connect_response \"HTTP/1.1 200 ${connect_host\\r\\n\\r\\n\";"),
        4,
        "the closing bracket in variable name is missing",
    );
}

#[test]
fn proxy_pass_to_a_fixed_backend_is_not_supported() {
    assert_refused(
        &server("    location / {\n        proxy_pass http://backend;\n    }"),
        5,
        "proxy_pass \"http://backend\" is not supported: sluice forwards each request to the host \
         it names; write \"proxy_pass http://$http_host$request_uri;\"",
    );
}

#[test]
fn access_control_forms_and_refusals() {
    // Accepted where sluice applies them: server and http.
    let t = test_config(&server(
        "    allow 10.0.0.0/8;\n    allow ::1;\n    deny all;\n    destination_allow *.corp.example .intra.example 10.0.0.0/8;\n    \
         destination_deny all;\n    max_connections_per_client 10;\n    large_client_header_buffers 8 16k;",
    ));
    assert!(t.ok, "{}", t.stderr);
    let t = test_config(
        "max_connections 100;\nhttp {\n    deny 192.0.2.0/24;\n    server {\n        listen 127.0.0.1:3128;\n    }\n}\n",
    );
    assert!(t.ok, "{}", t.stderr);
    // In a location they would not cover CONNECT: refused rather than half-applied.
    assert_refused(
        &server("    location / {\n        allow 10.0.0.0/8;\n    }"),
        5,
        "\"allow\" in a location is not supported: sluice applies it to every request of the server, \
         CONNECT included; move it to the server block",
    );
    assert_refused(
        &server("    allow 10.0.0.1/8;"),
        4,
        "invalid parameter \"10.0.0.1/8\" (low address bits of the mask are not zero)",
    );
    assert_refused(
        &server("    deny banana;"),
        4,
        "invalid parameter \"banana\" (invalid address)",
    );
    assert_refused(
        &server("    destination_deny 10.0.0.0/33;"),
        4,
        "invalid address \"10.0.0.0/33\" in \"destination_deny\" directive (invalid prefix length)",
    );
    assert_refused(
        &server("    destination_allow exa$mple.com;"),
        4,
        "invalid host pattern \"exa$mple.com\" in \"destination_allow\" directive",
    );
    assert_refused(
        &server("    max_connections_per_client 0;"),
        4,
        "invalid value \"0\" in \"max_connections_per_client\" directive",
    );
    assert_refused(
        &server("    large_client_header_buffers 4 10;"),
        4,
        "invalid size \"10\" in \"large_client_header_buffers\" (1k to 1m)",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    auth_basic \"x\";\n}\n",
        1,
        "\"auth_basic\" needs \"auth_basic_user_file\" in the same server block or above it",
    );
}

#[test]
fn include_is_refused() {
    assert_refused(
        "include /etc/sluice/*.conf;\n",
        1,
        "\"include\" directive is not supported yet; put everything in one file",
    );
}

#[test]
fn duplicate_location_is_refused() {
    assert_refused(
        &server("    location / {\n    }\n    location / {\n    }"),
        6,
        "duplicate location \"/\"",
    );
}

#[test]
fn server_without_listen() {
    assert_refused(
        "# no listen below\nserver {\n    proxy_connect;\n}\n",
        2,
        "no \"listen\" directive in the \"server\" block (sluice needs an address to listen on)",
    );
}

#[test]
fn file_without_a_server_block() {
    let no_server = |path: &str| {
        format!(
            "no \"server\" block in {path}: sluice needs at least one, with a \"listen\" directive"
        )
    };
    assert_refused_whole("", no_server);
    assert_refused_whole("# only a comment\n", no_server);
    assert_refused_whole("worker_processes 4;\n", no_server);
    assert_refused_whole("http {\n    resolver_timeout 3s;\n}\n", no_server);
}

#[test]
fn same_listen_in_two_servers() {
    let text = "\
server {
    listen 127.0.0.1:3128;
}
server {
    listen 127.0.0.1:3129;
    listen 127.0.0.1:3128;
}
";
    let t = test_config(text);
    let path = &t.path;
    assert_eq!(
        t.stderr,
        format!(
            "sluice: [emerg] a duplicate listen 127.0.0.1:3128 (first in {path}:2) in {path}:6\n\
             sluice: configuration file {path} test failed\n"
        )
    );
    assert_eq!(t.code, Some(1));

    // `*:PORT` and `PORT` are the same address.
    let t = test_config("server {\n    listen 3128;\n}\nserver {\n    listen *:3128;\n}\n");
    let path = &t.path;
    assert_eq!(
        t.stderr,
        format!(
            "sluice: [emerg] a duplicate listen 0.0.0.0:3128 (first in {path}:2) in {path}:5\n\
             sluice: configuration file {path} test failed\n"
        )
    );
}

#[test]
fn directive_given_a_block() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 {\n    }\n}\n",
        2,
        "directive \"listen\" is not terminated by \";\"",
    );
    assert_refused(
        &server("    root /data {\n    }"),
        4,
        "directive \"root\" is not terminated by \";\"",
    );
}

#[test]
fn block_directive_without_a_block() {
    assert_refused("server;\n", 1, "directive \"server\" has no opening \"{\"");
    assert_refused(
        &server("    location /;"),
        4,
        "directive \"location\" has no opening \"{\"",
    );
    assert_refused("events;\n", 1, "directive \"events\" has no opening \"{\"");
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("server {{\n{}", "location / {".repeat(200));
    assert_refused(&text, 2, "blocks are nested too deeply");
}

#[test]
fn missing_file() {
    let dir = fresh_dir();
    let path = dir.join("absent.conf");
    let path = path.to_str().unwrap();
    let output = sluice(&["-t", "-c", path]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let mut lines = stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "sluice: [emerg] cannot read the configuration file \"{path}\": "
        )),
        "{stderr}"
    );
    assert!(first.contains("No such file or directory"), "{stderr}");
    assert_eq!(
        lines.next(),
        Some(format!("sluice: configuration file {path} test failed").as_str())
    );
    assert_eq!(lines.next(), None);
}

// ---------------------------------------------------------------------------------------------
// Accepted forms

#[test]
fn seed_block_loads_with_warnings() {
    let (warnings, path) = assert_accepted(common::NGINX_SEED_BLOCK);
    // Exactly one warning each for root and index, one for the open listener, and none for
    // the location: plain-HTTP forwarding works, so proxy_pass is no longer a "405" note.
    assert_eq!(
        warnings,
        vec![
            format!("\"root\" directive is ignored (a forward proxy serves no files) in {path}:6"),
            format!("\"index\" directive is ignored (a forward proxy serves no files) in {path}:7"),
            open_listener_warning("0.0.0.0:10101", &path, 2),
        ]
    );
    assert!(!warnings.iter().any(|w| w.contains("405")), "{warnings:#?}");
}

#[test]
fn http_block_wraps_servers() {
    let text = "\
http {
    resolver_timeout 3s;
    proxy_connect_allow 443 8443;
    proxy_connect_connect_timeout 10s;
    server {
        listen 127.0.0.1:3128;
        proxy_connect;
        resolver_timeout 5s;
    }
    server {
        listen 127.0.0.1:3129;
        proxy_connect;
    }
    proxy_connect_data_timeout 2m;
}
";
    assert_clean(text);
}

#[test]
fn servers_both_inside_and_outside_http() {
    assert_clean(
        "server {\n    listen 127.0.0.1:3128;\n}\nhttp {\n    server {\n        listen 127.0.0.1:3129;\n    }\n}\n",
    );
}

#[test]
fn events_block_is_accepted_with_a_warning() {
    let (warnings, path) = assert_accepted(&format!(
        "events {{\n    worker_connections 1024;\n}}\n{}",
        server("")
    ));
    assert_eq!(
        warnings,
        vec![format!(
            "\"events\" directive is ignored (sluice sizes its own event loop) in {path}:1"
        )]
    );
}

#[test]
fn main_context_nginx_directives_warn() {
    let (warnings, path) = assert_accepted(&format!(
        "worker_processes auto;\nuser nobody;\npid /run/nginx.pid;\nerror_log stderr info;\n{}",
        server("    access_log off;\n    server_name proxy.example;\n    tcp_nodelay on;")
    ));
    assert_eq!(
        warnings,
        vec![
            format!(
                "\"user\" directive is ignored (run sluice as the user it should be) in {path}:2"
            ),
            format!("\"pid\" directive is ignored (sluice runs in the foreground) in {path}:3"),
            format!(
                "\"error_log\" directive is ignored (sluice logs to standard error; RUST_LOG sets the level) in {path}:4"
            ),
            format!(
                "\"server_name\" directive is ignored (a forward proxy is chosen by its listen address, not by name) in {path}:9"
            ),
            format!(
                "\"tcp_nodelay\" directive is ignored (sluice always sets TCP_NODELAY) in {path}:10"
            ),
        ]
    );
}

#[test]
fn worker_processes_forms() {
    assert_clean(&format!("worker_processes auto;\n{}", server("")));
    assert_clean(&format!("worker_processes 1;\n{}", server("")));
    assert_clean(&format!("worker_processes 16;\n{}", server("")));
    for bad in ["0", "-1", "two", "2k"] {
        assert_refused(
            &format!("worker_processes {bad};\n{}", server("")),
            1,
            &format!("invalid value \"{bad}\" in \"worker_processes\" directive"),
        );
    }
    assert_refused(
        &format!("worker_processes 5000;\n{}", server("")),
        1,
        "\"worker_processes\" may be at most 1024",
    );
    assert_refused(
        &format!("worker_processes 2;\nworker_processes 2;\n{}", server("")),
        2,
        "\"worker_processes\" directive is duplicate",
    );
    assert_refused(
        "http {\n    worker_processes 2;\n}\n",
        2,
        "\"worker_processes\" directive is not allowed here",
    );
}

#[test]
fn every_time_unit() {
    for time in [
        "1ms", "500ms", "3s", "5m", "1h", "1d", "1w", "1M", "1y", "365d", "1m30s", "1s500ms", "30",
        "31536000",
    ] {
        assert_clean(&server(&format!(
            "    proxy_connect_connect_timeout {time};\n    proxy_connect_data_timeout {time};\n    \
             resolver_timeout {time};\n    client_header_timeout {time};"
        )));
    }
}

#[test]
fn listen_forms() {
    assert_clean("server {\n    listen [::1]:3128;\n}\n");
    assert_clean("server {\n    listen 127.0.0.1:3128 default_server reuseport backlog=511;\n}\n");
    assert_clean("server {\n    listen 127.0.0.1:3128 default bind;\n}\n");
    assert_clean("server {\n    listen 127.0.0.1;\n}\n");
    assert_clean("server {\n    listen [::1];\n}\n");
    // Port 0: the kernel picks one per listener, so two of them are no duplicate.
    assert_clean("server {\n    listen 127.0.0.1:0;\n    listen 127.0.0.1:0;\n}\n");

    let (warnings, path) = assert_accepted("server {\n    listen *:3128;\n}\n");
    assert_eq!(
        warnings,
        vec![open_listener_warning("0.0.0.0:3128", &path, 2)]
    );
    let (warnings, path) = assert_accepted("server {\n    listen [::]:3128 ipv6only=on;\n}\n");
    assert_eq!(warnings, vec![open_listener_warning("[::]:3128", &path, 2)]);
    // A server that chooses its clients is no open proxy, whatever it listens on: a closed
    // allow/deny list (here written after the listen, and in http), or a password.
    for closed in [
        "server {\n    listen *:3128;\n    allow 10.0.0.0/8;\n    deny all;\n}\n",
        "http {\n    deny all;\n    server {\n        listen [::]:3128;\n    }\n}\n",
    ] {
        assert_clean(closed);
    }
    let dir = common::TempDir::new();
    let users = dir.0.join("users");
    std::fs::write(&users, "u:{PLAIN}p\n").unwrap();
    assert_clean(&format!(
        "server {{\n    listen *:3128;\n    auth_basic proxy;\n    auth_basic_user_file {};\n}}\n",
        users.display()
    ));
    // A list that only refuses some hosts still lets the rest of the world in.
    let (warnings, path) =
        assert_accepted("server {\n    listen *:3128;\n    deny 192.0.2.0/24;\n}\n");
    assert_eq!(
        warnings,
        vec![open_listener_warning("0.0.0.0:3128", &path, 2)]
    );
    let (warnings, path) = assert_accepted("server {\n    listen 127.0.0.1:3128 deferred;\n}\n");
    assert_eq!(
        warnings,
        vec![format!(
            "the \"deferred\" parameter of the \"listen\" directive is ignored in {path}:2"
        )]
    );
}

#[test]
fn proxy_connect_allow_forms() {
    assert_clean(&server("    proxy_connect_allow all;"));
    assert_clean(&server("    proxy_connect_allow 443 563 8000-9000;"));
    assert_clean(&server("    proxy_connect_allow 1-65535;"));
    assert_clean(&server("    proxy_connect_allow 443-443;"));
}

#[test]
fn resolver_forms() {
    assert_clean(&server(
        "    resolver 127.0.0.1 [::1]:5353 valid=300s ipv6=off;",
    ));
    assert_clean(&server(
        "    resolver 8.8.8.8:53 ::1 [2001:db8::1] ipv4=on;",
    ));
    assert_clean(&server("    resolver 127.0.0.1 ipv4=off status_zone=dns;"));
}

#[test]
fn deprecated_and_functionless_timeouts_warn() {
    let (warnings, path) = assert_accepted(&server(
        "    proxy_connect_read_timeout 30s;\n    proxy_connect_send_timeout 30s;",
    ));
    assert_eq!(
        warnings,
        vec![
            format!(
                "\"proxy_connect_read_timeout\" is deprecated, use \"proxy_connect_data_timeout\" in {path}:4"
            ),
            format!(
                "\"proxy_connect_send_timeout\" has no function (as in the proxy_connect module); \
                 \"proxy_connect_data_timeout\" bounds both directions in {path}:5"
            ),
        ]
    );
    // Their values are still checked.
    assert_refused(
        &server("    proxy_connect_send_timeout never;"),
        4,
        "\"proxy_connect_send_timeout\" directive invalid value \"never\" \
         (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
    );
}

#[test]
fn proxy_connect_response_quoting() {
    assert_clean(&server(
        "    proxy_connect_response \"HTTP/1.1 200 Connection Established\\r\\nProxy-agent: \\\"sluice\\\"\\r\\nX-Target: $connect_host:${connect_port} $connect_addr\\r\\n\\r\\n\";",
    ));
    assert_clean(&server(
        "    proxy_connect_response 'HTTP/1.1 200 OK\\r\\nX-Quote: \\'single\\' \\\\ \\t tab\\r\\n\\r\\n';",
    ));
    // A literal line break inside the quotes is part of the value, like an escaped one.
    assert_clean(&server(
        "    proxy_connect_response \"HTTP/1.1 200 OK\r\n\r\n\";",
    ));
}

#[test]
fn proxy_connect_address_and_bind_forms() {
    assert_clean(&server(
        "    proxy_connect_address 127.0.0.1:8443;\n    proxy_connect_bind 127.0.0.1;",
    ));
    assert_clean(&server(
        "    proxy_connect_address off;\n    proxy_connect_bind off;",
    ));
    assert_clean(&server(
        "    proxy_connect_address [::1]:8443;\n    proxy_connect_bind ::1;",
    ));
    assert_clean(&server("    proxy_connect_address 10.0.0.1;"));
}

#[test]
fn location_forms() {
    assert_clean(&server(
        "    location / {
        proxy_pass http://$http_host$request_uri;
    }
    location = /exact {
        proxy_pass http://$host$request_uri;
    }
    location ^~ /prefix {
        proxy_pass http://$http_host;
    }
    location /bare {
        proxy_pass http://$host;
    }
    location /nothing {
    }",
    ));
}

#[test]
fn location_refusals() {
    assert_refused(
        &server("    location ~ \\.php$ {\n    }"),
        4,
        "regular expression locations are not supported",
    );
    assert_refused(
        &server("    location ~* /x {\n    }"),
        4,
        "regular expression locations are not supported",
    );
    assert_refused(
        &server("    location sideways /x {\n    }"),
        4,
        "invalid location modifier \"sideways\"",
    );
    assert_refused(
        &server("    location / {\n        location /inner {\n        }\n    }"),
        5,
        "\"location\" directive is not allowed here",
    );
}

#[test]
fn forwarding_directives_at_every_level() {
    let text = "\
http {
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_connect_timeout 5s;
    proxy_read_timeout 1m;
    proxy_send_timeout 1m;
    proxy_via off;
    proxy_http_version 1.1;
    keepalive_timeout 75s 60s;
    client_body_timeout 30s;
    send_timeout 30s;
    proxy_http_allow 80 8080-8090;
    server {
        listen 127.0.0.1:3128;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Remote \"$remote_addr:$remote_port\";
        proxy_set_header Accept-Encoding \"\";
        proxy_via on;
        proxy_http_allow all;
        location / {
            proxy_pass http://$http_host$request_uri;
            proxy_set_header Host $host;
            proxy_set_header X-UA $http_user_agent;
            proxy_set_header X-Line \"$scheme $request_method ${request_uri}\";
            proxy_read_timeout 500ms;
        }
    }
}
";
    assert_clean(text);
}

#[test]
fn forwarding_directive_refusals() {
    let in_location = |body: &str| server(&format!("    location / {{\n{body}\n    }}"));
    assert_refused(
        &in_location("        proxy_set_header \"Bad Name\" x;"),
        5,
        "invalid header name \"Bad Name\"",
    );
    assert_refused(
        &in_location("        proxy_set_header X-A:B x;"),
        5,
        "invalid header name \"X-A:B\"",
    );
    assert_refused(
        &in_location("        proxy_set_header \"\" x;"),
        5,
        "invalid header name \"\"",
    );
    assert_refused(
        &in_location("        proxy_set_header X-A $nope;"),
        5,
        "unknown \"nope\" variable",
    );
    assert_refused(
        &in_location("        proxy_set_header X-A;"),
        5,
        "invalid number of arguments in \"proxy_set_header\" directive",
    );
    assert_refused(
        &in_location("        proxy_via maybe;"),
        5,
        "invalid value \"maybe\" in \"proxy_via\" directive, it must be \"on\" or \"off\"",
    );
    assert_refused(
        &in_location("        proxy_ignore_client_abort sometimes;"),
        5,
        "invalid value \"sometimes\" in \"proxy_ignore_client_abort\" directive, it must be \"on\" or \"off\"",
    );
    assert_refused(
        &in_location("        proxy_http_version 2;"),
        5,
        "invalid value \"2\" in \"proxy_http_version\" directive",
    );
    assert_refused(
        &in_location("        proxy_read_timeout forever;"),
        5,
        "\"proxy_read_timeout\" directive invalid value \"forever\" \
         (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
    );
    assert_refused(
        &server("    proxy_http_allow 80 0;"),
        4,
        "invalid port \"0\" in \"proxy_http_allow\" directive",
    );
    assert_refused(
        &server("    keepalive_timeout never;"),
        4,
        "\"keepalive_timeout\" directive invalid value \"never\" \
         (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
    );
    assert_refused(
        &in_location(
            "        proxy_pass http://$http_host$request_uri;\n        proxy_pass http://$host;",
        ),
        6,
        "\"proxy_pass\" directive is duplicate",
    );
}

#[test]
fn keepalive_timeout_checks_its_second_argument() {
    let t = test_config(&server("    keepalive_timeout 75s banana;"));
    assert_eq!(t.code, Some(1), "{}", t.stderr);
    let first = t.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("sluice: [emerg] ")
            && first.contains("\"keepalive_timeout\"")
            && first.ends_with(&format!(" in {}:4", t.path)),
        "{}",
        t.stderr
    );
}

#[test]
fn forwarding_directives_that_warn() {
    let (warnings, path) = assert_accepted(&server(
        "    proxy_http_version 1.0;\n    proxy_buffering off;\n    proxy_request_buffering off;",
    ));
    assert_eq!(
        warnings,
        vec![
            format!(
                "\"proxy_buffering\" directive is ignored (sluice always streams bodies) in {path}:5"
            ),
            format!(
                "\"proxy_request_buffering\" directive is ignored (sluice always streams bodies) in {path}:6"
            ),
            format!(
                "\"proxy_http_version 1.0\" is ignored: sluice speaks HTTP/1.1 to origins so that \
                 their connections can be reused, in {path}:4"
            ),
        ]
    );
}

#[test]
fn several_servers() {
    assert_clean(
        "\
server {
    listen 127.0.0.1:3128;
    proxy_connect;
}
server {
    listen 127.0.0.1:3129;
    listen [::1]:3128;
    proxy_connect;
    proxy_connect_allow all;
}
server {
    listen 127.0.0.2:3128;
}
",
    );
}

#[test]
fn embedded_default_passes() {
    let output = sluice(&["-t"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "sluice: the configuration file (embedded default) syntax is ok\n\
         sluice: configuration file (embedded default) test is successful\n"
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn version_flag() {
    let output = sluice(&["-V"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("sluice/{}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn example_config_passes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.conf.example");
    assert!(std::path::Path::new(path).exists(), "{path} is missing");
    let output = sluice(&["-t", "-c", path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "sluice: the configuration file {path} syntax is ok\n\
             sluice: configuration file {path} test is successful\n"
        )),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile input

/// A few kilobytes of deterministic noise (no crate for randomness here).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<Vec<u8>> = [
        "",
        "{",
        "}",
        "\"",
        "'",
        "\\",
        ";",
        "$",
        "${",
        "#",
        "\"\\",
        "server{listen",
        "server{listen 1;}}",
        "server{listen 1;",
        "server {listen \"",
        "server { listen 127.0.0.1:3128; location",
        "\"\" ;",
        "server { listen ${; }",
        "server { listen 127.0.0.1:3128; proxy_connect_response \"$\"; }",
        "server { listen 127.0.0.1:3128; proxy_connect_response \"$$\\r\\n\\r\\n\"; }",
        "server { listen 127.0.0.1:3128; proxy_connect_response \"${}\\r\\n\\r\\n\"; }",
        "server { listen 127.0.0.1:3128; proxy_connect_allow -; }",
        "server { listen 127.0.0.1:3128; proxy_connect_connect_timeout 18446744073709551615; }",
        "server { listen 127.0.0.1:3128; proxy_connect_connect_timeout 99999999999999999999y; }",
        "server { listen 127.0.0.1:3128; resolver [; }",
        "server { listen [; }",
        "server { listen [::1; }",
        "server { listen :; }",
        "server { listen *; }",
        "server { listen 127.0.0.1:3128 backlog=; }",
        "server { listen 127.0.0.1:3128 backlog=99999999999999999999; }",
        "\u{feff}server { listen 127.0.0.1:3128; }",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    inputs.push(b"\0".to_vec());
    inputs.push(b"server {\0listen 127.0.0.1:3128;\0}\0".to_vec());
    inputs.push(b"\xff\xfe\xfd".to_vec());
    inputs.push(b"server { listen 127.0.0.1:3128; server_name \"\xc3\x28\"; }".to_vec());
    inputs.push("a".repeat(100_000).into_bytes());
    inputs.push(format!("server {{ listen 127.0.0.1:{}; }}", "9".repeat(100_000)).into_bytes());
    inputs.push(
        format!(
            "server {{ listen 127.0.0.1:3128; server_name \"{}\"; }}",
            "x".repeat(100_000)
        )
        .into_bytes(),
    );
    inputs.push(
        format!(
            "server {{ listen 127.0.0.1:3128; server_name {}; }}",
            "x ".repeat(50_000)
        )
        .into_bytes(),
    );
    inputs.push("{".repeat(100_000).into_bytes());
    inputs.push("}".repeat(100_000).into_bytes());
    inputs.push(";".repeat(100_000).into_bytes());
    inputs.push("\n".repeat(100_000).into_bytes());
    inputs.push(format!("server {{\n{}", "location / {\n".repeat(200)).into_bytes());
    inputs.push(
        format!(
            "server {{\n{}{}",
            "location / {\n".repeat(200),
            "}\n".repeat(201)
        )
        .into_bytes(),
    );
    inputs.push("a {".repeat(100_000).into_bytes());
    for seed in 0..8 {
        inputs.push(noise(seed, 4096));
    }
    // Noise made of the language's own characters, more likely to get past the lexer.
    let alphabet = b"server listen location { } ; \" ' \\ $ # \n 127.0.0.1:3128 proxy_connect ";
    for seed in 0..8 {
        inputs.push(
            noise(seed + 100, 4096)
                .into_iter()
                .map(|b| alphabet[b as usize % alphabet.len()])
                .collect(),
        );
    }

    for input in &inputs {
        let t = test_bytes(input);
        let shown = String::from_utf8_lossy(&input[..input.len().min(80)]).into_owned();
        assert!(
            matches!(t.code, Some(0 | 1)),
            "exit {:?} for {shown:?}\nstderr:\n{}",
            t.code,
            t.stderr
        );
        assert!(
            !t.stderr.contains("panicked"),
            "panic for {shown:?}:\n{}",
            t.stderr
        );
        let last = if t.ok {
            "test is successful"
        } else {
            "test failed"
        };
        assert!(
            t.stderr
                .ends_with(&format!("configuration file {} {last}\n", t.path)),
            "for {shown:?}:\n{}",
            t.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Values -t accepts must also be usable at run time

/// Runs sluice on `config` (which listens on 127.0.0.1:0), waits for its listener, calls
/// `exercise` with that address, stops it and returns everything it logged.
fn run_proxy(config: &str, exercise: impl FnOnce(std::net::SocketAddr)) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex, mpsc};

    let dir = fresh_dir();
    let path = dir.join("proxy.conf");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-c", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let writer = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.parse::<std::net::SocketAddr>().unwrap());
            }
            let mut log = writer.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(addr) => exercise(addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice did not start:\n{}", log.lock().unwrap());
        }
    }
    // Let a panic message, if any, reach the log before stopping the process.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&dir);
    log.lock().unwrap().clone()
}

/// Sends `request` and returns what comes back until the proxy closes or goes quiet.
fn exchange(proxy: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn absurd_timeouts_are_refused_or_harmless() {
    let huge = u64::MAX.to_string();
    let text = format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         client_header_timeout {huge};\n    proxy_connect_connect_timeout {huge};\n    \
         proxy_connect_data_timeout {huge};\n}}\n"
    );
    let t = test_config(&text);
    assert!(matches!(t.code, Some(0 | 1)), "{}", t.stderr);
    if !t.ok {
        // Refusing is a fine fix; it must name the directive's line like every other refusal.
        assert!(
            t.stderr.contains(&format!(" in {}:5\n", t.path)),
            "{}",
            t.stderr
        );
        return;
    }
    // Accepted: then a connection must get an answer, not a panicking task.
    let closed = common::ClosedPort::new();
    let closed_port = closed.addr.port();
    let mut answers = Vec::new();
    let log = run_proxy(&text, |proxy| {
        answers.push(exchange(
            proxy,
            format!(
                "CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\nHost: 127.0.0.1:{closed_port}\r\n\r\n"
            )
            .as_bytes(),
        ));
    });
    assert!(!log.contains("panicked"), "{log}");
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 5"), "{answer:?}\nlog:\n{log}");
    }
}

#[test]
fn underscores_in_headers_takes_on_or_off() {
    assert_clean(&server("    underscores_in_headers on;"));
    assert_clean(&server("    underscores_in_headers off;"));
    assert_refused(
        &server("    underscores_in_headers yes;"),
        4,
        "invalid value \"yes\" in \"underscores_in_headers\" directive, it must be \"on\" or \"off\"",
    );
}

/// CR, LF or NUL in a value that is written into a header would split the line on the wire:
/// refused, whether written as an escape, a literal line break inside quotes, or a raw byte.
#[test]
fn line_breaks_in_values_sent_on_the_wire_are_refused() {
    let in_location = |body: &str| server(&format!("    location / {{\n{body}\n    }}"));
    let header = "invalid value in \"proxy_set_header\" directive: \
                  CR, LF and NUL are not allowed in a value sent in a header";
    assert_refused(
        &in_location("        proxy_set_header X-A \"a\\r\\nInjected: 1\";"),
        5,
        header,
    );
    assert_refused(
        &in_location("        proxy_set_header X-A \"a\nInjected: 1\";"),
        5,
        header,
    );
    assert_refused(
        &in_location("        proxy_set_header X-A \"a\0b\";"),
        5,
        header,
    );
    assert_refused(
        &in_location("        proxy_set_header \"X-A\\r\\nB\" x;"),
        5,
        "invalid header name \"X-A\r\nB\"",
    );
    let realm = "invalid realm in \"auth_basic\" directive: \
                 CR, LF and NUL are not allowed in a value sent in a header";
    assert_refused(
        &server("    auth_basic \"a\\r\\nSet-Cookie: x\";"),
        4,
        realm,
    );
    assert_refused(&server("    auth_basic \"a\nb\";"), 4, realm);
    assert_refused(&server("    auth_basic \"a\0b\";"), 4, realm);
    let head = "\"proxy_connect_response\" may break lines only with \"\\r\\n\", may not hold an \
                empty line before its end, and may not contain NUL";
    for response in [
        "HTTP/1.1 200 OK\\nX-A: 1\\r\\n\\r\\n",
        "HTTP/1.1 200 OK\\r\\nX-A: 1\\rX-B: 2\\r\\n\\r\\n",
        "HTTP/1.1 200 OK\\r\\n\\r\\nsmuggled\\r\\n\\r\\n",
        "HTTP/1.1 200 OK\\r\\nX-A: \0\\r\\n\\r\\n",
        "HTTP/1.1 200 OK\n\\r\\n\\r\\n",
    ] {
        assert_refused(
            &server(&format!("    proxy_connect_response \"{response}\";")),
            4,
            head,
        );
    }
}

/// `-c /dev/zero` (or any file that is not a regular one) fails at once, with a reason,
/// whether testing or starting.
#[test]
fn a_config_that_is_not_a_regular_file_fails_at_once() {
    for args in [
        &["-t", "-c", "/dev/zero"][..],
        &["-c", "/dev/zero"],
        &["-c", "/"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sluice runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluice {args:?} still running after 20 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        let path = args.last().unwrap();
        assert!(
            stderr.starts_with(&format!(
                "sluice: [emerg] cannot read the configuration file \"{path}\": not a regular file\n"
            )),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn proxy_protocol_needs_the_trusted_balancers() {
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    listen 127.0.0.1:3129 proxy_protocol;\n}\n",
        3,
        "\"proxy_protocol\" needs \"set_real_ip_from\" in the same server block or above it: \
         the balancers trusted to name the client (trusting everyone would let any client \
         choose its own address)",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 proxy_protocol;\n    set_real_ip_from 10.0.0.1/8;\n}\n",
        3,
        "invalid parameter \"10.0.0.1/8\" (low address bits of the mask are not zero)",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128;\n    real_ip_header X-Forwarded-For;\n}\n",
        3,
        "\"real_ip_header X-Forwarded-For\" is not supported: sluice takes the client's address \
         only from a PROXY protocol header (\"real_ip_header proxy_protocol\")",
    );
    assert_refused(
        "server {\n    listen 127.0.0.1:3128 proxy_protocol;\n    set_real_ip_from 10.0.0.0/8;\n    proxy_protocol_timeout soon;\n}\n",
        4,
        "\"proxy_protocol_timeout\" directive invalid value \"soon\" (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
    );
    // An nginx block pasted whole is accepted, in `http` as in `server`.
    let t = test_config(
        "http {\n    set_real_ip_from 10.0.0.0/8;\n    set_real_ip_from ::1;\n    real_ip_header proxy_protocol;\n    proxy_protocol_timeout 3s;\n    server {\n        listen 127.0.0.1:3128 proxy_protocol;\n    }\n}\n",
    );
    assert!(t.ok, "{}", t.stderr);
}
