//! Config lexer, parser and builder: any file → a config or an error naming `file:line`,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::settings::Config;

const FILE: &str = "fuzz.conf";

/// `listen NAME:PORT` resolves NAME with the system resolver when the config is read. Hostile
/// configs must not send DNS queries off this machine, so they are only parsed if every
/// `listen` in them is followed by an address literal (or a port): anything the lexer could
/// read differently (quotes, escapes, comments, a newline) counts as a name.
fn listens_only_on_literals(text: &[u8]) -> bool {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    let mut rest = text;
    while let Some(at) = rest.windows(6).position(|w| w == b"listen") {
        let after = &rest[at + 6..];
        let space = after.iter().take_while(|b| b" \t".contains(b)).count();
        let len = after[space..]
            .iter()
            .take_while(|b| !b" \t\r\n;{}".contains(b))
            .count();
        let Ok(arg) = std::str::from_utf8(&after[space..space + len]) else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let literal = digits(arg)
            || arg.parse::<SocketAddr>().is_ok()
            || arg.parse::<IpAddr>().is_ok()
            || arg
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok())
            || arg.strip_prefix("*:").is_some_and(digits);
        if space == 0 || !literal {
            return false;
        }
        rest = &after[space + len..];
    }
    true
}

fuzz_target!(|data: &[u8]| {
    // auth_basic_user_file reads the file it names; keep the fuzzer away from /dev/zero & co.
    if data.windows(9).any(|w| w == b"user_file") || !listens_only_on_literals(data) {
        return;
    }
    match Config::parse(data, FILE) {
        Ok(config) => assert!(!config.servers.is_empty()),
        Err(error) => {
            let shown = error.to_string();
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            if shown.starts_with("no \"server\" block in fuzz.conf: ") {
                return;
            }
            let (_, line) = shown
                .rsplit_once(&format!(" in {FILE}:"))
                .unwrap_or_else(|| panic!("an error without file:line: {shown:?}"));
            let line: usize = line.parse().unwrap_or_else(|_| panic!("{shown:?}"));
            assert!((1..=lines).contains(&line), "{shown:?} but {lines} lines");
        }
    }
});
