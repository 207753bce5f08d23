//! TLS fixtures: certificate authorities and certificates made in the test
//! ([`Ca`], with rcgen), and [`Stunnel`], a real TLS terminator (Debian's
//! `stunnel4`, OpenSSL inside) in front of the engine's unix socket that
//! verifies client certificates, as `dockerd --tlsverify` does.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::engine::docker_socket_path;
use super::sidecar::free_local_addr;

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Clone, Copy)]
pub enum Role {
    Server,
    Client,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, role: Role, names: &[&str]) -> Leaf {
        self.issue_valid(role, names, false)
    }

    /// A certificate whose validity ended a year ago.
    pub fn issue_expired(&self, role: Role, names: &[&str]) -> Leaf {
        self.issue_valid(role, names, true)
    }

    fn issue_valid(&self, role: Role, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("dockwarden-test", String::as_str),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir` (made if needed),
/// as `DOCKER_CERT_PATH` holds them.
pub fn write_cert_path(dir: &Path, ca: &Ca, client: &Leaf) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", client.cert_pem.clone()),
        ("key.pem", client.key_pem.clone()),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// `stunnel4` listening on a free `127.0.0.1` port with `server`'s
/// certificate, requiring a client certificate signed by `client_ca`, and
/// forwarding to the engine's unix socket. Killed on drop.
pub struct Stunnel {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// Fails the test, saying how to install it, unless stunnel is on PATH.
pub fn require_stunnel() -> PathBuf {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        for name in ["stunnel4", "stunnel"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "stunnel4 is not installed: the engine-over-TLS tests put Debian's stunnel4 in front of \
         the engine socket. Install it (sudo apt-get install --no-install-recommends stunnel4), \
         or run scripts/test, which installs it."
    );
}

impl Stunnel {
    /// Starts it in `dir` (its config, certificates and log go there).
    pub fn start(dir: &Path, server: &Leaf, client_ca: &Ca) -> Self {
        let bin = require_stunnel();
        let socket = docker_socket_path().expect(
            "the engine-over-TLS tests put stunnel in front of the engine's unix socket; \
             unset DOCKER_HOST or point it at a unix:// socket",
        );
        fs::create_dir_all(dir).expect("stunnel dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            path
        };
        let cert = write("server-cert.pem", &server.cert_pem);
        let key = write("server-key.pem", &server.key_pem);
        let ca = write("client-ca.pem", &client_ca.pem());
        let log = dir.join("stunnel.log");
        let addr = free_local_addr();
        let conf = write(
            "stunnel.conf",
            &format!(
                "foreground = yes\npid =\ndebug = info\noutput = {log}\n\n[engine]\n\
                 accept = {addr}\nconnect = {socket}\ncert = {cert}\nkey = {key}\n\
                 CAfile = {ca}\nverifyChain = yes\nrequireCert = yes\n",
                log = log.display(),
                socket = socket.display(),
                cert = cert.display(),
                key = key.display(),
                ca = ca.display(),
            ),
        );
        let child = Command::new(&bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut tunnel = Stunnel { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = tunnel.child.try_wait() {
                panic!("stunnel exited ({status}); its log:\n{}", tunnel.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "stunnel did not listen on {addr} within 10s; its log:\n{}",
                    tunnel.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        tunnel
    }

    /// `tcp://127.0.0.1:PORT`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has logged (handshakes, verification failures).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- stunnel log ----\n{}---- end of stunnel log ----",
                self.log()
            );
        }
    }
}
