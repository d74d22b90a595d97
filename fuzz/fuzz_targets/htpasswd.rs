//! htpasswd lines: any text → users and warnings each naming `file:line`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::access::htpasswd::Users;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (_, warnings) = Users::parse(text, "users");
    for warning in warnings {
        let (_, line) = warning
            .rsplit_once(" in users:")
            .unwrap_or_else(|| panic!("{warning:?}"));
        let line: usize = line.parse().unwrap_or_else(|_| panic!("{warning:?}"));
        assert!((1..=text.lines().count()).contains(&line), "{warning:?}");
    }
});
