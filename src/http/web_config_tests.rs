//! Unit tests of [`super`]: the web config file's keys, checks and the
//! places its problems are reported at.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

// A throwaway self-signed certificate (CN=localhost, valid to 2126) and its
// key, made for these tests with `openssl req -x509 -newkey ec`; and a key
// that does not belong to it.
pub(crate) const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUewPLHecpJrS/+G9NYe3DFoVm/gEwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMzEyMTAzOFoYDzIxMjYxMDMw
MTIxMDM4WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASiepU8EW6Zn4PfBNz9JtpKH2UWX9BW6MzMR+4jJieMXv8ON1H0+1pX
Fp7trwbiCW5WBIbObbmCtOUJ5wew8R5Ko28wbTAdBgNVHQ4EFgQU3Kamn55VB6I9
nZa/zkZfs8lTkZ4wHwYDVR0jBBgwFoAU3Kamn55VB6I9nZa/zkZfs8lTkZ4wDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSAAwRQIgUWs74OwM6XTu7xcfqxj2eRfHrSfA0jGBWGKmS0V9PekCIQCF
9wTkIm+L0+n9JrRStKJQTqZZS9Gj9MHE7Ih+N1QMlg==
-----END CERTIFICATE-----
";
pub(crate) const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgABMNndYrXNOjlKaw
YF1BYmyoDH5pRlcF1OrBMNzpKEKhRANCAASiepU8EW6Zn4PfBNz9JtpKH2UWX9BW
6MzMR+4jJieMXv8ON1H0+1pXFp7trwbiCW5WBIbObbmCtOUJ5wew8R5K
-----END PRIVATE KEY-----
";
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgI4m5cstrrzd7loe1
dm4jZwIsEIOvY2Oju2Vdaq49YcmhRANCAAR6HBvOwXsR/asxXiaOJdOXQ8uZ4CdL
U0Tbe+nwuDy9Wuzm5DXM6ZXXzdV4UFvbXjogjktihfuI2eNJuYgyqtMK
-----END PRIVATE KEY-----
";
/// bcrypt("secret"), cost 4.
const HASH: &str = "$2b$04$4chh5N.eIKibuqiQ.uC.JeTPneNIDyAYikrXKuIhOb2X3hMDoQIZ.";

/// A temp dir holding cert.pem, key.pem and other.pem (removed on drop).
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dw-webcfg-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cert.pem"), CERT).unwrap();
        fs::write(dir.join("key.pem"), KEY).unwrap();
        fs::write(dir.join("other.pem"), OTHER_KEY).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("web.yml")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn compile_text(dir: &Dir, text: &str) -> Result<WebConfig, Vec<String>> {
    let file = dir.file();
    compile(&file, text.as_bytes(), false).map_err(|e| {
        let prefix = format!("{}:", file.display());
        e.problems
            .into_iter()
            .map(|p| p.strip_prefix(&prefix).map(str::to_owned).unwrap_or(p))
            .collect()
    })
}

fn problems(text: &str) -> Vec<String> {
    let dir = Dir::new();
    match compile_text(&dir, text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(p) => p,
    }
}

#[test]
fn an_empty_file_turns_nothing_on() {
    let dir = Dir::new();
    for text in ["", "# nothing\n", "tls_server_config:\nbasic_auth_users:\n"] {
        let c = compile_text(&dir, text).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty());
    }
}

#[test]
fn the_toolkit_example_with_relative_paths_compiles() {
    let dir = Dir::new();
    let c = compile_text(
        &dir,
        &format!(
            "# as in the toolkit's docs
tls_server_config:
  cert_file: cert.pem
  key_file: key.pem
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: cert.pem
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {HASH}
  'other user': {HASH}
"
        ),
    )
    .unwrap();
    let tls = c.tls.unwrap();
    assert!(!tls.cert_required_by_gate);
    assert!(!tls.server.ignore_client_order);
    // cert.pem twice (server and CA), key.pem once; by absolute path.
    let names: Vec<&Path> = tls.files.iter().map(|(p, _)| p.as_path()).collect();
    assert_eq!(
        names,
        [
            dir.0.join("cert.pem"),
            dir.0.join("key.pem"),
            dir.0.join("cert.pem")
        ]
    );
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.headers.len(), 2);
}

#[test]
fn inline_pem_works_and_open_probes_move_the_requirement_to_the_gate() {
    let dir = Dir::new();
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let text = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: RequireAnyClientCert\n",
        indent(CERT),
        indent(KEY)
    );
    let c = compile(&dir.file(), text.as_bytes(), true).unwrap();
    let tls = c.tls.unwrap();
    assert!(tls.cert_required_by_gate);
    assert!(tls.files.is_empty());
    let c = compile(&dir.file(), text.as_bytes(), false).unwrap();
    assert!(!c.tls.unwrap().cert_required_by_gate);
}

#[test]
fn unknown_and_repeated_keys_are_located_on_their_line() {
    assert_eq!(
        problems("tls_server_config:\n  cert_file: a\n  certfile: b\n"),
        [
            "3:3: tls_server_config: unknown field `certfile`, expected one of `cert`, `key`, `client_ca`, `cert_file`, `key_file`, `client_ca_file`, `client_auth_type`, `client_allowed_sans`, `min_version`, `max_version`, `cipher_suites`, `prefer_server_cipher_suites`, `curve_preferences`"
        ]
    );
    let p = problems(&format!(
        "basic_auth_users:\n  a: {HASH}\n  b: {HASH}\n  a: {HASH}\n"
    ));
    assert_eq!(p, ["4:3: basic_auth_users: duplicate entry with key \"a\""]);
    let p = problems("web:\n  x: 1\n");
    assert!(p[0].starts_with("1:1: unknown field `web`"), "{p:?}");
    let p = problems("tls_server_config: [\n");
    assert!(p[0].starts_with("2:1: "), "{p:?}");
}

#[test]
fn every_problem_is_reported_at_its_key() {
    let p = problems(&format!(
        "tls_server_config:
  cert_file: cert.pem
  key_file: key.pem
  client_auth_type: RequireAndVerify
  min_version: TLS10
  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]
  curve_preferences: [CurveP521]
  client_allowed_sans: [a]
basic_auth_users:
  good: {HASH}
  bad: secret
http_server_config:
  headers:
    X-Frame-Options: allow
    Server: dockwarden
rate_limit:
  interval: 1s
"
    ));
    let at: Vec<&str> = p.iter().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(
        at,
        [
            "16:1", "8:3", "4:3", "5:3", "6:3", "7:3", "11:3", "15:5", "14:5"
        ],
        "{p:#?}"
    );
    assert!(
        p[2].contains("unknown client_auth_type \"RequireAndVerify\""),
        "{}",
        p[2]
    );
    assert!(
        p[6].contains("basic_auth_users.bad: not a bcrypt hash"),
        "{}",
        p[6]
    );
    assert!(p[6].contains("htpasswd -nBC 10"), "{}", p[6]);
}

#[test]
fn tls_keys_that_contradict_each_other_are_refused() {
    for (text, wanted) in [
        (
            "tls_server_config:\n  cert_file: cert.pem\n",
            "1:1: tls_server_config.key_file: missing",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_ca_file: cert.pem\n",
            "4:3: tls_server_config.client_ca_file: a client CA is given without client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: VerifyClientCertIfGiven\n",
            "4:3: tls_server_config.client_auth_type: checking client certificates needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  cert: x\n  key_file: key.pem\n",
            "2:3: tls_server_config.cert_file: give cert_file or cert, not both",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n  max_version: TLS12\n",
            "4:3: tls_server_config.min_version: is above max_version",
        ),
    ] {
        let p = problems(text);
        assert!(p.len() == 1 && p[0].starts_with(wanted), "{text}\n→ {p:?}");
    }
}

#[test]
fn pem_problems_name_the_file() {
    let p = problems("tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n");
    assert!(
        p[0].starts_with("2:3: tls_server_config.cert_file: cannot read ")
            && p[0].contains("missing.pem"),
        "{p:?}"
    );
    let p = problems("tls_server_config:\n  cert_file: cert.pem\n  key_file: other.pem\n");
    assert!(
        p[0].starts_with("2:3: tls_server_config.cert_file: ")
            && p[0].contains("do not make a usable certificate"),
        "{p:?}"
    );
    let p = problems("tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n");
    assert!(p[0].contains("no PEM certificate"), "{p:?}");
}

#[test]
fn locate_follows_block_mappings_only() {
    let text = "a:\n  b: 1\n  c:\n    b: 2\n  'b': 3\nb: 4\n";
    assert_eq!(locate(text, &["a", "b"], 0), Some((2, 3)));
    assert_eq!(locate(text, &["a", "b"], 1), Some((5, 3)));
    assert_eq!(locate(text, &["a", "b"], 2), None);
    assert_eq!(locate(text, &["b"], 0), Some((6, 1)));
    assert_eq!(locate("a: {b: 1}\n", &["a", "b"], 0), None);
}

#[test]
fn a_client_ca_is_read_where_it_is_only_named_to_clients() {
    // As in the toolkit: with RequestClientCert or RequireAnyClientCert a
    // client CA checks nothing, but it is read all the same (a wrong one is
    // an error) and its file is watched like the others.
    let dir = Dir::new();
    let yaml = |auth: &str, ca: &str| {
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
             client_auth_type: {auth}\n  client_ca_file: {ca}\n"
        )
    };
    for auth in ["RequestClientCert", "RequireAnyClientCert"] {
        let p = problems(&yaml(auth, "missing.pem"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("5:3: tls_server_config.client_ca_file: cannot read ")
                && p[0].contains("missing.pem"),
            "{p:?}"
        );
        let p = problems(&yaml(auth, "other.pem"));
        assert!(
            p[0].starts_with("5:3: tls_server_config.client_ca_file: ")
                && p[0].contains("no PEM certificate in it"),
            "{p:?}"
        );
        let tls = compile_text(&dir, &yaml(auth, "cert.pem"))
            .unwrap()
            .tls
            .unwrap();
        let read: Vec<_> = tls.files.iter().map(|(path, _)| path.clone()).collect();
        assert_eq!(
            read,
            [
                dir.0.join("cert.pem"),
                dir.0.join("key.pem"),
                dir.0.join("cert.pem")
            ],
            "{auth}"
        );
    }
}
