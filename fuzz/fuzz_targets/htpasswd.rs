//! htpasswd lines: any text → users or an error naming `file:line`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::access::auth::Users;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Users::parse(text, "users") {
        let shown = error.to_string();
        let (_, line) = shown
            .rsplit_once(" in users:")
            .unwrap_or_else(|| panic!("{shown:?}"));
        let line: usize = line.parse().unwrap_or_else(|_| panic!("{shown:?}"));
        assert!((1..=text.lines().count()).contains(&line), "{shown:?}");
    }
});
