//! CONNECT authority: never a panic; an accepted target prints as `host:port` and that text
//! parses back to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::error::ProxyError;
use sluice::target::{Host, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Target::parse_authority(text) {
        Ok(target) => {
            assert_ne!(target.port, 0);
            if let Host::Name(name) = &target.host {
                assert!(!name.is_empty() && name.len() <= 254, "{name:?}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                );
                assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
            }
            let shown = target.to_string();
            let again = Target::parse_authority(&shown).expect("a printed target parses");
            assert_eq!(target, again);
        }
        Err(ProxyError::BadRequest(_)) => {}
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
});
