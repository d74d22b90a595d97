//! Any bytes → a parsed head or a typed error, never a panic; a parsed head, written out again
//! in canonical form, parses to the same head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::error::ProxyError;
use sluice::request::{Head, Limits, parse_head};

fn serialise(head: &Head) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, head.target, head.version
    )
    .into_bytes();
    for header in &head.headers {
        out.extend_from_slice(header.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks small limits now and then, so the size checks are reached too.
    let limits = match data.first() {
        Some(b) if b % 4 == 0 => Limits {
            line: 16 + usize::from(*b),
            header_line: 8 + usize::from(*b),
            head: 64 + 2 * usize::from(*b),
        },
        _ => Limits::default(),
    };
    match parse_head(data, limits) {
        Ok(head) => {
            // httparse hands out &str without re-checking; make sure it is really UTF-8.
            assert!(std::str::from_utf8(head.method.as_bytes()).is_ok());
            assert!(std::str::from_utf8(head.target.as_bytes()).is_ok());
            assert!(head.version <= 1);
            assert!(!head.method.is_empty() && !head.target.is_empty());
            assert!(!head.headers.iter().any(|h| h.name.is_empty()));
            assert!(
                !head
                    .headers
                    .iter()
                    .any(|h| h.value.contains(&b'\n') || h.value.contains(&b'\r'))
            );
            let again = parse_head(&serialise(&head), limits).expect("a re-serialised head parses");
            assert_eq!(head, again);
        }
        Err(
            ProxyError::BadRequest(_) | ProxyError::RequestLineTooLong | ProxyError::HeadTooLarge,
        ) => {}
        Err(other) => panic!("unexpected error kind from the head parser: {other:?}"),
    }
});
