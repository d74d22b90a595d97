//! Host names to addresses, through hickory-resolver.
//!
//! One [`Resolver`] per `server` block: with a `resolver` directive it asks exactly those name
//! servers, in order, and ignores `/etc/hosts` (as nginx does); without one it follows the
//! system configuration (`/etc/resolv.conf`, `/etc/hosts`). The whole lookup is bounded by
//! `resolver_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::ResolverSettings;
use crate::error::ProxyError;
use crate::target::{Host, Target};

/// Cached answers kept per resolver.
const CACHE_ENTRIES: u64 = 4096;

/// Resolves CONNECT targets for one server block.
pub struct Resolver {
    dns: TokioResolver,
    timeout: Duration,
}

impl Resolver {
    /// Builds the resolver a server block asks for. Fails only if the system configuration is
    /// needed and cannot be read.
    pub fn new(settings: Option<&ResolverSettings>, timeout: Duration) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match settings {
            Some(settings) => {
                let servers = settings
                    .servers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?,
        };
        let options = builder.options_mut();
        options.cache_size = CACHE_ENTRIES;
        // Leave time within resolver_timeout to fail over to the next name server.
        options.timeout = (timeout / 3).max(Duration::from_millis(200));
        options.attempts = 2;
        match settings {
            Some(settings) => {
                options.use_hosts_file = ResolveHosts::Never;
                options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
                options.ip_strategy = match (settings.ipv4, settings.ipv6) {
                    (true, false) => LookupIpStrategy::Ipv4Only,
                    (false, true) => LookupIpStrategy::Ipv6Only,
                    _ => LookupIpStrategy::Ipv4AndIpv6,
                };
                if let Some(valid) = settings.valid {
                    options.positive_min_ttl = Some(valid);
                    options.positive_max_ttl = Some(valid);
                }
            }
            None => {
                options.use_hosts_file = ResolveHosts::Always;
                options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            }
        }
        let dns = builder
            .build()
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
        Ok(Resolver { dns, timeout })
    }

    /// The addresses to dial for `target`, in the order to try them.
    pub async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ProxyError> {
        let name = match &target.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, target.port)]),
            Host::Name(name) => name,
        };
        let lookup = tokio::time::timeout(self.timeout, self.dns.lookup_ip(name.as_str()))
            .await
            .map_err(|_| ProxyError::ResolveTimeout { host: name.clone() })?;
        let failed = |reason: String| ProxyError::ResolveFailed {
            host: name.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = lookup
            .map_err(|e| match e {
                // hickory's own per-server timers can expire before resolver_timeout does; a
                // name that did not resolve in time is a 504 whichever timer noticed.
                hickory_resolver::net::NetError::Timeout => {
                    ProxyError::ResolveTimeout { host: name.clone() }
                }
                e => failed(describe(&e)),
            })?
            .iter()
            .map(|ip| SocketAddr::new(ip, target.port))
            .collect();
        if addrs.is_empty() {
            return Err(failed("no address".into()));
        }
        Ok(addrs)
    }
}

/// A lookup failure in a few words: "no such host" rather than a dump of the DNS response.
fn describe(error: &hickory_resolver::net::NetError) -> String {
    if error.is_no_records_found() || error.is_nx_domain() {
        return "no such host".to_string();
    }
    error.to_string()
}
