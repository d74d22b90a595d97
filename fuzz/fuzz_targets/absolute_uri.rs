//! Absolute URI: never a panic; an accepted URI rebuilt from its parts parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::error::ProxyError;
use sluice::forward::AbsoluteUri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AbsoluteUri::parse(text) {
        Ok(uri) => {
            assert!(uri.path_and_query.starts_with('/'), "{uri:?}");
            assert!(!uri.path_and_query.contains('#'));
            assert!(!uri.authority.contains(['/', '?', '#', '@']));
            assert_ne!(uri.target.port, 0);
            let rebuilt = format!("http://{}{}", uri.authority, uri.path_and_query);
            let again = AbsoluteUri::parse(&rebuilt).expect("a rebuilt URI parses");
            assert_eq!(uri, again);
        }
        Err(ProxyError::BadRequest(_)) => {}
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
});
