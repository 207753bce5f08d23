//! TLS on dockwarden's own listener: the `tls_server_config` of a web
//! config file ([`super::web_config`]) turned into a rustls `ServerConfig`
//! with the ring provider, with the exporter-toolkit's meaning for each key
//! (Go's `crypto/tls` names for client auth, versions, suites and curves).
//!
//! It builds a configuration from what it is given and reads the PEM it
//! names; it must not decide when to read the file again or who may pass
//! once connected (that is [`super::guard`]).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};

/// `client_auth_type`, as Go's `tls.ClientAuthType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for (`NoClientCert`, also the empty string).
    None,
    /// Asked for, neither required nor verified (`RequestClientCert`).
    Request,
    /// Required, not verified (`RequireAnyClientCert`, old name `RequireClientCert`).
    RequireAny,
    /// Verified against the client CA when one is sent (`VerifyClientCertIfGiven`).
    VerifyIfGiven,
    /// Required and verified against the client CA (`RequireAndVerifyClientCert`).
    RequireAndVerify,
}

impl ClientAuth {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "" | "NoClientCert" => Self::None,
            "RequestClientCert" => Self::Request,
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAny,
            "VerifyClientCertIfGiven" => Self::VerifyIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerify,
            other => {
                return Err(format!(
                    "unknown client_auth_type \"{other}\": expected NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ));
            }
        })
    }

    /// Whether a client must present a certificate.
    pub fn required(self) -> bool {
        matches!(self, Self::RequireAny | Self::RequireAndVerify)
    }

    /// Whether a presented certificate is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyIfGiven | Self::RequireAndVerify)
    }

    /// Go's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NoClientCert",
            Self::Request => "RequestClientCert",
            Self::RequireAny => "RequireAnyClientCert",
            Self::VerifyIfGiven => "VerifyClientCertIfGiven",
            Self::RequireAndVerify => "RequireAndVerifyClientCert",
        }
    }
}

/// `min_version` / `max_version`: rustls speaks TLS 1.2 and 1.3 only.
pub fn parse_version(name: &str) -> Result<&'static SupportedProtocolVersion, String> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "{name} is not supported: dockwarden speaks TLS 1.2 and 1.3 only (TLS12, TLS13)"
        )),
        other => Err(format!(
            "unknown TLS version \"{other}\": expected TLS12 or TLS13"
        )),
    }
}

/// One `cipher_suites` entry: a TLS 1.2 suite of the ring provider by its
/// IANA name (Go's), or `None` for a TLS 1.3 suite, which Go does not let a
/// configuration choose either (all three stay enabled).
pub fn parse_cipher(name: &str) -> Result<Option<SupportedCipherSuite>, String> {
    if matches!(
        name,
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256"
    ) {
        return Ok(None);
    }
    // Go's older alias for the ChaCha20 suites.
    let name = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        n => n,
    };
    let tls12 = || {
        ring::ALL_CIPHER_SUITES
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
    };
    if let Some(found) = tls12().find(|s| s.suite().as_str() == Some(name)) {
        return Ok(Some(*found));
    }
    let known: Vec<&str> = tls12().filter_map(|s| s.suite().as_str()).collect();
    Err(format!(
        "cipher suite \"{name}\" is not supported (rustls, ring): use one of {}",
        known.join(", ")
    ))
}

/// One `curve_preferences` entry, by Go's name.
pub fn parse_curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    match name {
        "X25519" => Ok(ring::kx_group::X25519),
        "CurveP256" => Ok(ring::kx_group::SECP256R1),
        "CurveP384" => Ok(ring::kx_group::SECP384R1),
        "CurveP521" => Err(
            "CurveP521 is not supported (rustls, ring): use X25519, CurveP256 or CurveP384".into(),
        ),
        other => Err(format!(
            "unknown curve \"{other}\": expected X25519, CurveP256 or CurveP384"
        )),
    }
}

/// PEM given in the file itself (`cert`) or named by it (`cert_file`).
#[derive(Debug, Clone)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// A checked `tls_server_config`, before its PEM is read.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// TLS 1.2 suites in preference order; None: the provider's.
    pub tls12_suites: Option<Vec<SupportedCipherSuite>>,
    /// Key exchange groups in preference order; None: the provider's.
    pub kx_groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    /// `prefer_server_cipher_suites` (default true).
    pub prefer_server_order: bool,
    /// The probes are served without a client certificate: the handshake
    /// then only asks for one, and the gate requires it on other paths.
    pub open_probes: bool,
}

/// A built configuration.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    /// A certificate is required, but by the gate rather than the
    /// handshake (so the open probes can be reached without one).
    pub cert_required_by_gate: bool,
    /// The files read to build it, with what they held: read again on each
    /// new connection, and built again when one changed.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// A client CA only named to clients, not checked: logged once taken.
    pub unchecked_ca: Option<(String, ClientAuth)>,
}

/// A problem with one key of `tls_server_config`.
#[derive(Debug)]
pub struct TlsProblem {
    /// The key it concerns, e.g. `cert_file`.
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> TlsProblem {
    TlsProblem {
        key,
        message: message.into(),
    }
}

/// Reads the PEM `spec` names and builds the configuration.
pub fn build(spec: &TlsSpec) -> Result<Tls, TlsProblem> {
    let mut files = Vec::new();
    let cert_pem = read(&spec.cert, ("cert_file", "cert"), &mut files)?;
    let key_pem = read(&spec.key, ("key_file", "key"), &mut files)?;
    let cert_key = key_name(&spec.cert, ("cert_file", "cert"));
    let key_key = key_name(&spec.key, ("key_file", "key"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            problem(
                cert_key,
                format!("{}: not PEM certificates: {e}", spec.cert),
            )
        })?;
    if chain.is_empty() {
        return Err(problem(
            cert_key,
            format!(
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                spec.cert
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        problem(
            key_key,
            format!(
                "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
                spec.key
            ),
        )
    })?;

    let mut provider = ring::default_provider();
    if let Some(suites) = &spec.tls12_suites {
        provider
            .cipher_suites
            .retain(|s| s.version() != &rustls::version::TLS12);
        provider.cipher_suites.extend(suites.iter().copied());
    }
    if let Some(groups) = &spec.kx_groups {
        provider.kx_groups = groups.clone();
    }
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&spec.versions)
        .map_err(|e| problem("cipher_suites", format!("no usable configuration: {e}")))?;

    let ca_key = spec.client_ca.as_ref().map_or("client_ca_file", |p| {
        key_name(p, ("client_ca_file", "client_ca"))
    });
    // Read whatever the auth type, as the toolkit does; its names go out with
    // every request for a certificate (Go's `ClientCAs`). Only the two
    // `Verify…` types check a certificate against it.
    let client_roots = spec
        .client_ca
        .as_ref()
        .map(|ca| read_client_ca(ca, ca_key, &mut files).map(|roots| (ca, roots)))
        .transpose()?;
    let unchecked_ca = client_roots
        .as_ref()
        .filter(|_| !spec.client_auth.verifies())
        .map(|(ca, _)| (ca.to_string(), spec.client_auth));
    // With open probes a required certificate is asked for in the handshake
    // and required by the gate, so a probe without one gets through.
    let cert_required_by_gate = spec.open_probes && spec.client_auth.required();
    let mandatory = spec.client_auth.required() && !spec.open_probes;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match spec.client_auth {
        ClientAuth::None => None,
        ClientAuth::Request | ClientAuth::RequireAny => Some(Arc::new(AnyCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
            hints: client_roots
                .as_ref()
                .map_or_else(Vec::new, |(_, roots)| roots.subjects()),
        })),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let Some((ca, roots)) = client_roots else {
                return Err(problem(
                    "client_auth_type",
                    "verifying client certificates needs client_ca_file (or client_ca)",
                ));
            };
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if mandatory {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            Some(
                verifier
                    .build()
                    .map_err(|e| problem(ca_key, format!("{ca}: {e}")))?,
            )
        }
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        problem(
            cert_key,
            format!(
                "{} and {} do not make a usable certificate: {e}",
                spec.cert, spec.key
            ),
        )
    })?;
    server.ignore_client_order = spec.prefer_server_order;
    // dockwarden serves HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        server: Arc::new(server),
        cert_required_by_gate,
        files,
        unchecked_ca,
    })
}

/// The client CA's certificates, read from `ca`; at least one.
fn read_client_ca(
    ca: &Pem,
    ca_key: &'static str,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<RootCertStore, TlsProblem> {
    let ca_pem = read(ca, ("client_ca_file", "client_ca"), files)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| problem(ca_key, format!("{ca}: not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| problem(ca_key, format!("{ca}: not a usable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(problem(ca_key, format!("{ca}: no PEM certificate in it")));
    }
    Ok(roots)
}

impl std::fmt::Display for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => write!(f, "{}", path.display()),
            Pem::Inline(_) => f.write_str("the inline PEM"),
        }
    }
}

fn key_name(pem: &Pem, (file, inline): (&'static str, &'static str)) -> &'static str {
    match pem {
        Pem::File(_) => file,
        Pem::Inline(_) => inline,
    }
}

/// The bytes of `pem`, remembering a file read in `files`.
fn read(
    pem: &Pem,
    keys: (&'static str, &'static str),
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<Vec<u8>, TlsProblem> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| problem(keys.0, format!("cannot read {}: {e}", path.display())))?;
            files.push((path.clone(), bytes.clone()));
            Ok(bytes)
        }
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate is
/// taken (Go's meaning), but the client must still prove it holds its key.
#[derive(Debug)]
struct AnyCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
    /// The client CA's names, if one is given: sent, not checked.
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The provider every configuration starts from, for callers that need
/// its lists (tests).
#[cfg(test)]
fn provider() -> rustls::crypto::CryptoProvider {
    ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_go_s() {
        assert_eq!(ClientAuth::parse("").unwrap(), ClientAuth::None);
        assert_eq!(
            ClientAuth::parse("RequireClientCert").unwrap(),
            ClientAuth::RequireAny
        );
        assert!(
            ClientAuth::parse("RequireAndVerifyClientCert")
                .unwrap()
                .verifies()
        );
        assert!(ClientAuth::parse("requireandverifyclientcert").is_err());
        assert!(parse_version("TLS13").is_ok());
        assert!(
            parse_version("TLS10")
                .unwrap_err()
                .contains("TLS 1.2 and 1.3 only")
        );
        assert!(parse_version("1.3").unwrap_err().contains("unknown"));
        assert!(parse_cipher("TLS_AES_128_GCM_SHA256").unwrap().is_none());
        let suite = parse_cipher("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305").unwrap();
        assert_eq!(
            suite.map(|s| s.suite().as_str()),
            Some(Some("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"))
        );
        let e = parse_cipher("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap_err();
        assert!(e.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), "{e}");
        assert!(parse_curve("CurveP521").is_err());
        assert!(parse_curve("X25519").is_ok());
        // Every TLS 1.2 suite of the provider has a name Go also uses.
        assert!(
            provider()
                .cipher_suites
                .iter()
                .all(|s| s.suite().as_str().is_some())
        );
    }

    #[test]
    fn missing_files_name_the_key_and_the_path() {
        let spec = TlsSpec {
            cert: Pem::File("/nonexistent/cert.pem".into()),
            key: Pem::File("/nonexistent/key.pem".into()),
            client_ca: None,
            client_auth: ClientAuth::None,
            versions: vec![&rustls::version::TLS13],
            tls12_suites: None,
            kx_groups: None,
            prefer_server_order: true,
            open_probes: false,
        };
        let p = build(&spec).err().unwrap();
        assert_eq!(p.key, "cert_file");
        assert!(
            p.message.contains("cannot read /nonexistent/cert.pem"),
            "{}",
            p.message
        );
        let spec = TlsSpec {
            cert: Pem::Inline("not pem".into()),
            ..spec
        };
        let p = build(&spec).err().unwrap();
        assert_eq!(p.key, "key_file");
    }
}
