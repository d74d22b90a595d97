//! IPv6 addresses that carry an IPv4 address, judged by the IPv4 address inside.
//!
//! A client can name 127.0.0.1 as `[::ffff:127.0.0.1]`, `[64:ff9b::7f00:1]` (NAT64) or
//! `[2002:7f00:1::]` (6to4); a rule or a built-in refusal written for 127.0.0.0/8 must catch
//! every spelling, or it is a way around the rule.

use std::net::{IpAddr, Ipv4Addr};

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A plain address: nothing inside.
    None,
    /// Another spelling of one IPv4 address (`::ffff:a.b.c.d`, `::ffff:0:a.b.c.d`,
    /// `::a.b.c.d`): the IPv6 form means nothing of its own.
    Spelling(Ipv4Addr),
    /// An address a translator or tunnel turns into these IPv4 addresses (NAT64, 6to4,
    /// Teredo): the IPv6 form is a real address too, so both forms are judged.
    Translated(Ipv4Addr, Option<Ipv4Addr>),
}

/// Where the IPv4 address sits inside `ip`, if anywhere.
pub fn carried(ip: IpAddr) -> Carried {
    let IpAddr::V6(v6) = ip else {
        return Carried::None;
    };
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let top = |prefix: u32| bits >> (128 - prefix);
    if top(96) == 0xffff {
        // IPv4-mapped, RFC 4291 §2.5.5.2.
        Carried::Spelling(low32)
    } else if top(96) == 0xffff_0000 {
        // IPv4-translated, RFC 2765 (SIIT): `::ffff:0:a.b.c.d`.
        Carried::Spelling(low32)
    } else if top(96) == 0 && bits > 1 {
        // IPv4-compatible, RFC 4291 §2.5.5.1 (deprecated); `::` and `::1` are themselves.
        Carried::Spelling(low32)
    } else if top(96) == 0x0064_ff9b_0000_0000_0000_0000 || top(48) == 0x0064_ff9b_0001 {
        // NAT64 well-known prefix (RFC 6052) and the local-use prefix (RFC 8215), as /96.
        Carried::Translated(low32, None)
    } else if top(16) == 0x2002 {
        // 6to4, RFC 3056: the IPv4 address follows the 16-bit prefix.
        Carried::Translated(Ipv4Addr::from((bits >> 80) as u32), None)
    } else if top(32) == 0x2001_0000 {
        // Teredo, RFC 4380: the client's address in the last 32 bits, inverted; the Teredo
        // server's after the prefix.
        let client = Ipv4Addr::from(!(bits as u32));
        let server = Ipv4Addr::from((bits >> 64) as u32);
        Carried::Translated(client, Some(server))
    } else {
        Carried::None
    }
}

/// Every address `ip` stands for: the IPv4 address of a mere spelling, or the IPv6 address
/// and the IPv4 addresses a translator makes of it.
pub fn judged(ip: IpAddr) -> Vec<IpAddr> {
    match carried(ip) {
        Carried::None => vec![ip],
        Carried::Spelling(v4) => vec![IpAddr::V4(v4)],
        Carried::Translated(first, second) => std::iter::once(ip)
            .chain(std::iter::once(IpAddr::V4(first)))
            .chain(second.map(IpAddr::V4))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn spellings_of_one_ipv4_address() {
        for spelled in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:7f00:1",
            "::127.0.0.1",
        ] {
            assert_eq!(
                carried(ip(spelled)),
                Carried::Spelling(v4("127.0.0.1")),
                "{spelled}"
            );
            assert_eq!(judged(ip(spelled)), vec![ip("127.0.0.1")], "{spelled}");
        }
        assert_eq!(carried(ip("::1")), Carried::None, "loopback, not 0.0.0.1");
        assert_eq!(carried(ip("::")), Carried::None, "unspecified, not 0.0.0.0");
        assert_eq!(carried(ip("::2")), Carried::Spelling(v4("0.0.0.2")));
    }

    #[test]
    fn nat64_prefixes_carry_the_last_32_bits() {
        assert_eq!(
            carried(ip("64:ff9b::7f00:1")),
            Carried::Translated(v4("127.0.0.1"), None)
        );
        assert_eq!(
            carried(ip("64:ff9b::10.0.0.1")),
            Carried::Translated(v4("10.0.0.1"), None)
        );
        assert_eq!(
            carried(ip("64:ff9b:1::a9fe:a9fe")),
            Carried::Translated(v4("169.254.169.254"), None)
        );
        assert_eq!(
            carried(ip("64:ff9b:1:ffff::7f00:1")),
            Carried::Translated(v4("127.0.0.1"), None)
        );
        // Just outside both prefixes.
        assert_eq!(carried(ip("64:ff9b:0:0:1::7f00:1")), Carried::None);
        assert_eq!(carried(ip("64:ff9b:2::7f00:1")), Carried::None);
        assert_eq!(
            judged(ip("64:ff9b::a00:1")),
            vec![ip("64:ff9b::a00:1"), ip("10.0.0.1")]
        );
    }

    #[test]
    fn six_to_four_carries_bits_16_to_48() {
        assert_eq!(
            carried(ip("2002:7f00:1::")),
            Carried::Translated(v4("127.0.0.1"), None)
        );
        assert_eq!(
            carried(ip("2002:a9fe:a9fe:1234::1")),
            Carried::Translated(v4("169.254.169.254"), None)
        );
    }

    #[test]
    fn teredo_carries_the_inverted_client_and_the_server() {
        // RFC 4380 §4's example: server 65.54.227.120, client 192.0.2.45 behind a cone NAT.
        assert_eq!(
            carried(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            Carried::Translated(v4("192.0.2.45"), Some(v4("65.54.227.120")))
        );
        // Client 127.0.0.1 (inverted: 80ff:fffe).
        assert_eq!(
            judged(ip("2001:0:a00:1::80ff:fffe")),
            vec![
                ip("2001:0:a00:1::80ff:fffe"),
                ip("127.0.0.1"),
                ip("10.0.0.1")
            ]
        );
        assert_eq!(carried(ip("2001:1::1")), Carried::None, "not Teredo");
    }

    #[test]
    fn plain_addresses_carry_nothing() {
        for plain in ["2001:db8::1", "fe80::1", "fd00:ec2::254", "::1", "10.0.0.1"] {
            assert_eq!(carried(ip(plain)), Carried::None, "{plain}");
            assert_eq!(judged(ip(plain)), vec![ip(plain)]);
        }
    }
}
