//! The TLS directives of a server (nginx's names): `ssl_certificate`, `ssl_certificate_key`,
//! `ssl_protocols`, `ssl_client_certificate`, `ssl_verify_client`, `ssl_handshake_timeout`.
//! `listen ... ssl` itself is a `listen` parameter; a server with such a listener gets its
//! [`Acceptor`] built by [`TlsSettings::build`] once the block is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::{RootCertStore, SupportedProtocolVersion};

use super::{Acceptor, read_certificates, read_key, server_config};
use crate::config::directive::{HTTP_SERVER, MANY, Spec};
use crate::config::{ConfigError, Cx, Directive, Origin};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("ssl_certificate", HTTP_SERVER, (1, 1), true),
    Spec::used("ssl_certificate_key", HTTP_SERVER, (1, 1), true),
    Spec::used("ssl_protocols", HTTP_SERVER, (1, MANY), true),
    Spec::used("ssl_client_certificate", HTTP_SERVER, (1, 1), true),
    Spec::used("ssl_verify_client", HTTP_SERVER, (1, 1), true),
    Spec::used("ssl_handshake_timeout", HTTP_SERVER, (1, 1), true),
];

/// `ssl_verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyClient {
    /// No certificate is asked for.
    #[default]
    Off,
    /// A client without a valid certificate is refused in the handshake.
    On,
    /// A certificate is asked for; a client may send none (a sent one must be valid).
    Optional,
}

/// A path and the directive that named it.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    origin: Origin,
}

/// A server's TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    certificate: Option<File>,
    key: Option<File>,
    protocols: Vec<&'static SupportedProtocolVersion>,
    client_certificate: Option<File>,
    verify_client: VerifyClient,
    verify_origin: Option<Origin>,
    /// `ssl_handshake_timeout`: how long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Built by [`TlsSettings::build`] when a listener of the server is `ssl`.
    pub acceptor: Option<Acceptor>,
}

impl TlsSettings {
    /// Only clients with a valid certificate get past the handshake.
    pub fn requires_client_certificate(&self) -> bool {
        self.verify_client == VerifyClient::On
    }

    /// A client may name itself with a certificate (`ssl_verify_client on` or `optional`).
    pub fn asks_client_certificate(&self) -> bool {
        self.verify_client != VerifyClient::Off
    }
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            certificate: None,
            key: None,
            protocols: vec![&rustls::version::TLS12, &rustls::version::TLS13],
            client_certificate: None,
            verify_client: VerifyClient::Off,
            verify_origin: None,
            handshake_timeout: Duration::from_secs(10),
            acceptor: None,
        }
    }
}

impl TlsSettings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let file = |cx: &Cx| File {
            path: cx.relative_path(&directive.args[0]),
            origin: cx.origin(directive.line),
        };
        match directive.name.as_str() {
            "ssl_certificate" => self.certificate = Some(file(cx)),
            "ssl_certificate_key" => self.key = Some(file(cx)),
            "ssl_client_certificate" => self.client_certificate = Some(file(cx)),
            "ssl_protocols" => {
                let mut protocols = Vec::new();
                for arg in &directive.args {
                    match arg.as_str() {
                        "TLSv1.2" => protocols.push(&rustls::version::TLS12),
                        "TLSv1.3" => protocols.push(&rustls::version::TLS13),
                        "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {
                            return Err(cx.error(
                                directive,
                                format!(
                                    "\"{arg}\" is not supported: it is broken; sluice speaks \
                                     TLSv1.2 and TLSv1.3"
                                ),
                            ));
                        }
                        _ => {
                            return Err(cx.error(directive, format!("invalid value \"{arg}\"")));
                        }
                    }
                }
                self.protocols = protocols;
            }
            "ssl_verify_client" => {
                self.verify_client = match directive.args[0].as_str() {
                    "on" => VerifyClient::On,
                    "optional" => VerifyClient::Optional,
                    "off" => VerifyClient::Off,
                    other => {
                        return Err(cx.error(
                            directive,
                            format!(
                                "invalid value \"{other}\" in \"ssl_verify_client\" (on, optional or off)"
                            ),
                        ));
                    }
                };
                self.verify_origin = Some(cx.origin(directive.line));
            }
            "ssl_handshake_timeout" => self.handshake_timeout = cx.time(directive)?,
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }

    /// Reads the certificate, its key and the client CAs, and builds the acceptor of the
    /// server's `ssl` listeners; `listen` names the first of them. Every failure names the
    /// directive whose file is at fault.
    pub fn build(&mut self, listen: &Origin, http2: bool) -> Result<(), ConfigError> {
        let at = |origin: &Origin, why: String| ConfigError::at(&origin.file, origin.line, why);
        let Some(certificate) = &self.certificate else {
            return Err(at(
                listen,
                "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive".into(),
            ));
        };
        let Some(key) = &self.key else {
            return Err(at(
                listen,
                "no \"ssl_certificate_key\" is defined for the \"listen ... ssl\" directive".into(),
            ));
        };
        let chain = read_certificates(&certificate.path).map_err(|why| {
            let shown = certificate.path.display();
            at(
                &certificate.origin,
                format!("cannot load certificate \"{shown}\": {why}"),
            )
        })?;
        let private = read_key(&key.path).map_err(|why| {
            let shown = key.path.display();
            at(
                &key.origin,
                format!("cannot load certificate key \"{shown}\": {why}"),
            )
        })?;
        let client_roots = match (&self.client_certificate, self.verify_client) {
            (_, VerifyClient::Off) => None,
            (None, _) => {
                let origin = self.verify_origin.as_ref().unwrap_or(listen);
                return Err(at(
                    origin,
                    "no \"ssl_client_certificate\" for \"ssl_verify_client\"".into(),
                ));
            }
            (Some(file), verify) => Some((client_roots(file)?, verify)),
        };
        let config =
            server_config(&self.protocols, chain, private, client_roots, http2).map_err(|why| {
                let shown = (certificate.path.display(), key.path.display());
                at(
                    &key.origin,
                    format!(
                        "cannot use certificate \"{}\" with key \"{}\": {why}",
                        shown.0, shown.1
                    ),
                )
            })?;
        self.acceptor = Some(Acceptor(Arc::new(config).into()));
        Ok(())
    }
}

/// The CAs of `ssl_client_certificate`, which client certificates must chain to.
fn client_roots(file: &File) -> Result<Arc<RootCertStore>, ConfigError> {
    let fail = |why: String| {
        ConfigError::at(
            &file.origin.file,
            file.origin.line,
            format!(
                "cannot load client certificate \"{}\": {why}",
                file.path.display()
            ),
        )
    };
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(&file.path).map_err(fail)? {
        roots
            .add(certificate)
            .map_err(|e| fail(format!("not a CA certificate ({e})")))?;
    }
    Ok(Arc::new(roots))
}
