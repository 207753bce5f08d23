//! The engine over TLS: its certificate files, the one rustls client
//! configuration, and the one phrase an operator needs when a handshake fails.
//!
//! Both the event stream reader (`crate::source`, its own hyper connection)
//! and the bollard client handlers use connect through [`TlsEndpoint::connector`],
//! so they trust the same CA and present the same client certificate. Only
//! the CA in `ca.pem` is trusted, as the docker CLI does, never the system's
//! store: the engine is root on its host, and `ca.pem` is the operator's
//! statement of who may speak for it. The files are read again for every
//! connection (each API call makes one), so renewed certificates are picked
//! up and a file mounted late is found on the next retry.
//!
//! It must not decide when to connect or retry: the source does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::BollardRequest;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::DockerError;
use super::engine::{Engine, Transport};

/// One of the three files, and where its path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    /// For messages: `DOCKER_CERT_PATH`, `[engine] ca_file`, …
    pub from: String,
}

/// `ca.pem`, `cert.pem` and `key.pem`, wherever each was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA the engine's certificate must be signed by.
    pub ca: TlsFile,
    /// dockwarden's client certificate (chain).
    pub cert: TlsFile,
    /// Its private key (PKCS#1, SEC1 or PKCS#8, unencrypted).
    pub key: TlsFile,
}

/// `tcp://host:port` with TLS, verifying the engine (`DOCKER_TLS_VERIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEndpoint {
    /// `host:port`
    pub addr: String,
    /// The name the engine's certificate must be valid for: `addr`'s host.
    pub host: String,
    /// `host` as rustls checks it (a DNS name or an IP address).
    name: ServerName<'static>,
    pub files: TlsFiles,
}

/// A certificate file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use the TLS {what} {path}: {why}")]
pub struct FileError {
    pub what: &'static str,
    pub path: String,
    pub why: String,
}

const CA: &str = "CA certificate";
const CERT: &str = "client certificate";
const KEY: &str = "client key";

impl TlsEndpoint {
    /// `addr` (`host:port`) with `files`; fails if the host cannot be a
    /// TLS server name.
    pub fn new(addr: String, files: TlsFiles) -> Result<TlsEndpoint, &'static str> {
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => addr.as_str(),
        }
        .to_owned();
        let name = ServerName::try_from(host.clone()).map_err(
            |_| "the host is neither a DNS name nor an IP address, so no certificate can match it",
        )?;
        Ok(TlsEndpoint {
            addr,
            host,
            name,
            files,
        })
    }

    /// Reads the three files and builds the client configuration.
    pub fn connector(&self) -> Result<TlsConnector, DockerError> {
        let file_error = |f: &TlsFile, e: FileError| DockerError::TlsFile {
            from: f.from.clone(),
            error: e,
        };
        let files = &self.files;
        let roots = roots(&files.ca.path).map_err(|e| file_error(&files.ca, e))?;
        let chain = certs(&files.cert.path, CERT).map_err(|e| file_error(&files.cert, e))?;
        let key = key(&files.key.path).map_err(|e| file_error(&files.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DockerError::BadTls {
                why: format!("cannot set up TLS: {e}"),
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                let why = format!(
                    "it does not go with the certificate in {} ({e})",
                    files.cert.path.display()
                );
                file_error(&files.key, fail(&files.key.path, KEY, why))
            })?;
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// Opens a TCP connection and completes the TLS handshake.
    pub async fn connect(
        &self,
        connector: &TlsConnector,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let tcp = TcpStream::connect(self.addr.as_str()).await?;
        connector.connect(self.name.clone(), tcp).await
    }

    /// A bollard client whose every request goes over a connection of its
    /// own, made with the files as they are then (as bollard's own TLS
    /// client, it keeps no idle connections). Not `Docker::connect_with_ssl`,
    /// which trusts the system's CA store besides `ca.pem` and, when
    /// `cert.pem` cannot be read, silently sends no client certificate.
    pub fn client(&self, timeout_secs: u64) -> Result<Engine, DockerError> {
        // Unusable files are reported now, before the first call.
        self.connector()?;
        let tls = Arc::new(self.clone());
        let transport: Transport = Arc::new(move |request: BollardRequest| {
            let tls = tls.clone();
            Box::pin(async move { send(request, &tls).await })
        });
        Engine::new(transport, &format!("https://{}", self.addr), timeout_secs).map_err(|e| {
            DockerError::BadTls {
                why: format!("cannot set up the TLS client: {e}"),
            }
        })
    }
}

/// One bollard request on a fresh TLS connection.
async fn send(
    request: BollardRequest,
    tls: &TlsEndpoint,
) -> Result<hyper::Response<Incoming>, bollard::errors::Error> {
    let connector = tls
        .connector()
        .map_err(|e| bollard::errors::Error::from(std::io::Error::other(e)))?;
    let stream = tls.connect(&connector).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends with the response body (or when it is dropped).
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "Engine API connection closed.");
        }
    });
    let (mut parts, body) = request.into_parts();
    // bollard builds absolute URIs; a connection of our own sends the path.
    let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = origin.parse()?;
    let host = hyper::header::HeaderValue::from_str(&tls.addr)
        .map_err(|e| bollard::errors::Error::HttpClientError { err: e.into() })?;
    parts.headers.insert(hyper::header::HOST, host);
    Ok(sender
        .send_request(hyper::Request::from_parts(parts, body))
        .await?)
}

fn fail(path: &Path, what: &'static str, why: impl Into<String>) -> FileError {
    FileError {
        what,
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "missing".to_owned(),
            std::io::ErrorKind::PermissionDenied => "unreadable (permission denied)".to_owned(),
            _ => format!("unreadable ({e})"),
        };
        fail(path, what, why)
    })
}

/// The PEM certificates in `path`: at least one.
pub fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, what, format!("not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(fail(path, what, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The CA certificates in `path` as the only roots trusted.
pub fn roots(path: &Path) -> Result<RootCertStore, FileError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path, CA)? {
        roots
            .add(cert)
            .map_err(|e| fail(path, CA, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

/// The one private key in `path`.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let pem = read(path, KEY)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if pem.windows(9).any(|w| w == b"ENCRYPTED") => Err(fail(
            path,
            KEY,
            "the key is encrypted; like the docker CLI, dockwarden needs it unencrypted",
        )),
        Err(pem::Error::NoItemsFound) => Err(fail(path, KEY, "no PEM private key in it")),
        Err(e) => Err(fail(path, KEY, format!("not PEM ({e})"))),
    }
}

/// Checks the CA, certificate and key files at these paths (each if
/// given) as a connection would read them: what `dockwarden check` reports.
pub fn check_files(paths: [Option<&Path>; 3]) -> [Option<FileError>; 3] {
    let [ca, cert, key_path] = paths;
    [
        ca.and_then(|p| roots(p).err()),
        cert.and_then(|p| certs(p, CERT).err()),
        key_path.and_then(|p| key(p).err()),
    ]
}

/// Why a TLS connection failed, as (the phrase for the log's `reason`,
/// a sentence naming the file or name concerned and rustls's own words).
pub fn explain(err: &rustls::Error, tls: Option<&TlsEndpoint>) -> (&'static str, String) {
    let ca = tls.map_or_else(
        || "ca.pem".to_owned(),
        |t| t.files.ca.path.display().to_string(),
    );
    let cert = tls.map_or_else(
        || "cert.pem".to_owned(),
        |t| t.files.cert.path.display().to_string(),
    );
    let host = tls.map_or("the host", |t| t.host.as_str());
    match err {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer => (
                "unknown CA",
                format!("the engine's certificate is not signed by the CA in {ca}: {err}"),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "expired certificate",
                format!("the engine's certificate has expired: {err}"),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "certificate not yet valid",
                format!("the engine's certificate is not valid yet (check the clock): {err}"),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (
                    "host name mismatch",
                    format!("the engine's certificate is not valid for {host}: {err}"),
                )
            }
            _ => ("bad engine certificate", format!("{err}")),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => (
                "client certificate refused: unknown CA",
                format!("the engine does not trust the CA that signed {cert}: {err}"),
            ),
            AlertDescription::CertificateExpired => (
                "client certificate refused: expired certificate",
                format!("the engine says {cert} has expired: {err}"),
            ),
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied => (
                "client certificate refused",
                format!("the engine refused {cert}: {err}"),
            ),
            _ => ("TLS handshake failed", format!("{err}")),
        },
        _ => ("TLS error", format!("{err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::TempFile;

    fn temp(name: &str, contents: Option<&[u8]>) -> TempFile {
        TempFile::new("tls", name, contents)
    }

    #[test]
    fn file_errors_name_the_file_and_the_cause() {
        let missing = temp("missing.pem", None);
        let e = roots(&missing).expect_err("missing");
        assert_eq!(e.why, "missing");
        assert!(e.to_string().contains("CA certificate"), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let text = temp("text.pem", Some(b"hello\n"));
        assert_eq!(
            certs(&text, CERT).err().map(|e| e.why),
            Some("no PEM certificate in it".into())
        );
        assert_eq!(
            key(&text).err().map(|e| e.why),
            Some("no PEM private key in it".into())
        );

        let enc = temp(
            "enc.pem",
            Some(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        );
        assert!(
            key(&enc)
                .err()
                .map(|e| e.why)
                .unwrap_or_default()
                .contains("encrypted")
        );

        let broken = temp("broken.pem", Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n"));
        assert!(
            certs(&broken, CA)
                .err()
                .map(|e| e.why)
                .unwrap_or_default()
                .starts_with("not PEM")
        );
    }

    #[test]
    fn server_name_comes_from_the_address() {
        let f = TlsFile {
            path: "x".into(),
            from: "t".into(),
        };
        let files = TlsFiles {
            ca: f.clone(),
            cert: f.clone(),
            key: f,
        };
        let t = TlsEndpoint::new("docker.example:2376".into(), files.clone()).expect("dns");
        assert_eq!(t.host, "docker.example");
        let t = TlsEndpoint::new("[::1]:2376".into(), files.clone()).expect("ipv6");
        assert_eq!(t.host, "::1");
        let t = TlsEndpoint::new("127.0.0.1:2376".into(), files.clone()).expect("ipv4");
        assert_eq!(t.host, "127.0.0.1");
        assert!(TlsEndpoint::new("bad_host!:2376".into(), files).is_err());
    }

    #[test]
    fn causes_are_named() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(explain(&e, None).0, "unknown CA");
        let e = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(explain(&e, None).0, "expired certificate");
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert_eq!(explain(&e, None).0, "host name mismatch");
        let e = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert_eq!(
            explain(&e, None).0,
            "client certificate refused: unknown CA"
        );
    }
}
