//! TLS between the client and sluice (`listen ... ssl`): the server configuration the `ssl_*`
//! directives build, the handshake, and what it tells about the client ([`TlsFacts`]).
//!
//! The configuration is built when the file is read, so an unreadable file or a key that does
//! not match its certificate is a `file:line` error, and a reload that fails changes nothing.
//! Each [`crate::context::ServerContext`] carries the configuration of its reading: new
//! handshakes use the latest one, open connections keep the session they made. rustls with
//! the `ring` provider does the cryptography; nothing here is cryptographic.

pub mod settings;
mod subject;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{ClientInfo, ClientStream, Handshake, ReadSide, WriteSide};
use crate::metrics::{self, TlsFailure};

pub use settings::{TlsSettings, VerifyClient};

/// The crypto provider: `ring` builds with a C compiler alone (aws-lc-rs needs cmake too).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The one place a listener's rustls configuration is made: protocols, the certificate and
/// its key, the client-certificate verifier, and the ALPN protocols offered. The key must
/// match the certificate.
pub fn server_config(
    protocols: &[&'static SupportedProtocolVersion],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<(Arc<RootCertStore>, VerifyClient)>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(protocols)
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        Some((roots, verify)) if verify != VerifyClient::Off => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if verify == VerifyClient::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".to_string(),
        other => other.to_string(),
    })?;
    // HTTP/1.1 is what sluice speaks to its clients; a client that offers ALPN gets it named.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads the certificates of a PEM file, leaf first.
pub fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| crate::error::describe(&e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no PEM certificate in it".to_string());
    }
    Ok(chain)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| crate::error::describe(&e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it".to_string()
        }
        other => other.to_string(),
    })
}

/// A listener's acceptor, built from one reading of the configuration.
#[derive(Clone)]
pub struct Acceptor(pub TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// What the TLS handshake told about the client: the `$ssl_*` variables and the identity a
/// client certificate gives.
#[derive(Debug, Default)]
pub struct TlsFacts {
    /// `$ssl_protocol`: `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// `$ssl_cipher`: the cipher suite's IANA name.
    pub cipher: &'static str,
    /// `$ssl_server_name`: the name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The ALPN protocol agreed on, if the client offered one.
    pub alpn: Option<Vec<u8>>,
    /// The verified client certificate's subject, if the client sent one.
    pub client: Option<ClientCertificate>,
}

/// A verified client certificate.
#[derive(Debug)]
pub struct ClientCertificate {
    /// `$ssl_client_s_dn`: the subject as RFC 4514 text (`CN=alice,O=Example`).
    pub subject: String,
    /// The subject's common name, if it has one: the client's user name.
    pub common_name: Option<String>,
}

impl TlsFacts {
    /// `$ssl_client_verify`: `SUCCESS` when a certificate was sent and verified, `NONE`
    /// otherwise (one that fails verification fails the handshake).
    pub fn client_verify(&self) -> &'static str {
        if self.client.is_some() {
            "SUCCESS"
        } else {
            "NONE"
        }
    }

    /// The user a client certificate names (its subject's CN, else the whole subject): what
    /// `$remote_user` is when no Basic authentication is asked for.
    pub fn user_name(&self) -> Option<&str> {
        let client = self.client.as_ref()?;
        Some(client.common_name.as_deref().unwrap_or(&client.subject))
    }
}

/// A client's stream once TLS is set up.
pub struct TlsClient(tokio_rustls::server::TlsStream<Prefixed>);

/// The accepted socket under the TLS session. It reads ahead in large chunks: rustls asks
/// for a few KiB at a time, and a system call for each would cost more than the decryption.
/// The bytes a PROXY header's reading took past its end start it off: they are the start of
/// the TLS handshake. Its buffer is held only while bytes arrive.
pub struct Prefixed {
    /// `ahead[start..end]` was read from the socket and not yet given to rustls.
    ahead: Vec<u8>,
    start: usize,
    end: usize,
    socket: TcpStream,
}

/// How much [`Prefixed`] reads from the socket at once.
const READ_AHEAD: usize = 64 * 1024;

/// What a first byte tells about a connection to a TLS port.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The answer to a plain-HTTP request sent to a TLS port (nginx's wording).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 50\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to the HTTPS port\n";

/// Runs the TLS handshake on an accepted (and possibly PROXY-handshaken) socket within
/// `timeout`. A client that speaks plain HTTP gets a plain `400` and is closed; any failure
/// is counted by cause and logged at debug with its reason. `None` when it failed.
pub async fn accept(
    acceptor: &Acceptor,
    done: Handshake,
    timeout: Duration,
) -> Option<(TlsClient, ClientInfo)> {
    let peer = done.info.peer;
    let stream = Prefixed {
        start: 0,
        end: done.early.len(),
        ahead: done.early,
        socket: done.stream,
    };
    let result = tokio::time::timeout(timeout, handshake(acceptor, stream)).await;
    let failure = match result {
        Ok(Ok(stream)) => {
            metrics::get().tls_handshake(None);
            let facts = facts(stream.get_ref().1);
            let mut info = done.info;
            info.tls = Some(Arc::new(facts));
            return Some((TlsClient(stream), info));
        }
        Ok(Err((failure, why))) => {
            log::debug!("{peer}: TLS handshake failed: {why}");
            failure
        }
        Err(_) => {
            log::debug!("{peer}: TLS handshake failed: no handshake within {timeout:?}");
            TlsFailure::Timeout
        }
    };
    metrics::get().tls_handshake(Some(failure));
    None
}

/// The handshake proper: a plain-HTTP client is told so first.
async fn handshake(
    acceptor: &Acceptor,
    mut stream: Prefixed,
) -> Result<tokio_rustls::server::TlsStream<Prefixed>, (TlsFailure, String)> {
    let first = match stream.ahead[stream.start..stream.end].first() {
        Some(&byte) => byte,
        None => {
            let mut byte = [0u8; 1];
            match stream.socket.peek(&mut byte).await {
                Ok(1) => byte[0],
                Ok(_) => return Err((TlsFailure::Protocol, "closed before a byte".into())),
                Err(e) => return Err((TlsFailure::Protocol, e.to_string())),
            }
        }
    };
    if first != TLS_HANDSHAKE_RECORD {
        if first.is_ascii_uppercase() {
            let _ = stream.socket.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.socket.shutdown().await;
            return Err((TlsFailure::PlainHttp, "a plain-HTTP request".into()));
        }
        return Err((
            TlsFailure::Protocol,
            format!("not a TLS handshake (first byte {first:#04x})"),
        ));
    }
    acceptor.0.accept(stream).await.map_err(|e| {
        let cause = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
                TlsFailure::ClientCertificate
            }
            Some(rustls::Error::AlertReceived(_)) => TlsFailure::Alert,
            _ => TlsFailure::Protocol,
        };
        (cause, e.to_string())
    })
}

/// The `$ssl_*` facts of a finished handshake.
fn facts(connection: &rustls::ServerConnection) -> TlsFacts {
    let protocol = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    // rustls names TLS 1.3 suites `TLS13_…`; IANA and OpenSSL (nginx's `$ssl_cipher`) `TLS_…`.
    let cipher = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .map_or("unknown", |name| match name.strip_prefix("TLS13_") {
            Some(_) => tls13_name(name),
            None => name,
        });
    let client = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| {
            let (subject, common_name) = subject::of(leaf).unwrap_or_default();
            ClientCertificate {
                subject,
                common_name,
            }
        });
    TlsFacts {
        protocol,
        cipher,
        server_name: connection.server_name().map(str::to_string),
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        client,
    }
}

/// The IANA name of a TLS 1.3 suite rustls calls `TLS13_…`.
fn tls13_name(rustls_name: &'static str) -> &'static str {
    match rustls_name {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        other => other,
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.socket).poll_read(cx, buf);
            }
            if this.ahead.len() < READ_AHEAD {
                this.ahead = vec![0; READ_AHEAD];
            }
            let mut into = ReadBuf::new(&mut this.ahead);
            match Pin::new(&mut this.socket).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) => (this.start, this.end) = (0, into.filled().len()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.ahead = Vec::new(); // nothing arrives: hold no buffer
                    return Poll::Pending;
                }
            }
        }
        let n = buf.remaining().min(this.end - this.start);
        buf.put_slice(&this.ahead[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    /// rustls hands its queued records over as several slices: one system call for all.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

impl AsyncRead for TlsClient {
    /// A client that closes its TCP connection without TLS's close_notify has ended its
    /// sending all the same: read as the end of stream, as a FIN would be on a plain listener.
    /// (What is carried keeps its own framing: a cut-off body is still seen as cut off.)
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.get_mut().0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for TlsClient {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    /// Sends close_notify, then the FIN: the client's end of stream.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl ClientStream for TlsClient {
    type Reader<'a> = tokio::io::ReadHalf<&'a mut TlsClient>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut TlsClient>;

    /// Both halves share the TLS session: reading and writing take turns on it.
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }

    fn socket(&self) -> &TcpStream {
        &self.0.get_ref().0.socket
    }
}

/// TLS records are not the socket's bytes: tunnels copy through a buffer.
impl ReadSide for TlsClient {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl WriteSide for TlsClient {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}
