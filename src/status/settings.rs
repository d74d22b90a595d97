//! `status_listen`: where the status listener serves, process-wide; off by default.
//! `status_allow` / `status_deny`: who may see the live connection pages on it.

use std::net::{IpAddr, SocketAddr};

use crate::access::Cidr;
use crate::config::directive::{MAIN_HTTP, Spec};
use crate::config::{ConfigError, Cx, Directive, Origin};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("status_listen", MAIN_HTTP, (1, 1), true),
    Spec::used("status_allow", MAIN_HTTP, (1, 1), false),
    Spec::used("status_deny", MAIN_HTTP, (1, 1), false),
];

/// `status_listen ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListen {
    pub addr: SocketAddr,
    pub origin: Origin,
}

/// `status_allow` / `status_deny`: who may load `/status` and `/status.json`, which name
/// clients and where they go. First match wins; an address no rule matches is refused; with
/// no rule at all only loopback addresses may look.
#[derive(Debug, Clone, Default)]
pub struct Viewers {
    /// `(allow, range)`; a `None` range is `all`.
    rules: Vec<(bool, Option<Cidr>)>,
}

impl Viewers {
    pub fn allows(&self, viewer: IpAddr) -> bool {
        if self.rules.is_empty() {
            return viewer.to_canonical().is_loopback();
        }
        self.rules
            .iter()
            .find(|(_, range)| range.is_none_or(|range| range.contains(viewer)))
            .is_some_and(|&(allow, _)| allow)
    }
}

/// Applies one of [`DIRECTIVES`].
pub fn set(
    cx: &mut Cx,
    directive: &Directive,
    listen: &mut Option<StatusListen>,
    viewers: &mut Viewers,
) -> Result<(), ConfigError> {
    let text = &directive.args[0];
    if directive.name != "status_listen" {
        let range = match text.as_str() {
            "all" => None,
            _ => Some(Cidr::parse(text).map_err(|why| {
                cx.error(
                    directive,
                    format!(
                        "invalid address \"{text}\" in \"{}\" directive ({why}; an address, \
                         a CIDR range or \"all\" is needed)",
                        directive.name
                    ),
                )
            })?),
        };
        let allow = directive.name == "status_allow";
        viewers.rules.push((allow, range));
        return Ok(());
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        cx.error(
            directive,
            format!(
                "invalid address \"{text}\" in \"status_listen\" directive \
                 (an IP address and a port, such as 127.0.0.1:9145 or [::1]:9145, is needed)"
            ),
        )
    })?;
    if listen.is_some() {
        return Err(cx.error(directive, "\"status_listen\" directive is duplicate"));
    }
    *listen = Some(StatusListen {
        addr,
        origin: cx.origin(directive.line),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewers(rules: &[(bool, Option<&str>)]) -> Viewers {
        Viewers {
            rules: rules
                .iter()
                .map(|&(allow, range)| (allow, range.map(|r| Cidr::parse(r).unwrap())))
                .collect(),
        }
    }

    #[test]
    fn loopback_only_by_default_then_first_match_and_closed() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let default = Viewers::default();
        assert!(default.allows(ip("127.0.0.1")));
        assert!(default.allows(ip("::1")));
        assert!(default.allows(ip("::ffff:127.0.0.2")));
        assert!(!default.allows(ip("10.0.0.1")));
        let listed = viewers(&[(false, Some("10.0.0.7")), (true, Some("10.0.0.0/8"))]);
        assert!(!listed.allows(ip("10.0.0.7")));
        assert!(listed.allows(ip("10.1.2.3")));
        assert!(!listed.allows(ip("127.0.0.1")), "no match is a refusal");
        assert!(viewers(&[(true, None)]).allows(ip("192.0.2.1")));
    }
}
