//! The proxy's own listeners, which are never a destination: a request to itself would loop,
//! each turn holding a connection and a file descriptor until none are left.
//!
//! A listener on a wildcard address (`0.0.0.0`, `[::]`) is reachable at every address of the
//! host, so for one of those the guard asks the kernel for the host's interface addresses. It
//! asks at the moment a destination has the listener's port, so an address added after start
//! (DHCP, a new interface) is known too, and other destinations cost nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::embedded;

/// Every address this process listens on, with the one test of whether a destination is one
/// of them.
#[derive(Debug, Clone, Default)]
pub struct OwnListeners {
    listeners: Vec<SocketAddr>,
}

impl OwnListeners {
    pub fn new(listeners: impl IntoIterator<Item = SocketAddr>) -> OwnListeners {
        OwnListeners {
            listeners: listeners.into_iter().collect(),
        }
    }

    /// Whether dialling `addr` would reach one of the listeners. An address that carries an
    /// IPv4 address (`::ffff:127.0.0.1`) counts as that address.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let at_port: Vec<IpAddr> = self
            .listeners
            .iter()
            .filter(|listener| listener.port() == addr.port())
            .map(SocketAddr::ip)
            .collect();
        if at_port.is_empty() {
            return false;
        }
        let mut host = None;
        embedded::judged(addr.ip()).into_iter().any(|ip| {
            at_port.iter().any(|&listener| {
                listener == ip
                    || (listener.is_unspecified()
                        && listener.is_ipv4() == ip.is_ipv4()
                        && (ip.is_loopback()
                            || ip.is_unspecified()
                            || host.get_or_insert_with(host_addresses).contains(&ip)))
            })
        })
    }
}

/// The addresses of every interface of this host. Empty if the kernel will not say, which
/// leaves loopback and the unspecified address guarded all the same.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `first` with a list it allocates, freed below.
    if unsafe { libc::getifaddrs(&mut first) } != 0 {
        log::warn!(
            "getifaddrs() failed ({}): the host's own addresses are not known",
            std::io::Error::last_os_error()
        );
        return Vec::new();
    }
    let mut addrs = Vec::new();
    let mut entry = first;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*entry };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points at a socket address whose family field says which
            // struct it is; only the two families read here are cast.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                addrs.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `first` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(first) };
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_listener_on_one_address_is_that_address_and_port() {
        let own = OwnListeners::new([addr("127.0.0.1:3128"), addr("[::1]:3128")]);
        assert!(own.contains(addr("127.0.0.1:3128")));
        assert!(own.contains(addr("[::ffff:127.0.0.1]:3128")));
        assert!(own.contains(addr("[::1]:3128")));
        assert!(!own.contains(addr("127.0.0.2:3128")));
        assert!(!own.contains(addr("127.0.0.1:3129")));
    }

    #[test]
    fn a_wildcard_listener_is_every_address_of_its_family_on_this_host() {
        let own = OwnListeners::new([addr("0.0.0.0:8080"), addr("[::]:8081")]);
        assert!(own.contains(addr("127.0.0.1:8080")));
        assert!(own.contains(addr("127.9.9.9:8080")));
        assert!(own.contains(addr("0.0.0.0:8080")));
        assert!(own.contains(addr("[::1]:8081")));
        assert!(own.contains(addr("[::]:8081")));
        // IPV6_V6ONLY is set on [::] listeners: they do not take IPv4 connections.
        assert!(!own.contains(addr("[::1]:8080")));
        assert!(!own.contains(addr("127.0.0.1:8081")));
        // An address that is not this host's.
        assert!(!own.contains(addr("203.0.113.77:8080")));
        for ip in host_addresses() {
            let port = if ip.is_ipv4() { 8080 } else { 8081 };
            assert!(own.contains(SocketAddr::new(ip, port)), "{ip}");
            assert!(!own.contains(SocketAddr::new(ip, 8082)), "{ip}");
        }
    }

    #[test]
    fn the_host_addresses_are_the_kernels() {
        let found = host_addresses();
        assert!(
            found.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{found:?}"
        );
        // Linux lists its IPv6 addresses in /proc as well: a second opinion on the byte order.
        let listed = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        for line in listed.lines() {
            let hex = line.split_whitespace().next().unwrap();
            let ip = IpAddr::V6(Ipv6Addr::from(u128::from_str_radix(hex, 16).unwrap()));
            assert!(found.contains(&ip), "{ip} not in {found:?}");
        }
    }
}
