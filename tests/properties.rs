//! Property tests of every parser sluice has: the request head, the CONNECT authority, the
//! absolute URI, the chunked decoder, the config file and htpasswd lines.
//!
//! Two kinds of property for each: hostile input (any bytes, or valid input mutated) ends in
//! a value or a typed error and never in a panic; valid input, generated from the grammar,
//! parses to exactly what was generated, and what was parsed prints back to the same thing.
//!
//! Each property runs the number of cases given beside it (`cases(N)`); `PROPTEST_CASES=M`
//! overrides them all, e.g. `PROPTEST_CASES=100000 cargo test --release --test properties`.
//! The fuzz targets in `fuzz/` check the same properties with coverage guidance.

use proptest::prelude::*;
use proptest::sample::{Index, select};

use sluice::access::htpasswd::Users;
use sluice::error::ProxyError;
use sluice::forward::{AbsoluteUri, Chunk, ChunkError, ChunkedDecoder};
use sluice::request::{Head, Header, Limits, parse_head};
use sluice::settings::Config;
use sluice::target::{Host, Target};

/// `n` cases, unless `PROPTEST_CASES` says otherwise.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

// ───────────────────────────── request head ─────────────────────────────

const TCHAR: &str = "[!#$%&'*+.^_`|~0-9A-Za-z-]";

fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{TCHAR}{{1,{max}}}")).unwrap()
}

/// A request-target as httparse accepts it: visible ASCII and any UTF-8 beyond it.
fn request_target() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[!-~]{1,80}").unwrap(),
        proptest::string::string_regex("(http://)?[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[!-~]{0,30})?")
            .unwrap(),
        proptest::string::string_regex("[!-~\u{a0}-\u{d7ff}\u{e000}-\u{10ffff}]{1,20}").unwrap(),
    ]
}

/// A field value: starts and ends with a visible byte (httparse trims whitespace around
/// values), may hold spaces, tabs and obs-text inside.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    let visible = prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff];
    let inner =
        prop_oneof![4 => 0x21u8..=0x7e, 1 => Just(b' '), 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    prop_oneof![
        1 => Just(Vec::new()),
        6 => (visible.clone(), proptest::collection::vec(inner, 0..60), visible).prop_map(
            |(first, mut middle, last)| {
                middle.insert(0, first);
                middle.push(last);
                middle
            }
        ),
    ]
}

fn head() -> impl Strategy<Value = Head> {
    let header = (token(30), field_value()).prop_map(|(name, value)| Header { name, value });
    (
        token(12),
        request_target(),
        0u8..=1,
        proptest::collection::vec(header, 0..20),
    )
        .prop_map(|(method, target, version, headers)| Head {
            method,
            target,
            version,
            headers,
        })
}

/// `head` written out; `space` adds optional whitespace after each colon.
fn serialise(head: &Head, space: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, head.target, head.version
    )
    .into_bytes();
    for header in &head.headers {
        out.extend_from_slice(header.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(space);
        out.extend_from_slice(&header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What `parse_head` may answer: a head, or one of the three errors a head can earn.
fn check_head_result(input: &[u8], result: Result<Head, ProxyError>, limits: Limits) {
    match result {
        Ok(head) => {
            assert!(!head.method.is_empty() && !head.target.is_empty());
            assert!(head.version <= 1);
            for h in &head.headers {
                assert!(!h.name.is_empty());
                assert!(!h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
            }
            // Whatever was accepted prints back to something that parses the same.
            let again = parse_head(&serialise(&head, b""), limits)
                .unwrap_or_else(|e| panic!("{input:?} parsed, its re-serialisation not: {e}"));
            assert_eq!(head, again);
        }
        Err(
            ProxyError::BadRequest(_) | ProxyError::RequestLineTooLong | ProxyError::HeadTooLarge,
        ) => {}
        Err(other) => panic!("{input:?}: unexpected error kind {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, u8),
    Remove(Index),
    Replace(Index, u8),
    Truncate(Index),
    Duplicate(Index, Index),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        select(b"\r\n :\t\0/[]@?#%\x7f\x80\xff;\"".to_vec()),
        any::<u8>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        match m {
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Mutation::Remove(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Replace(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Duplicate(a, b) => {
                let (a, b) = (a.index(bytes.len()), b.index(bytes.len()));
                let (lo, hi) = (a.min(b), a.max(b));
                let copy = bytes[lo..=hi].to_vec();
                bytes.splice(hi..hi, copy);
            }
        }
    }
}

fn small_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (16usize..300, 4usize..200).prop_map(|(line, header_line)| Limits {
            line,
            header_line,
            head: 32 * 1024,
        }),
    ]
}

proptest! {
    #![proptest_config(cases(768))]

    /// Any byte string: a head or BadRequest / RequestLineTooLong / HeadTooLarge, no panic.
    #[test]
    fn head_any_bytes_is_a_head_or_a_typed_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        limits in small_limits(),
    ) {
        check_head_result(&bytes, parse_head(&bytes, limits), limits);
        // The same bytes made to end like a head, so the parser gets past "incomplete".
        let mut ended = bytes.clone();
        ended.extend_from_slice(b"\r\n\r\n");
        check_head_result(&ended, parse_head(&ended, limits), limits);
    }

    /// A valid head with a few mutations (bytes inserted, removed, replaced, cut, repeated).
    #[test]
    fn head_mutated_is_a_head_or_a_typed_error(
        head in head(),
        mutations in proptest::collection::vec(mutation(), 1..6),
        limits in small_limits(),
    ) {
        let mut bytes = serialise(&head, b" ");
        mutate(&mut bytes, &mutations);
        check_head_result(&bytes, parse_head(&bytes, limits), limits);
    }

    /// A generated head, written out (with or without whitespace after the colons), parses to
    /// exactly what was generated.
    #[test]
    fn head_valid_round_trips(head in head(), space in select(vec!["", " ", "\t", "  \t "])) {
        let bytes = serialise(&head, space.as_bytes());
        let parsed = parse_head(&bytes, Limits::default());
        prop_assert_eq!(parsed.as_ref().ok(), Some(&head), "{:?}", String::from_utf8_lossy(&bytes));
    }

    /// The size limits decide exactly as documented: a request line over `line` is a 414, a
    /// header line over `header_line` a 431, and anything within both parses.
    #[test]
    fn head_limits_are_exact(head in head(), line in 16usize..200, header_line in 4usize..120) {
        let bytes = serialise(&head, b"");
        let limits = Limits { line, header_line, head: 32 * 1024 };
        let request_line = head.method.len() + head.target.len() + 12;
        let longest_field = head
            .headers
            .iter()
            .map(|h| h.name.len() + 1 + h.value.len() + 2)
            .max()
            .unwrap_or(0)
            .max(2);
        match parse_head(&bytes, limits) {
            Err(ProxyError::RequestLineTooLong) => prop_assert!(request_line > line),
            Err(ProxyError::HeadTooLarge) => {
                prop_assert!(request_line <= line && longest_field > header_line)
            }
            Ok(parsed) => {
                prop_assert!(request_line <= line && longest_field <= header_line);
                prop_assert_eq!(parsed, head);
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// Bare CR or LF anywhere in an otherwise valid head is refused (request smuggling).
    #[test]
    fn head_bare_cr_or_lf_is_refused(head in head(), at in any::<Index>(), cr in any::<bool>()) {
        let mut bytes = serialise(&head, b" ");
        // Every CR of a valid head is followed by LF and every LF follows a CR, so one more
        // of either, anywhere, leaves one of them bare.
        bytes.insert(at.index(bytes.len() + 1), if cr { b'\r' } else { b'\n' });
        prop_assert!(
            parse_head(&bytes, Limits::default()).is_err(),
            "{:?} was accepted",
            String::from_utf8_lossy(&bytes)
        );
    }
}

// ───────────────────────────── CONNECT authority ─────────────────────────────

fn label() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9_-]{1,63}").unwrap()
}

fn host_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 1..6)
        .prop_map(|labels| labels.join("."))
        .prop_filter("a name is at most 253 bytes", |name| name.len() <= 253)
        // A name that reads as an IPv4 address is an address, not a name.
        .prop_filter("not an IPv4 literal", |name| {
            name.parse::<std::net::Ipv4Addr>().is_err()
        })
}

/// (text as written, the host expected).
fn host() -> impl Strategy<Value = (String, Host)> {
    prop_oneof![
        (host_name(), any::<bool>()).prop_map(|(name, dot)| {
            let written = if dot { format!("{name}.") } else { name };
            let expected = Host::Name(written.to_ascii_lowercase());
            (written, expected)
        }),
        any::<std::net::Ipv4Addr>().prop_map(|ip| (ip.to_string(), Host::Ip(ip.into()))),
        any::<std::net::Ipv6Addr>().prop_map(|ip| (format!("[{ip}]"), Host::Ip(ip.into()))),
    ]
}

fn check_authority(text: &str) {
    match Target::parse_authority(text) {
        Ok(target) => {
            assert_ne!(target.port, 0, "{text:?}");
            let again = Target::parse_authority(&target.to_string())
                .unwrap_or_else(|e| panic!("{text:?} parsed, {target} not: {e}"));
            assert_eq!(target, again);
        }
        Err(ProxyError::BadRequest(why)) => assert!(why.contains("invalid CONNECT target")),
        Err(other) => panic!("{text:?}: unexpected error kind {other:?}"),
    }
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Any string: a target or a 400 saying why; an accepted target prints and re-parses to
    /// itself.
    #[test]
    fn authority_any_text_is_a_target_or_a_400(text in "\\PC{0,80}") {
        check_authority(&text);
    }

    /// Authority-shaped text from a small alphabet, to reach the deeper branches.
    #[test]
    fn authority_shaped_text_is_a_target_or_a_400(
        text in "[a-zA-Z0-9.:\\[\\]_@/%-]{0,40}",
    ) {
        check_authority(&text);
    }

    /// Every valid `host:port` parses to its host (names lower-cased) and port.
    #[test]
    fn authority_valid_parses_exactly((written, expected) in host(), port in 1u16..=65535) {
        let text = format!("{written}:{port}");
        let target = Target::parse_authority(&text).unwrap();
        prop_assert_eq!(&target.host, &expected);
        prop_assert_eq!(target.port, port);
        prop_assert_eq!(Target::parse_authority(&target.to_string()).unwrap(), target);
    }

    /// A valid host with a port that is not 1–65535, or with anything URL-like, is a 400.
    #[test]
    fn authority_bad_port_or_url_is_refused(
        (written, _) in host(),
        port in prop_oneof![
            Just(String::new()),
            Just("0".to_string()),
            (65536u64..100_000_000).prop_map(|p| p.to_string()),
            "[+ a-z]{1,3}[0-9]{0,3}",
        ],
        suffix in select(vec!["", "/", "/path", "?q", "#f"]),
    ) {
        let text = format!("{written}:{port}{suffix}");
        prop_assert!(Target::parse_authority(&text).is_err(), "{} accepted", text);
        let text = format!("{written}{suffix}");
        prop_assert!(Target::parse_authority(&text).is_err(), "{} accepted (no port)", text);
    }
}

// ───────────────────────────── absolute URI ─────────────────────────────

fn check_uri(text: &str) {
    match AbsoluteUri::parse(text) {
        Ok(uri) => {
            assert!(uri.path_and_query.starts_with('/'), "{text:?} → {uri:?}");
            assert!(!uri.authority.contains(['/', '?', '#', '@']));
            let rebuilt = format!("http://{}{}", uri.authority, uri.path_and_query);
            let again = AbsoluteUri::parse(&rebuilt)
                .unwrap_or_else(|e| panic!("{text:?} parsed, {rebuilt:?} not: {e}"));
            assert_eq!(uri, again);
        }
        Err(ProxyError::BadRequest(_)) => {}
        Err(other) => panic!("{text:?}: unexpected error kind {other:?}"),
    }
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Any string: a URI or a 400; an accepted one rebuilt from its parts parses the same.
    #[test]
    fn uri_any_text_is_a_uri_or_a_400(text in "\\PC{0,80}") {
        check_uri(&text);
        check_uri(&format!("http://{text}"));
    }

    /// Every `http://host[:port][/path][?query]` parses into exactly its parts.
    #[test]
    fn uri_valid_parses_exactly(
        scheme in select(vec!["http", "HTTP", "Http"]),
        (written, expected) in host(),
        port in proptest::option::of(1u16..=65535),
        path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}){0,4}",
        query in proptest::option::of("[a-zA-Z0-9._~%!$&'()*+,;=:@/?-]{0,20}"),
    ) {
        let authority = match port {
            Some(port) => format!("{written}:{port}"),
            None => written.clone(),
        };
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let text = format!("{scheme}://{authority}{path}{query}");
        let uri = AbsoluteUri::parse(&text).unwrap();
        prop_assert_eq!(&uri.target.host, &expected);
        prop_assert_eq!(uri.target.port, port.unwrap_or(80));
        prop_assert_eq!(&uri.authority, &authority);
        let expected_path = if path.is_empty() { format!("/{query}") } else { format!("{path}{query}") };
        prop_assert_eq!(&uri.path_and_query, &expected_path);
        check_uri(&text);
    }

    /// Other schemes, fragments and user information are refused; https says to use CONNECT.
    #[test]
    fn uri_other_forms_are_refused(
        (written, _) in host(),
        form in 0..4,
        scheme in "[a-z][a-z0-9+.-]{0,8}",
    ) {
        let text = match form {
            0 => format!("https://{written}/"),
            1 => format!("http://{written}/#frag"),
            2 => format!("http://user@{written}/"),
            _ => format!("{scheme}://{written}/"),
        };
        let result = AbsoluteUri::parse(&text);
        if form == 3 && scheme == "http" {
            prop_assert!(result.is_ok());
        } else {
            let error = result.expect_err(&text).to_string();
            if form == 0 || (form == 3 && scheme == "https") {
                prop_assert!(error.contains("CONNECT"), "{}", error);
            }
        }
    }
}

// ───────────────────────────── chunked decoder ─────────────────────────────

/// Decodes `input` as it arrives in reads of the sizes in `reads` (cycled): the body and the
/// bytes it used, or the error. Checks on the way that every step makes progress within
/// what is buffered.
fn decode(input: &[u8], reads: &[usize]) -> Result<(Vec<u8>, usize), ChunkError> {
    let mut decoder = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut reads = reads.iter().cycle();
    let mut next_read = || *reads.next().unwrap();
    let (mut pos, mut available) = (0, next_read().min(input.len()));
    for _ in 0..=2 * input.len() + 2 {
        match decoder.next(&input[pos..available])? {
            Chunk::Data(n) => {
                assert!(
                    n > 0 && pos + n <= available,
                    "Data({n}) at {pos}/{available}"
                );
                body.extend_from_slice(&input[pos..pos + n]);
                pos += n;
            }
            Chunk::Framing(n) => {
                assert!(
                    n > 0 && pos + n <= available,
                    "Framing({n}) at {pos}/{available}"
                );
                pos += n;
            }
            Chunk::NeedMore if available == input.len() => return Err(ChunkError("truncated")),
            Chunk::NeedMore => available = (available + next_read()).min(input.len()),
            Chunk::Done(n) => {
                assert!(pos + n <= available);
                assert!(decoder.is_done());
                assert_eq!(decoder.next(&input[pos + n..available]), Ok(Chunk::Done(0)));
                return Ok((body, pos + n));
            }
        }
    }
    panic!("the decoder stopped making progress");
}

/// How one chunk is framed.
#[derive(Debug, Clone)]
struct ChunkStyle {
    size: usize,
    upper: bool,
    zeros: usize,
    extension: &'static str,
}

fn chunk_style() -> impl Strategy<Value = ChunkStyle> {
    (
        1usize..700,
        any::<bool>(),
        0usize..4,
        select(vec![
            "",
            ";a",
            ";a=b",
            " ;name=\"quoted value\"",
            "\t;x=1;y",
            "; spaced = 1",
        ]),
    )
        .prop_map(|(size, upper, zeros, extension)| ChunkStyle {
            size,
            upper,
            zeros,
            extension,
        })
}

/// A chunked encoding of `body`, and the offsets of its framing CR and LF bytes and of the
/// first digit of each size line.
struct Encoded {
    bytes: Vec<u8>,
    crlf: Vec<usize>,
    size_starts: Vec<usize>,
}

fn encode(body: &[u8], styles: &[ChunkStyle], trailers: &[(String, String)]) -> Encoded {
    let mut out = Encoded {
        bytes: Vec::new(),
        crlf: Vec::new(),
        size_starts: Vec::new(),
    };
    fn crlf(out: &mut Encoded) {
        out.crlf.push(out.bytes.len());
        out.crlf.push(out.bytes.len() + 1);
        out.bytes.extend_from_slice(b"\r\n");
    }
    let mut rest = body;
    let mut styles = styles.iter().cycle();
    while !rest.is_empty() {
        let style = styles.next().unwrap();
        let (chunk, after) = rest.split_at(style.size.min(rest.len()));
        out.size_starts.push(out.bytes.len());
        let digits = if style.upper {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        let zeros = style.zeros.min(15 - digits.len());
        out.bytes.extend_from_slice("0".repeat(zeros).as_bytes());
        out.bytes.extend_from_slice(digits.as_bytes());
        out.bytes.extend_from_slice(style.extension.as_bytes());
        crlf(&mut out);
        out.bytes.extend_from_slice(chunk);
        crlf(&mut out);
        rest = after;
    }
    out.size_starts.push(out.bytes.len());
    out.bytes.extend_from_slice(b"0");
    crlf(&mut out);
    for (name, value) in trailers {
        out.bytes
            .extend_from_slice(format!("{name}: {value}").as_bytes());
        crlf(&mut out);
    }
    crlf(&mut out);
    out
}

fn trailers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((token(20), "[ -~]{0,30}"), 0..3)
}

fn reads() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..8, 1usize..2000], 1..20)
}

proptest! {
    #![proptest_config(cases(768))]

    /// A body chunked any way, with extensions and trailers, read in any split, decodes to
    /// the same bytes and stops exactly at the end of the body: what follows is untouched.
    #[test]
    fn chunked_any_split_decodes_to_the_body(
        body in proptest::collection::vec(any::<u8>(), 0..5000),
        styles in proptest::collection::vec(chunk_style(), 1..8),
        trailers in trailers(),
        reads in reads(),
        next in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let encoded = encode(&body, &styles, &trailers);
        let mut input = encoded.bytes.clone();
        input.extend_from_slice(&next);
        let (decoded, used) = decode(&input, &reads).unwrap();
        prop_assert_eq!(used, encoded.bytes.len());
        prop_assert!(decoded == body, "body changed");
    }

    /// Any bytes: the decoder answers the same whatever the split (body and end, or an error
    /// with the same reason), never panics, never stalls.
    #[test]
    fn chunked_any_bytes_same_answer_for_every_split(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(select(b"0123456789abcdefABCDEF;= \t\r\nxX:\"".to_vec()), 0..300),
        ],
        reads in reads(),
    ) {
        let whole = decode(&input, &[input.len().max(1)]);
        let split = decode(&input, &reads);
        prop_assert_eq!(whole, split);
    }

    /// A valid encoding cut short anywhere is never a complete body.
    #[test]
    fn chunked_truncated_is_an_error(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        styles in proptest::collection::vec(chunk_style(), 1..4),
        trailers in trailers(),
        cut in any::<Index>(),
        reads in reads(),
    ) {
        let encoded = encode(&body, &styles, &trailers).bytes;
        let cut = cut.index(encoded.len());
        prop_assert_eq!(decode(&encoded[..cut], &reads), Err(ChunkError("truncated")));
    }

    /// Corrupting the framing — any CR or LF of it replaced by another byte, or the first
    /// digit of a size replaced by a non-digit — is an error, never a body.
    #[test]
    fn chunked_corrupted_framing_is_an_error(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        styles in proptest::collection::vec(chunk_style(), 1..4),
        trailers in trailers(),
        which in any::<Index>(),
        size_line in any::<bool>(),
        byte in any::<u8>(),
        reads in reads(),
    ) {
        let encoded = encode(&body, &styles, &trailers);
        let mut input = encoded.bytes.clone();
        if size_line {
            let at = encoded.size_starts[which.index(encoded.size_starts.len())];
            let replacement = if byte.is_ascii_hexdigit() { b'g' } else { byte };
            input[at] = replacement;
        } else {
            let at = encoded.crlf[which.index(encoded.crlf.len())];
            let replacement = if byte == input[at] { byte ^ 0x40 } else { byte };
            input[at] = replacement;
        }
        let result = decode(&input, &reads);
        prop_assert!(result.is_err(), "corrupted framing decoded: {:?}", result);
    }
}

// ───────────────────────────── config ─────────────────────────────

const FILE: &str = "prop.conf";

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

/// [`check_config`] for hostile text: skipped (`None`) if it could make sluice resolve a name.
fn check_hostile_config(text: &[u8]) -> Option<Result<Config, String>> {
    listens_only_on_literals(text).then(|| check_config(text))
}

/// Any config text: a config, or an error naming `prop.conf:LINE` with LINE in the file.
fn check_config(text: &[u8]) -> Result<Config, String> {
    match Config::parse(text, FILE) {
        Ok(config) => {
            assert!(!config.servers.is_empty());
            Ok(config)
        }
        Err(error) => {
            let shown = error.to_string();
            if shown.starts_with("no \"server\" block in prop.conf: ") {
                return Err(shown);
            }
            let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
            let (_, line) = shown
                .rsplit_once(&format!(" in {FILE}:"))
                .unwrap_or_else(|| panic!("an error without file:line: {shown:?}"));
            let line: usize = line
                .parse()
                .unwrap_or_else(|_| panic!("not a line number: {shown:?}"));
            assert!(
                (1..=lines).contains(&line),
                "{shown:?} in a file of {lines} lines"
            );
            Err(shown)
        }
    }
}

/// Directives valid inside a `server` block, at most one of each name per block.
const SERVER_DIRECTIVES: &[&str] = &[
    "proxy_connect;",
    "proxy_connect_allow 443 563 8000-9000;",
    "proxy_connect_connect_timeout 10s;",
    "proxy_connect_data_timeout 5m;",
    "proxy_connect_address off;",
    "proxy_connect_bind off;",
    "resolver_timeout 30s;",
    "client_header_timeout 60s;",
    "keepalive_timeout 75s;",
    "client_body_timeout 60s;",
    "send_timeout 60s;",
    "large_client_header_buffers 4 8k;",
    "proxy_http_allow all;",
    "proxy_connect_timeout 60s;",
    "proxy_read_timeout 60s;",
    "proxy_send_timeout 60s;",
    "proxy_via on;",
    "allow 127.0.0.1;",
    "destination_allow *.partner.example 127.0.0.0/8;",
    "destination_deny 10.0.0.0/8 fc00::/7;",
    "max_connections_per_client 200;",
    "auth_basic off;",
    "server_name example.org;",
    "location / {\n proxy_pass http://$http_host$request_uri;\n}",
    "location = /exact {\n proxy_pass http://$http_host$request_uri;\n proxy_set_header X-F $proxy_add_x_forwarded_for;\n}",
];

/// Words and punctuation of the language, for token soup.
const VOCABULARY: &[&str] = &[
    "server",
    "http",
    "location",
    "listen",
    "proxy_connect",
    "proxy_connect_allow",
    "allow",
    "deny",
    "resolver",
    "proxy_pass",
    "proxy_set_header",
    "keepalive_timeout",
    "include",
    "events",
    "max_connections",
    "large_client_header_buffers",
    "destination_allow",
    "proxy_connect_response",
    "auth_basic",
    "127.0.0.1:0",
    "[::1]:0",
    "all",
    "off",
    "on",
    "443",
    "1-65535",
    "0",
    "99999999999",
    "10s",
    "1m",
    "8k",
    "1h30m",
    "127.0.0.0/8",
    "::1/129",
    "=",
    "^~",
    "/",
    "http://$http_host$request_uri",
    "${connect_host}",
    "$connect_port",
    "valid=0",
    "backlog=-1",
    "reuseport",
    "{",
    "}",
    ";",
    "\"",
    "'",
    "\\",
    "#",
    "\n",
    " ",
    "\t",
    "\r",
    "$",
    "${",
    "\u{fffd}",
    "\u{0}",
];

/// A valid config: some servers, each with a distinct loopback port and a random subset of
/// [`SERVER_DIRECTIVES`] in random order, with comments and blank lines between.
fn valid_config() -> impl Strategy<Value = Vec<String>> {
    let server = (
        proptest::sample::subsequence(SERVER_DIRECTIVES.to_vec(), 0..SERVER_DIRECTIVES.len()),
        proptest::collection::vec(any::<Index>(), SERVER_DIRECTIVES.len()),
        proptest::collection::vec(select(vec!["", "# a comment ; { }", "   ", "\t# x"]), 0..3),
    )
        .prop_map(|(mut directives, shuffle, noise)| {
            // A shuffle driven by the strategy, so failures shrink.
            let mut shuffled = Vec::new();
            for pick in shuffle.iter().take(directives.len()) {
                let i = pick.index(directives.len());
                shuffled.push(directives.remove(i));
            }
            shuffled.extend(noise);
            shuffled
        });
    proptest::collection::vec(server, 1..4).prop_map(|servers| {
        let mut lines = Vec::new();
        for (i, body) in servers.into_iter().enumerate() {
            lines.push("server {".to_string());
            lines.push(format!("    listen 127.0.0.1:{};", 20000 + i));
            for directive in body {
                lines.extend(directive.lines().map(|l| format!("    {l}")));
            }
            lines.push("}".to_string());
        }
        lines
    })
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Any bytes: a config or an error naming a line of the file.
    #[test]
    fn config_any_bytes_is_a_config_or_a_located_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = check_hostile_config(&bytes);
    }

    /// Token soup from the language's own words and punctuation.
    #[test]
    fn config_token_soup_is_a_config_or_a_located_error(
        words in proptest::collection::vec(select(VOCABULARY.to_vec()), 0..80),
        separators in proptest::collection::vec(select(vec![" ", "\n", "", "\t", "\r\n"]), 1..10),
    ) {
        let mut text = String::new();
        for (i, word) in words.iter().enumerate() {
            text.push_str(word);
            text.push_str(separators[i % separators.len()]);
        }
        let _ = check_hostile_config(text.as_bytes());
    }

    /// A valid config, mutated a little: still a config or a located error.
    #[test]
    fn config_mutated_is_a_config_or_a_located_error(
        lines in valid_config(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let mut bytes = lines.join("\n").into_bytes();
        mutate(&mut bytes, &mutations);
        let _ = check_hostile_config(&bytes);
    }

    /// Generated valid configs are accepted.
    #[test]
    fn config_valid_is_accepted(lines in valid_config()) {
        let text = lines.join("\n");
        let config = check_config(text.as_bytes());
        prop_assert!(config.is_ok(), "{}\n{}", config.unwrap_err(), text);
        prop_assert_eq!(config.unwrap().servers.len(), lines.iter().filter(|l| *l == "server {").count());
    }

    /// An unknown directive, or an unterminated quote, inserted at any line of a valid config is
    /// reported at exactly that line.
    #[test]
    fn config_error_names_the_line_it_is_on(
        lines in valid_config(),
        at in any::<Index>(),
        quote in any::<bool>(),
    ) {
        let mut lines = lines;
        let at = at.index(lines.len() + 1);
        let (inserted, expected) = if quote {
            ("proxy_connect_response \"unterminated;", "unexpected end of file, expecting terminating \"")
        } else {
            ("bogus_directive on;", "unknown directive \"bogus_directive\"")
        };
        lines.insert(at, inserted.to_string());
        let error = check_config(lines.join("\n").as_bytes()).unwrap_err();
        prop_assert_eq!(error, format!("{expected} in {FILE}:{}", at + 1));
    }
}

// ───────────────────────────── htpasswd ─────────────────────────────

/// Valid hashes of each supported format.
fn password_hash() -> impl Strategy<Value = String> {
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    prop_oneof![
        "[ -~]{0,20}".prop_map(|p| format!("{{PLAIN}}{p}")),
        proptest::collection::vec(any::<u8>(), 20).prop_map(move |d| format!("{{SHA}}{}", b64(d))),
        proptest::collection::vec(any::<u8>(), 21..40)
            .prop_map(move |d| format!("{{SSHA}}{}", b64(d))),
        "[./0-9A-Za-z]{1,8}".prop_map(|salt| format!("$apr1${salt}$6JwV36VuoPpYZGjFzjFSm1")),
        Just("$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK".to_string()),
        Just("$2b$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK".to_string()),
        "[./0-9A-Za-z]{1,8}".prop_map(|salt| format!("$1${salt}$9xy1btjgzLYfb7hivXtC//")),
        Just("$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA".to_string()),
        Just("$6$rounds=12000$x$w4oNv2MwswYOX/146kw00kwzC97j2dA6gfQJohoaFzJolbNzv9S9F6UgGSPYx2aBqFDWvLpzpYYq/8c8Sqq6w0".to_string()),
    ]
}

/// The number of users in `text` and its warnings, each checked to name a line of the file.
fn check_users(text: &str) -> (usize, Vec<String>) {
    let (users, warnings) = Users::parse(text, "users");
    for warning in &warnings {
        let (_, line) = warning
            .rsplit_once(" in users:")
            .unwrap_or_else(|| panic!("a warning without file:line: {warning:?}"));
        let line: usize = line.parse().unwrap();
        assert!(
            (1..=text.lines().count()).contains(&line),
            "{warning:?} for {text:?}"
        );
    }
    // Debug shows "Users(N entries)" and nothing secret.
    let shown = format!("{users:?}");
    let count = shown
        .trim_start_matches("Users(")
        .trim_end_matches(" entries)")
        .parse()
        .unwrap();
    (count, warnings)
}

/// A valid user file: (its lines, the number of users).
fn user_file() -> impl Strategy<Value = (Vec<String>, usize)> {
    let entry = prop_oneof![
        6 => ("[a-zA-Z0-9_.@-]{1,16}", password_hash())
            .prop_map(|(user, hash)| (Some(user.clone()), format!("{user}:{hash}"))),
        1 => select(vec!["", "# comment", "#bob:nothing", "   ", "\t"])
            .prop_map(|line| (None, line.to_string())),
    ];
    proptest::collection::vec(entry, 0..20).prop_map(|entries| {
        let mut seen = std::collections::HashSet::new();
        let lines: Vec<String> = entries
            .into_iter()
            .filter(|(user, _)| user.as_ref().is_none_or(|u| seen.insert(u.clone())))
            .map(|(_, line)| line)
            .collect();
        (lines, seen.len())
    })
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Any text: users, and warnings naming lines of the file.
    #[test]
    fn htpasswd_any_text_is_users_with_located_warnings(text in "\\PC{0,200}") {
        let _ = check_users(&text);
    }

    /// Text shaped like user files (colons, hash prefixes, newlines).
    #[test]
    fn htpasswd_shaped_text_is_users_with_located_warnings(
        parts in proptest::collection::vec(
            select(vec![
                "bob", ":", "\n", "\r\n", "#", "{SHA}", "{SSHA}", "{PLAIN}", "$apr1$", "$2y$",
                "$2y$05$", "$", "AAAA", "=", "x", " ", "5en6G6MezRroT3XKqkdPOmY/BfQ=",
            ]),
            0..40,
        ),
    ) {
        let _ = check_users(&parts.concat());
    }

    /// Valid files, with LF or CRLF line ends, give exactly their users.
    #[test]
    fn htpasswd_valid_file_gives_every_user((lines, users) in user_file(), crlf in any::<bool>()) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        prop_assert_eq!(check_users(&text), (users, Vec::new()), "{}", text);
    }

    /// A bad line anywhere in a valid file is a warning at its own line; the rest still loads.
    #[test]
    fn htpasswd_bad_line_is_reported_at_its_line(
        (lines, _) in user_file(),
        at in any::<Index>(),
        bad in select(vec![
            ("nocolon", "expected \"user:hash\""),
            (":{PLAIN}x", "empty user name"),
            ("u:$7$abc$def", "user \"u\" cannot log in: unknown password hash format"),
            ("u:abNANd1rDfiNc", "user \"u\" cannot log in: DES crypt(3)"),
            ("u:{SHA}short", "user \"u\" cannot log in: malformed {SHA} hash"),
            ("u:{SSHA}AAAA", "user \"u\" cannot log in: malformed {SSHA} hash"),
            ("u:$apr1$nodollar", "user \"u\" cannot log in: malformed MD5-crypt hash"),
            ("u:$6$nodollar", "user \"u\" cannot log in: malformed SHA-crypt"),
            ("u:$2y$05$short", "user \"u\" cannot log in: malformed bcrypt hash"),
        ]),
    ) {
        // A user named "u" is never generated twice with the bad one: rename it away.
        let mut lines: Vec<String> = lines.into_iter().filter(|l| !l.starts_with("u:")).collect();
        let at = at.index(lines.len() + 1);
        lines.insert(at, bad.0.to_string());
        let (_, warnings) = check_users(&lines.join("\n"));
        prop_assert_eq!(warnings.len(), 1, "{:?}", warnings);
        prop_assert!(warnings[0].starts_with(bad.1), "{}", warnings[0]);
        prop_assert!(warnings[0].ends_with(&format!(" in users:{}", at + 1)), "{}", warnings[0]);
    }
}

// ───────────────────────────── Proxy-Authorization ─────────────────────────────

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The client address the auth properties check from.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn basic(user: &str, password: &str) -> Vec<u8> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}").into_bytes()
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Credentials from a `{PLAIN}` or `{SHA}` user file, sent as `Basic base64(user:password)`
    /// (any scheme case, any spaces), prove exactly that user; any other password, none.
    /// Passwords may hold any printable Unicode, and colons where hashed: as in nginx, a colon
    /// after the hash starts a comment, so a `{PLAIN}` password ends at its first colon.
    #[test]
    fn auth_header_proves_exactly_its_user(
        user in "[a-zA-Z0-9_.@-]{1,16}",
        password in "\\PC{0,24}",
        other in "\\PC{0,24}",
        sha in any::<bool>(),
        comment in proptest::option::of("[ -~]{0,20}"),
        scheme in select(vec!["Basic", "basic", "BASIC"]),
        spaces in select(vec![" ", "   "]),
    ) {
        use base64::Engine;
        use sha1::{Digest, Sha1};
        let password = if sha { password } else { password.replace(':', "_") };
        let comment = comment.map(|c| format!(":{c}")).unwrap_or_default();
        let hash = if sha {
            let digest = Sha1::digest(password.as_bytes());
            format!("{{SHA}}{}", base64::engine::general_purpose::STANDARD.encode(digest))
        } else {
            format!("{{PLAIN}}{password}")
        };
        let (users, _) = Users::parse(&format!("{user}:{hash}{comment}\n"), "users");
        let auth = sluice::access::Auth::new("realm".into(), users);
        let header = String::from_utf8(basic(&user, &password))
            .unwrap()
            .replacen("Basic ", &format!("{scheme}{spaces}"), 1);
        let proved = runtime().block_on(auth.check(Some(header.as_bytes()), LOOPBACK));
        prop_assert_eq!(proved.as_deref(), Some(user.as_str()));
        let wrong = runtime().block_on(auth.check(Some(&basic(&user, &other)), LOOPBACK));
        prop_assert_eq!(wrong.is_some(), other == password);
        let nobody = runtime().block_on(auth.check(Some(&basic(&format!("{user}x"), &password)), LOOPBACK));
        prop_assert_eq!(nobody, None);
    }

    /// Any header value: no panic, and no user unless it really is the right credentials.
    #[test]
    fn auth_any_header_proves_nobody(
        header in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            "(Basic|basic|Bearer|) ?[A-Za-z0-9+/=:! ]{0,40}".prop_map(String::into_bytes),
        ],
    ) {
        let (users, _) = Users::parse("bob:{PLAIN}secret\n", "users");
        let auth = sluice::access::Auth::new("realm".into(), users);
        let proved = runtime().block_on(auth.check(Some(&header), LOOPBACK));
        prop_assert!(proved.is_none() || header == basic("bob", "secret"), "{:?}", header);
    }
}
