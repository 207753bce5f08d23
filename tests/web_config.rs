//! `dockwarden run --web-config FILE`: TLS, client certificates and basic
//! auth on dockwarden's own endpoints, in the Prometheus exporter-toolkit's
//! format, driven as an operator would:
//!
//! * `curl` with and without the right password and client certificate
//!   (and one from another CA), the bearer tokens of `/api/v1` and
//!   `/-/reload` on top, `min_version: TLS13` refusing a TLS 1.2 client;
//! * `--web-open-probes`: `/healthz` and `/readyz` without either, and
//!   `dockwarden health --insecure` over https;
//! * the file read again on change: a new password replaces the old one, a
//!   broken file keeps the last good one (logged with FILE:LINE:COL), new
//!   certificate files are served to the next connection; a file emptied
//!   in place (no users left) is refused and the password still applies;
//! * a bad file at startup: exit 2 with FILE:LINE:COL;
//! * a real Prometheus (Debian's `prometheus`) scraping over TLS with a
//!   client certificate and basic auth reaches `up == 1`; with a wrong
//!   password `up == 0` and 401;
//! * a wrong password is answered 401 with `WWW-Authenticate: Basic` and
//!   never appears in dockwarden's log (which runs at debug level).
//!
//! Certificates are made in each test with the `openssl` CLI. Needs `curl`,
//! `openssl` and `prometheus` (`scripts/test` installs them) and the Docker
//! Engine; fails, never skips, when one is missing.

mod common;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Dockwarden, TempDir, require_docker, run_with_timeout, wait_until};

const LOG_ALL: &str = r#"
[[rule]]
name = "all"
on = ["*"]
handler = "log"
[rule.with]
level = "debug"
"#;

/// The password Prometheus and curl log in with, and a wrong one that must
/// never reach a log line.
const PASSWORD: &str = "right-horse-battery-4417";
const WRONG: &str = "wrong-Pa55-never-logged-7c1d";

/// Fails the test, saying how to get it, unless `tool` runs.
fn require_tool(tool: &str, package: &str) {
    let arg = if tool == "openssl" {
        "version"
    } else {
        "--version"
    };
    match Command::new(tool).arg(arg).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{tool} {arg}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "{tool} is not installed (not on PATH); this test drives it. Run scripts/test, which \
             installs it, or `sudo apt-get install --no-install-recommends {package}`."
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// Runs `cmd` (within 60 s), failing the test unless it exits 0.
fn run_ok(mut cmd: Command, dir: &Path) {
    cmd.current_dir(dir);
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{desc} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates made with the openssl CLI in a temp dir: two CAs (`ca`,
/// `other-ca`), a server certificate from each for localhost and 127.0.0.1
/// (`server`, `other-server`), a client certificate from each (`client`,
/// `other-client`). Each NAME is NAME.pem and NAME.key.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        require_tool("openssl", "openssl");
        let pki = Pki {
            dir: TempDir::new("web-pki"),
        };
        for ca in ["ca", "other-ca"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=dockwarden test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        let server = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";
        let client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
        pki.leaf("server", "ca", server);
        pki.leaf("other-server", "other-ca", server);
        pki.leaf("client", "ca", client);
        pki.leaf("other-client", "other-ca", client);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.args(args);
        run_ok(cmd, self.dir.path());
    }

    /// NAME.pem signed by CA, with the extensions `ext`.
    fn leaf(&self, name: &str, ca: &str, ext: &str) {
        let ext_file = format!("{name}.ext");
        fs::write(self.dir.path().join(&ext_file), ext).expect("write the extensions");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// A bcrypt hash of `password`, as `htpasswd -nBC 10` makes one.
fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 10).expect("bcrypt hash")
}

/// One curl run: the status (0 when no HTTP answer came), the response
/// head and body, and curl's exit code and error line.
#[derive(Debug)]
struct Curl {
    status: u16,
    head: String,
    body: String,
    exit: i32,
    error: String,
}

impl Curl {
    fn www_authenticate(&self) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("www-authenticate")
                .then(|| value.trim())
        })
    }
}

/// `curl -sS ARGS URL`, never through a proxy, within 20 s.
fn curl<S: AsRef<std::ffi::OsStr>>(args: &[S], url: &str) -> Curl {
    require_tool("curl", "curl");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "15",
        "-i",
        "-w",
        "\n%{http_code}",
    ])
    .args(args)
    .arg(url);
    let out = run_with_timeout(cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (head, body) = rest
        .split_once("\r\n\r\n")
        .map_or((rest, ""), |(h, b)| (h, b));
    Curl {
        status: code.trim().parse().unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
        exit: out.status.code().unwrap_or(-1),
        error: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

/// The web config file: `dir/web.yml`.
fn write_web_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("web.yml");
    // Write then rename: dockwarden reads the file on every request and
    // must never see half of it.
    let tmp = dir.join(".web.yml.tmp");
    fs::write(&tmp, yaml).expect("write the web config");
    fs::rename(&tmp, &path).expect("move the web config in place");
    path
}

/// Starts dockwarden with `--web-config` and `extra` arguments.
fn start(rules: &str, web_config: &Path, extra: &[&str]) -> Dockwarden {
    let web = web_config.display().to_string();
    let mut args = vec!["--web-config", web.as_str()];
    args.extend_from_slice(extra);
    Dockwarden::start_with(rules, &args, &[])
}

/// Polls `url` with `args` until it answers 200; panics (showing the log)
/// if it does not within 30 s or dockwarden exits.
fn wait_ready<S: AsRef<std::ffi::OsStr>>(dw: &mut Dockwarden, args: &[S], url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = dw.try_status() {
            panic!("dockwarden exited ({status}); log:\n{}", dw.log());
        }
        let got = curl(args, url);
        if got.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 within 30 s (last: {got:?}); log:\n{}",
            dw.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn assert_not_logged(dw: &Dockwarden, secrets: &[&str]) {
    let log = dw.log();
    for s in secrets {
        assert!(!log.contains(s), "dockwarden's log contains {s:?}:\n{log}");
    }
}

#[test]
fn curl_with_and_without_password_and_client_certificate() {
    require_docker();
    let pki = Pki::new();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let web = write_web_config(
        pki.dir.path(),
        &format!(
            "tls_server_config:
  cert_file: server.pem        # relative to this file
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
basic_auth_users:
  prometheus: {}
",
            bcrypt_hash(PASSWORD)
        ),
    );
    let api_token = "api-token-0123456789abcdef";
    let reload_token = "reload-token-0123456789abcdef";
    fs::write(pki.dir.path().join("api.token"), api_token).expect("api token");
    fs::write(pki.dir.path().join("reload.token"), reload_token).expect("reload token");
    let rules = format!(
        "[server]\napi_token_file = \"{}\"\ntoken_file = \"{}\"\n{LOG_ALL}",
        pki.path("api.token"),
        pki.path("reload.token")
    );
    let mut dw = start(&rules, &web, &[]);
    let base = format!("https://127.0.0.1:{}", dw.addr().port());
    let url = |p: &str| format!("{base}{p}");
    let user = format!("prometheus:{PASSWORD}");
    let wrong = format!("prometheus:{WRONG}");
    let good = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let with = |extra: &[&str]| -> Vec<String> {
        good.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    wait_ready(&mut dw, &with(&["-u", &user]), &url("/readyz"));

    // The right certificate and password: the metrics.
    let ok = curl(&with(&["-u", &user]), &url("/metrics"));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        ok.body.contains("dockwarden_stream_connected 1"),
        "{}",
        ok.body
    );

    // No client certificate, or one from another CA: no TLS session at all.
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    for (what, args) in [
        (
            "without a client certificate",
            strings(&["--cacert", &ca, "-u", &user]),
        ),
        (
            "with a client certificate from another CA",
            strings(&[
                "--cacert",
                &ca,
                "--cert",
                &pki.path("other-client.pem"),
                "--key",
                &pki.path("other-client.key"),
                "-u",
                &user,
            ]),
        ),
        (
            "over TLS 1.2 (min_version: TLS13)",
            with(&["--tls-max", "1.2", "-u", &user]),
        ),
    ] {
        let got = curl(&args, &url("/metrics"));
        assert!(got.status == 0 && got.exit != 0, "{what}: {got:?}");
        println!("{what}: refused: {}", got.error);
    }
    // Plain HTTP gets no answer either.
    let plain = curl(
        &["-u", &user],
        &format!("http://127.0.0.1:{}/metrics", dw.addr().port()),
    );
    assert_ne!(plain.status, 200, "{plain:?}");

    // The certificate without the password, or with a wrong one: 401.
    for args in [with(&[]), with(&["-u", &wrong]), with(&["-u", "nobody:x"])] {
        for path in ["/metrics", "/healthz", "/readyz", "/nothing-here"] {
            let got = curl(&args, &url(path));
            assert_eq!(got.status, 401, "{path} {args:?}: {got:?}");
            assert!(
                got.www_authenticate()
                    .is_some_and(|v| v.starts_with("Basic")),
                "{path}: {got:?}"
            );
        }
    }

    // /api/v1 and /-/reload still need their own bearer token: the
    // password alone does not open them, the token does.
    let api = curl(&with(&["-u", &user]), &url("/api/v1/containers"));
    assert_eq!(api.status, 401, "{api:?}");
    assert_eq!(api.www_authenticate(), Some("Bearer"), "{api:?}");
    let bearer = format!("Authorization: Bearer {api_token}");
    let api = curl(&with(&["-H", &bearer]), &url("/api/v1/containers"));
    assert_eq!(api.status, 200, "{api:?}");
    assert!(api.body.trim_start().starts_with('['), "{}", api.body);
    let wrong_bearer = curl(
        &with(&["-H", "Authorization: Bearer not-the-token-at-all"]),
        &url("/api/v1/events"),
    );
    assert_eq!(wrong_bearer.status, 401, "{wrong_bearer:?}");
    let reload = curl(&with(&["-u", &user, "-X", "POST"]), &url("/-/reload"));
    assert_eq!(reload.status, 401, "{reload:?}");
    let auth = format!("Authorization: Bearer {reload_token}");
    let reload = curl(&with(&["-H", &auth, "-X", "POST"]), &url("/-/reload"));
    assert_eq!(reload.status, 200, "{reload:?}");

    // Refusals are logged without the password.
    assert!(
        dw.wait_for_log(
            "Refused a request: wrong basic-auth user or password",
            Duration::from_secs(5)
        ),
        "no refusal logged:\n{}",
        dw.log()
    );
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&wrong);
    assert_not_logged(&dw, &[WRONG, &encoded, PASSWORD]);
    dw.sigterm();
    let status = dw
        .wait_exit(Duration::from_secs(15))
        .expect("dockwarden stops on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", dw.log());
}

/// `openssl s_client` to 127.0.0.1:`port` with `args`, stdin closed: what
/// it printed of the handshake (the CA names a certificate request gave
/// among them), then its stderr and exit status.
fn s_client(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"));
    format!(
        "{}\n--- stderr ({}) ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn require_any_client_cert_names_the_client_ca_and_takes_any_certificate() {
    require_docker();
    let pki = Pki::new();
    let web = write_web_config(
        pki.dir.path(),
        "tls_server_config:
  cert_file: server.pem
  key_file: server.key
  client_auth_type: RequireAnyClientCert
  client_ca_file: ca.pem
",
    );
    let mut dw = start(LOG_ALL, &web, &[]);
    let port = dw.addr().port();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = pki.path("ca.pem");
    // Go's meaning, as the toolkit's: a certificate is required, but one
    // from another CA is taken.
    let (other, other_key) = (pki.path("other-client.pem"), pki.path("other-client.key"));
    let from_other_ca = ["--cacert", &ca, "--cert", &other, "--key", &other_key];
    wait_ready(&mut dw, &from_other_ca, &url);
    let none = curl(&["--cacert", &ca], &url);
    assert!(none.status == 0 && none.exit != 0, "{none:?}");

    // The certificate request names the client CA, for a client to choose
    // its certificate by.
    for version in ["-tls1_3", "-tls1_2"] {
        let out = s_client(
            port,
            &[version, "-CAfile", &ca, "-cert", &other, "-key", &other_key],
        );
        let names = out
            .split_once("Acceptable client certificate CA names")
            .map(|(_, rest)| rest.lines().nth(1).unwrap_or_default());
        assert!(
            names.is_some_and(|n| n.contains("dockwarden test ca")),
            "{version}: the request names no client CA:\n{out}"
        );
    }
    // And the operator is told that nothing is checked against it.
    assert!(
        dw.wait_for_log(
            "The client CA is only named to clients: RequireAnyClientCert takes any certificate",
            Duration::from_secs(5)
        ),
        "no warning logged:\n{}",
        dw.log()
    );
    dw.sigterm();
    let status = dw
        .wait_exit(Duration::from_secs(15))
        .expect("dockwarden stops on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", dw.log());
}

#[test]
fn open_probes_need_neither_password_nor_client_certificate() {
    require_docker();
    let pki = Pki::new();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let web = write_web_config(
        pki.dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n\
             basic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash(PASSWORD)
        ),
    );
    let mut dw = start(LOG_ALL, &web, &["--web-open-probes"]);
    let port = dw.addr().port();
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let user = format!("prometheus:{PASSWORD}");
    wait_ready(&mut dw, &["--cacert", &ca], &url("/readyz"));
    for path in ["/healthz", "/readyz"] {
        let got = curl(&["--cacert", &ca], &url(path));
        assert_eq!(got.status, 200, "{path}: {got:?}");
    }
    // Anything else: a certificate, then the password.
    let got = curl(&["--cacert", &ca, "-u", &user], &url("/metrics"));
    assert_eq!(got.status, 403, "{got:?}");
    assert!(
        got.body.contains("client certificate is required"),
        "{got:?}"
    );
    let got = curl(
        &[
            "--cacert",
            &ca,
            "--cert",
            &pki.path("other-client.pem"),
            "--key",
            &pki.path("other-client.key"),
        ],
        &url("/healthz"),
    );
    assert!(
        got.status == 0 && got.exit != 0,
        "a certificate from another CA is still refused: {got:?}"
    );
    let got = curl(
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
        &url("/metrics"),
    );
    assert_eq!(got.status, 401, "{got:?}");
    let got = curl(
        &["--cacert", &ca, "--cert", &cert, "--key", &key, "-u", &user],
        &url("/metrics"),
    );
    assert_eq!(got.status, 200, "{got:?}");

    // The image's health check (exec form, no shell: set by the
    // environment), and the same by flags.
    let mut health = Command::new(env!("CARGO_BIN_EXE_dockwarden"));
    health
        .arg("health")
        .env("DOCKWARDEN_HEALTH_URL", url(""))
        .env("DOCKWARDEN_HEALTH_INSECURE", "1");
    let out = run_with_timeout(health, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && line.starts_with("healthy: "),
        "{out:?}"
    );
    let mut health = Command::new(env!("CARGO_BIN_EXE_dockwarden"));
    health.args(["health", "--insecure", "--url", &url("")]);
    let out = run_with_timeout(health, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && line.starts_with("healthy: "),
        "{out:?}"
    );
    let mut strict = Command::new(env!("CARGO_BIN_EXE_dockwarden"));
    strict
        .args(["health", "--url", &url("")])
        .env_remove("DOCKWARDEN_HEALTH_INSECURE");
    let out = run_with_timeout(strict, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a private CA is not trusted without --insecure: {out:?}"
    );
}

#[test]
fn the_file_is_read_again_when_it_changes() {
    require_docker();
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let config = |hash: &str| {
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        )
    };
    let web = write_web_config(pki.dir.path(), &config(&bcrypt_hash("old-password")));
    let mut dw = start(LOG_ALL, &web, &[]);
    let url = format!("https://127.0.0.1:{}/metrics", dw.addr().port());
    let login = |pw: &str| curl(&["--cacert", &ca, "-u", &format!("prometheus:{pw}")], &url).status;
    wait_ready(
        &mut dw,
        &["--cacert", &ca, "-u", "prometheus:old-password"],
        &url,
    );

    // A new password: the old one is refused, the new one accepted.
    write_web_config(pki.dir.path(), &config(&bcrypt_hash("new-password")));
    assert_eq!(login("old-password"), 401);
    assert_eq!(login("new-password"), 200);
    assert!(
        dw.wait_for_log("Web config changed: reloaded.", Duration::from_secs(5)),
        "{}",
        dw.log()
    );

    // A broken file: the last good one stays, and the log says why.
    write_web_config(
        pki.dir.path(),
        &format!("{}  - not: yaml: here\n", config("x")),
    );
    assert_eq!(login("new-password"), 200);
    assert_eq!(login("old-password"), 401);
    let wanted = format!("{}:", web.display());
    assert!(
        dw.wait_for_log(
            "The web config file changed and cannot be used",
            Duration::from_secs(5)
        ) && dw.log().contains(&wanted),
        "{}",
        dw.log()
    );
    // A bad hash is located on its line.
    write_web_config(pki.dir.path(), &config("plain-text"));
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(login("new-password"), 200);
    let located = format!(
        "{}:5:3: basic_auth_users.prometheus: not a bcrypt hash",
        web.display()
    );
    assert!(
        dw.wait_for_log(&located, Duration::from_secs(5)),
        "{}",
        dw.log()
    );

    // New certificate files (from another CA) are served to the next
    // connection; the file itself is unchanged.
    write_web_config(pki.dir.path(), &config(&bcrypt_hash("new-password")));
    for f in ["pem", "key"] {
        fs::copy(
            pki.path(&format!("other-server.{f}")),
            pki.path(&format!("server.{f}")),
        )
        .expect("rotate");
    }
    let other_ca = pki.path("other-ca.pem");
    assert!(
        wait_until(Duration::from_secs(5), || {
            curl(
                &["--cacert", &other_ca, "-u", "prometheus:new-password"],
                &url,
            )
            .status
                == 200
        }),
        "the rotated certificate is not served; log:\n{}",
        dw.log()
    );
    let old = curl(&["--cacert", &ca, "-u", "prometheus:new-password"], &url);
    assert!(old.status == 0 && old.exit != 0, "{old:?}");

    // TLS cannot be turned off while running.
    write_web_config(
        pki.dir.path(),
        &format!("basic_auth_users:\n  prometheus: {}\n", bcrypt_hash("x")),
    );
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        curl(
            &["--cacert", &other_ca, "-u", "prometheus:new-password"],
            &url
        )
        .status,
        200
    );
    assert!(
        dw.wait_for_log(
            "TLS cannot be turned on or off while dockwarden runs",
            Duration::from_secs(5)
        ),
        "{}",
        dw.log()
    );
    assert_not_logged(&dw, &["new-password", "old-password"]);
}

/// A client guessing passwords cannot make the others wait behind it:
/// bcrypt runs one check at a time, and the turn goes round the clients
/// that wait. Twelve guessers on 127.0.0.2 used to queue twelve checks
/// ahead of Prometheus's first login on 127.0.0.1, which then waited for
/// all of them; now it waits for one or two.
#[test]
fn a_password_guesser_does_not_hold_up_other_clients() {
    require_docker();
    let dir = TempDir::new("web-guesser");
    let web = write_web_config(
        dir.path(),
        &format!(
            "basic_auth_users:\n  prometheus: {}\n  grafana: {}\n",
            bcrypt_hash(PASSWORD),
            bcrypt_hash(PASSWORD)
        ),
    );
    let mut dw = start(LOG_ALL, &web, &[]);
    let url = format!("http://127.0.0.1:{}/metrics", dw.addr().port());
    wait_ready(&mut dw, &["-u", &format!("grafana:{PASSWORD}")], &url);
    // What one check costs here: a login not seen before.
    let timed = |user: &str| {
        let started = Instant::now();
        let status = curl(&["-u", &format!("{user}:{PASSWORD}")], &url).status;
        (status, started.elapsed())
    };
    let (status, one_check) = timed("grafana");
    assert_eq!(status, 200, "a cached login");
    let grafana = bcrypt_hash("another-password-for-grafana");
    write_web_config(
        dir.path(),
        &format!(
            "basic_auth_users:\n  prometheus: {}\n  grafana: {grafana}\n",
            bcrypt_hash(PASSWORD)
        ),
    );
    let started = Instant::now();
    assert_eq!(
        curl(&["-u", "grafana:another-password-for-grafana"], &url).status,
        200
    );
    let one_check = one_check.max(started.elapsed());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guessers: Vec<_> = (0..12)
        .map(|n| {
            let (stop, url) = (stop.clone(), url.clone());
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut guess = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    guess += 1;
                    let user = format!("prometheus:guess-{n}-{guess}");
                    let got = curl(&["--interface", "127.0.0.2", "-u", &user], &url);
                    seen.push(got.status);
                }
                seen
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let (status, took) = timed("prometheus");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<u16> = guessers
        .into_iter()
        .flat_map(|g| g.join().expect("a guesser thread"))
        .collect();
    assert_eq!(status, 200, "{}", dw.log());
    assert!(
        took < one_check * 4,
        "Prometheus's first login took {took:?}, one check {one_check:?}: it waited behind the guesser's checks"
    );
    assert!(seen.contains(&401), "{seen:?}");
    assert!(!seen.contains(&200), "a guess passed: {seen:?}");
}

#[test]
fn emptying_the_users_while_running_is_refused() {
    require_docker();
    let dir = TempDir::new("web-users");
    let good = format!(
        "basic_auth_users:\n  prometheus: {}\n",
        bcrypt_hash(PASSWORD)
    );
    let web = write_web_config(dir.path(), &good);
    let mut dw = start(LOG_ALL, &web, &[]);
    let url = format!("http://127.0.0.1:{}/metrics", dw.addr().port());
    let user = format!("prometheus:{PASSWORD}");
    let with_password = ["-u", user.as_str()];
    let without: [&str; 0] = [];
    wait_ready(&mut dw, &with_password, &url);
    let got = curl(&without, &url);
    assert_eq!(got.status, 401, "{got:?}");

    let refusal = format!(
        "{}: basic_auth_users: the change removes every user",
        web.display()
    );
    for (n, (what, yaml)) in [
        ("an empty file", ""),
        ("basic_auth_users: (null)", "basic_auth_users:\n"),
        ("basic_auth_users: {}", "basic_auth_users: {}\n"),
    ]
    .into_iter()
    .enumerate()
    {
        // In place, as an editor or config management writes: truncated,
        // then written (here: never written again). Not write_web_config,
        // which renames a whole file over it.
        fs::write(&web, yaml).expect("truncate the web config in place");
        // Past the one-second retry of a refused change.
        thread::sleep(Duration::from_millis(1100));
        // The head only: a 200 here carries all the metrics.
        let got = curl(&without, &url);
        assert_eq!(got.status, 401, "{what}: {}\nlog:\n{}", got.head, dw.log());
        assert!(
            got.www_authenticate()
                .is_some_and(|v| v.starts_with("Basic")),
            "{what}: {got:?}"
        );
        let got = curl(&with_password, &url);
        assert_eq!(got.status, 200, "{what}: {got:?}\nlog:\n{}", dw.log());
        // Logged once per refusal: the good file is put back below, which
        // clears it, so each variant adds one line.
        assert!(
            wait_until(Duration::from_secs(5), || {
                dw.log().matches(&refusal).count() == n + 1
            }),
            "{what}: wanted refusal {} of {refusal:?}; log:\n{}",
            n + 1,
            dw.log()
        );
        write_web_config(dir.path(), &good);
        let got = curl(&with_password, &url);
        assert_eq!(got.status, 200, "{what}, put back: {got:?}");
    }
    let log = dw.log();
    assert!(
        log.contains("restart dockwarden") && log.contains("without --web-config"),
        "the refusal says how to turn basic auth off:\n{log}"
    );
    assert_not_logged(&dw, &[PASSWORD]);
}

#[test]
fn a_bad_file_at_startup_exits_2_naming_file_line_and_column() {
    let dir = TempDir::new("web-bad");
    for (yaml, wanted) in [
        (
            "tls_server_config:\n  cert_file: a.pem\n  keyfile: a.key\n",
            ":3:3: tls_server_config: unknown field `keyfile`",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
            ":2:3: tls_server_config.cert_file: cannot read ",
        ),
        (
            "basic_auth_users:\n  prometheus: secret\n",
            ":2:3: basic_auth_users.prometheus: not a bcrypt hash",
        ),
    ] {
        let web = write_web_config(dir.path(), yaml);
        let mut dw = start(LOG_ALL, &web, &[]);
        let status = dw
            .wait_exit(Duration::from_secs(20))
            .expect("dockwarden exits");
        let log = dw.log();
        assert_eq!(status.code(), Some(2), "{yaml}\n{log}");
        assert!(
            log.contains(&format!("{}{wanted}", web.display())),
            "{yaml}\nwanted {wanted}\n{log}"
        );
    }
}

/// `prometheus` on a free loopback port with the config `yaml`, in `dir`.
/// Stopped (SIGTERM, then SIGKILL) on drop; its log is printed if the test
/// is failing.
struct Prometheus {
    server: common::prometheus::Prometheus,
}

impl Prometheus {
    fn start(dir: &Path, yaml: &str) -> Self {
        require_tool("prometheus", "prometheus");
        let config = dir.join("prometheus.yml");
        fs::write(&config, yaml).expect("write prometheus.yml");
        Self {
            server: common::prometheus::Prometheus::start(dir, &config),
        }
    }

    fn log(&self) -> String {
        self.server.log()
    }

    /// `GET /api/v1/PATH` → its `data`, or why not.
    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        self.server
            .api(path_and_query, &format!("GET /api/v1/{path_and_query}"))
    }

    /// The value of `up{job="JOB"}`, if scraped yet.
    fn up(&self, job: &str) -> Option<String> {
        let data = self
            .api(&format!("query?query=up%7Bjob%3D%22{job}%22%7D"))
            .ok()?;
        data["result"][0]["value"][1].as_str().map(str::to_owned)
    }

    /// The last scrape error of `job`'s target.
    fn last_error(&self, job: &str) -> String {
        let data = self.api("targets").unwrap_or_default();
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["labels"]["job"] == job)
            .map(|t| t["lastError"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }
}

#[test]
fn prometheus_scrapes_over_tls_with_a_client_certificate_and_basic_auth() {
    require_tool("prometheus", "prometheus");
    require_docker();
    let pki = Pki::new();
    let web = write_web_config(
        pki.dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n\
             basic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash(PASSWORD)
        ),
    );
    let mut dw = start(LOG_ALL, &web, &[]);
    let ca = pki.path("ca.pem");
    let readyz = format!("https://127.0.0.1:{}/readyz", dw.addr().port());
    wait_ready(
        &mut dw,
        &[
            "--cacert",
            &ca,
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
            "-u",
            &format!("prometheus:{PASSWORD}"),
        ],
        &readyz,
    );
    fs::write(pki.dir.path().join("password"), PASSWORD).expect("password file");
    fs::write(pki.dir.path().join("wrong"), WRONG).expect("wrong password file");
    let job = |name: &str, password_file: &str| {
        format!(
            "  - job_name: {name}
    scheme: https
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
    basic_auth:
      username: prometheus
      password_file: {pw}
    static_configs:
      - targets: ['{target}']
",
            ca = ca,
            cert = pki.path("client.pem"),
            key = pki.path("client.key"),
            pw = pki.path(password_file),
            target = dw.addr(),
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
        job("dockwarden", "password"),
        job("dockwarden-wrong-password", "wrong")
    );
    let prom_dir = TempDir::new("web-prometheus");
    let prom = Prometheus::start(prom_dir.path(), &config);
    let started = Instant::now();
    let up = wait_until(Duration::from_secs(30), || {
        prom.up("dockwarden").as_deref() == Some("1")
            && prom.up("dockwarden-wrong-password").is_some()
    });
    assert!(
        up,
        "Prometheus did not report up == 1 within 30 s: up={:?}, lastError={:?}",
        prom.up("dockwarden"),
        prom.last_error("dockwarden")
    );
    println!("up == 1 after {:.1?}", started.elapsed());
    assert_eq!(prom.up("dockwarden-wrong-password").as_deref(), Some("0"));
    let error = prom.last_error("dockwarden-wrong-password");
    assert!(error.contains("401"), "{error}");
    // What it scraped is dockwarden's.
    let data = prom
        .api("query?query=dockwarden_stream_connected")
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()));
    assert_eq!(data["result"][0]["value"][1], "1", "{data}");
    assert_not_logged(&dw, &[WRONG, PASSWORD]);
}
