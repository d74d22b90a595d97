//! Address ranges: `10.0.0.0/8`, `fe80::/10`, or one address.

use std::fmt;
use std::net::IpAddr;

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`. Host bits below the prefix must be zero, as nginx
    /// warns; sluice refuses, since `10.1.2.3/8` usually hides a typo.
    pub fn parse(text: &str) -> Result<Cidr, &'static str> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| "invalid address")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or("invalid prefix length")?,
            Some(_) => return Err("invalid prefix length"),
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err("low address bits of the mask are not zero");
        }
        Ok(cidr)
    }

    /// A range from literal parts; for the built-in rules.
    pub const fn new(addr: IpAddr, prefix: u8) -> Cidr {
        Cidr { addr, prefix }
    }

    fn network(&self) -> IpAddr {
        mask(self.addr, self.prefix)
    }

    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) count as
    /// the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether every address of this range is in `outer` (`127.0.0.1` and `127.0.0.0/8` are
    /// inside `127.0.0.0/8`; `0.0.0.0/0` is not).
    pub fn within(&self, outer: &Cidr) -> bool {
        self.addr.is_ipv4() == outer.addr.is_ipv4()
            && self.prefix >= outer.prefix
            && outer.contains(self.addr)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - prefix))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - prefix))
            };
            IpAddr::V6(kept.into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.1.1")),
            "mapped addresses match v4 rules"
        );
        assert!(!net.contains(ip("::1")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("fe80::/10").unwrap();
        assert!(
            v6.contains(ip("fe80::1")) && v6.contains(ip("febf::1")) && !v6.contains(ip("fec0::1"))
        );
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn a_range_within_another() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        for inside in ["127.0.0.0/8", "127.0.0.1", "127.1.0.0/16"] {
            assert!(Cidr::parse(inside).unwrap().within(&loopback), "{inside}");
        }
        for outside in ["0.0.0.0/0", "126.0.0.0/7", "10.0.0.0/8", "::/0", "::1"] {
            assert!(
                !Cidr::parse(outside).unwrap().within(&loopback),
                "{outside}"
            );
        }
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/x",
            "host",
            "::1/129",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
