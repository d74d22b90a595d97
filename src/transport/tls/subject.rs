//! A certificate's subject as text (`$ssl_client_s_dn`): the distinguished name written as
//! RFC 4514 says (`CN=alice,O=Example`, the last element first), and its common name.
//!
//! Only the DER structure is walked, down to the subject: the certificate was verified by
//! rustls before this reads it, and nothing here judges it.

use std::fmt::Write as _;

/// DER tags met on the way to the subject.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The subject of a DER certificate as RFC 4514 text, and its (last) common name. `None`
/// when the certificate is not the DER structure expected.
pub fn of(certificate: &[u8]) -> Option<(String, Option<String>)> {
    let (SEQUENCE, certificate, _) = element(certificate)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = element(tbs)?;
    if tag == EXPLICIT_VERSION {
        rest = element(rest)?.2; // the serial number
    }
    for _skipped in ["signature", "issuer", "validity"] {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = element(rest)? else {
        return None;
    };
    let mut rdns = Vec::new();
    let mut common_name = None;
    while !name.is_empty() {
        let (SET, mut set, next) = element(name)? else {
            return None;
        };
        name = next;
        let mut parts = Vec::new();
        while !set.is_empty() {
            let (SEQUENCE, pair, next) = element(set)? else {
                return None;
            };
            set = next;
            let (OID, oid, value) = element(pair)? else {
                return None;
            };
            let label = label(oid);
            let text = value_text(value)?;
            if label == "CN" {
                common_name = text.clone();
            }
            let shown = match text {
                Some(text) => escape(&text),
                None => hex(value),
            };
            parts.push(format!("{label}={shown}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some((rdns.join(","), common_name))
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An attribute type's RFC 4514 name, or its dotted OID.
fn label(oid: &[u8]) -> String {
    let name = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return dotted(oid),
    };
    name.to_string()
}

/// An OID in dotted form (`1.2.840.113549`).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut arc = 0u64;
    for &byte in oid {
        arc = arc.saturating_mul(128) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let mut text = String::new();
    if let Some(&first) = arcs.first() {
        let top = (first / 40).min(2);
        let _ = write!(text, "{top}.{}", first - top * 40);
    }
    for arc in arcs.iter().skip(1) {
        let _ = write!(text, ".{arc}");
    }
    text
}

/// A string value's text: `Some(None)` for a value that is not a string (shown in hex).
fn value_text(value: &[u8]) -> Option<Option<String>> {
    let (tag, contents, _) = element(value)?;
    Some(match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => Some(String::from_utf8_lossy(contents).into_owned()),
        // TeletexString, read as Latin-1 as most software does
        0x14 => Some(contents.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2
        0x1e => {
            let units = contents
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            Some(
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or('\u{fffd}'))
                    .collect(),
            )
        }
        _ => None,
    })
}

/// RFC 4514 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && matches!(c, '#' | ' '))
            || (index == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            for byte in c.to_string().bytes() {
                let _ = write!(out, "\\{byte:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A value that is not a string: `#` and its DER encoding in hex.
fn hex(value: &[u8]) -> String {
    let mut out = String::from("#");
    for byte in value {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_rfc_4514_says() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("#x"), "\\#x");
        assert_eq!(escape("trail "), "trail\\ ");
        assert_eq!(escape("Ünïcode"), "Ünïcode");
    }

    #[test]
    fn names_known_oids_and_dots_the_others() {
        assert_eq!(label(&[0x55, 0x04, 0x03]), "CN");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(label(&[0x55, 0x04, 0x2a]), "2.5.4.42");
    }

    #[test]
    fn refuses_truncated_der() {
        assert_eq!(element(&[0x30, 0x05, 0x01]), None);
        assert_eq!(of(&[0x30, 0x82, 0xff]), None);
        assert_eq!(of(&[]), None);
    }
}
