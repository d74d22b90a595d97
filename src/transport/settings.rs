//! The PROXY-protocol directives: `set_real_ip_from`, `real_ip_header`,
//! `proxy_protocol_timeout` (nginx's names). `listen ... proxy_protocol` itself is a `listen`
//! parameter.

use std::net::IpAddr;
use std::time::Duration;

use crate::access::Cidr;
use crate::config::directive::{HTTP_SERVER, Spec};
use crate::config::{ConfigError, Cx, Directive};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("set_real_ip_from", HTTP_SERVER, (1, 1), false),
    Spec::used("real_ip_header", HTTP_SERVER, (1, 1), true),
    Spec::used("proxy_protocol_timeout", HTTP_SERVER, (1, 1), true),
];

/// Who may say, in a PROXY header, which client a connection is for.
#[derive(Debug, Clone)]
pub struct RealIp {
    /// `set_real_ip_from`: the balancers trusted to send the header. Empty trusts nobody.
    pub trusted: Vec<Cidr>,
    /// `proxy_protocol_timeout`: how long the whole header may take to arrive.
    pub timeout: Duration,
}

impl Default for RealIp {
    fn default() -> RealIp {
        RealIp {
            trusted: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RealIp {
    /// Whether the TCP peer `ip` may send a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|range| range.contains(ip))
    }

    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        match directive.name.as_str() {
            "set_real_ip_from" => {
                if arg.starts_with("unix:") {
                    return Err(cx.error(
                        directive,
                        "\"unix:\" in \"set_real_ip_from\" is not supported (sluice listens on TCP only)",
                    ));
                }
                if cx.first_in_level("set_real_ip_from") {
                    self.trusted.clear();
                }
                let range = Cidr::parse(arg).map_err(|why| {
                    cx.error(directive, format!("invalid parameter \"{arg}\" ({why})"))
                })?;
                self.trusted.push(range);
            }
            // Written in pasted nginx blocks; the PROXY header is the only source sluice reads.
            "real_ip_header" if arg == "proxy_protocol" => {}
            "real_ip_header" => {
                return Err(cx.error(
                    directive,
                    format!(
                        "\"real_ip_header {arg}\" is not supported: sluice takes the client's \
                         address only from a PROXY protocol header (\"real_ip_header proxy_protocol\")"
                    ),
                ));
            }
            "proxy_protocol_timeout" => self.timeout = cx.time(directive)?,
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}
