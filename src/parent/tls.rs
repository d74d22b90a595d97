//! TLS to a parent proxy (`server HOST:PORT ssl;` in a `parent` block): the parent's
//! certificate is verified against `ssl_trusted_certificate`, or the system's roots when the
//! block names none, and must be valid for the name the `server` line gives.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::metrics::ParentFailure;
use crate::target::{Host, Target};
use crate::transport::tls::{provider, read_certificates};
use crate::upstream::UpstreamStream;

/// How a parent's TLS servers are reached.
#[derive(Clone)]
pub struct ParentTls(TlsConnector);

impl ParentTls {
    /// Trusts the CAs in `trusted`, or the system's roots without it.
    pub fn new(trusted: Option<&Path>) -> Result<ParentTls, String> {
        let mut roots = RootCertStore::empty();
        match trusted {
            Some(path) => {
                for certificate in read_certificates(path)? {
                    roots
                        .add(certificate)
                        .map_err(|e| format!("not a CA certificate ({e})"))?;
                }
            }
            None => {
                let system = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(system.certs);
                if added == 0 {
                    return Err(
                        "no system CA certificates found; name them with \"ssl_trusted_certificate\""
                            .to_string(),
                    );
                }
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ParentTls(TlsConnector::from(Arc::new(config))))
    }

    /// Sets up TLS on `socket` to the parent server `target`, within `timeout`; the reason
    /// when it fails (a certificate error names what is wrong with the certificate).
    pub async fn connect(
        &self,
        socket: TcpStream,
        target: &Target,
        timeout: Duration,
    ) -> Result<UpstreamStream, (String, ParentFailure)> {
        let name = match &target.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(name) => ServerName::try_from(name.to_string()).map_err(|_| {
                let why = format!("\"{name}\" is not a name a certificate can hold");
                (why, ParentFailure::Error)
            })?,
        };
        match tokio::time::timeout(timeout, self.0.connect(name, socket)).await {
            Ok(Ok(tls)) => Ok(UpstreamStream::Tls(Box::new(tls))),
            Ok(Err(error)) => Err((
                format!("TLS handshake failed: {error}"),
                ParentFailure::Error,
            )),
            Err(_) => Err((
                "TLS handshake timed out".to_string(),
                ParentFailure::Timeout,
            )),
        }
    }
}

impl std::fmt::Debug for ParentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParentTls")
    }
}
