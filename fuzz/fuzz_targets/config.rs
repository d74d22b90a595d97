//! Config lexer, parser and builder: any file → a config or an error naming `file:line`,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

const FILE: &str = "fuzz.conf";

fuzz_target!(|data: &[u8]| {
    // auth_basic_user_file reads the file it names; keep the fuzzer away from /dev/zero & co.
    if data.windows(9).any(|w| w == b"user_file") {
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
