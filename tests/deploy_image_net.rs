//! What the static binary in the scratch image (no libc, no CA store) does
//! about the network, against the real engine: host names resolve through
//! the engine's DNS (`DOCKER_HOST=tcp://NAME:PORT`, a webhook URL), and HTTPS
//! checks certificates against the roots built into the binary.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::deploy::{docker_quiet, expect_success, logs_of, require_image, socket_mount, tool};
use common::{
    Cleanup, TempDir, docker, docker_ok, free_local_addr, test_image, unique, wait_until,
};

/// Builds an image holding the host's socat and the libraries it links, as
/// a TCP proxy to the engine socket inside a container network; removed on
/// drop.
struct SocatImage(String);

impl SocatImage {
    fn build(dir: &Path) -> Self {
        let socat = expect_success(
            "which socat",
            &tool(
                "sh",
                &["-c", "command -v socat"],
                &[],
                Duration::from_secs(10),
            ),
        );
        assert!(
            !socat.is_empty(),
            "socat is not installed (scripts/test installs it)"
        );
        let ldd = expect_success(
            "ldd socat",
            &tool("ldd", &[&socat], &[], Duration::from_secs(10)),
        );
        let root = dir.join("socat-root");
        let files = std::iter::once(socat.as_str())
            .chain(ldd.split_whitespace().filter(|w| w.starts_with('/')));
        for file in files {
            let to = root.join(file.trim_start_matches('/'));
            fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
            fs::copy(file, &to).unwrap_or_else(|e| panic!("cannot copy {file}: {e}"));
        }
        let tar = dir.join("socat.tar");
        expect_success(
            "tar socat",
            &tool(
                "tar",
                &[
                    "-C",
                    &root.to_string_lossy(),
                    "-cf",
                    &tar.to_string_lossy(),
                    ".",
                ],
                &[],
                Duration::from_secs(30),
            ),
        );
        let name = format!(
            "{}:latest",
            unique("socat").replacen("dwt-", "dockwarden-test/", 1)
        );
        docker_ok(&["import", &tar.to_string_lossy(), &name]);
        SocatImage(name)
    }
}

impl Drop for SocatImage {
    fn drop(&mut self) {
        docker_quiet(&["image", "rm", "-f", &self.0], Duration::from_secs(60));
    }
}

#[test]
fn a_static_binary_resolves_host_names_for_docker_host_and_webhooks() {
    let image = require_image();
    let dir = TempDir::new("dns");
    // Before the cleanup, so it is dropped after the containers using it.
    let socat = SocatImage::build(dir.path());
    let cleanup = Cleanup::new();
    // A user-defined network: containers resolve each other through the
    // engine's DNS server, named in /etc/resolv.conf (no /etc/hosts entry).
    let net = cleanup.network(unique("dns"));
    docker_ok(&["network", "create", &net]);
    let proxy = cleanup.container(unique("dockerd"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &proxy,
        "--network",
        &net,
        "--network-alias",
        "engine-proxy",
        "-v",
        &socket_mount(),
        &socat.0,
        "/usr/bin/socat",
        "TCP-LISTEN:2375,fork,reuseaddr",
        "UNIX-CONNECT:/var/run/docker.sock",
    ]);
    let hooks = cleanup.container(unique("hooks"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &hooks,
        "--network",
        &net,
        "--network-alias",
        "hooks-server",
        &test_image(),
        "sh",
        "-c",
        "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho ok\\n' \
         > /www/cgi-bin/hook && chmod +x /www/cgi-bin/hook && exec httpd -f -p 8080 -h /www",
    ]);
    let rules = dir.path().join("rules.toml");
    fs::write(
        &rules,
        "[notify.targets.hook]\nkind = \"webhook\"\nurl = \"http://hooks-server:8080/cgi-bin/hook\"\n\n\
         [[rule]]\nname = \"log-crashes\"\non = [\"container.die\"]\nhandler = \"log\"\n",
    )
    .expect("write rules");
    let rules_mount = format!("{}:/etc/dockwarden/rules.toml:ro", rules.display());

    // DOCKER_HOST=tcp://NAME:PORT: the sidecar connects through the proxy.
    let sidecar = cleanup.container(unique("sidecar"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &sidecar,
        "--network",
        &net,
        "-e",
        "DOCKER_HOST=tcp://engine-proxy:2375",
        "-v",
        &rules_mount,
        &image,
    ]);
    let mut said = String::new();
    let ready = wait_until(Duration::from_secs(30), || {
        let out = docker(&["exec", &sidecar, "dockwarden", "health"]);
        said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    });
    assert!(
        ready,
        "not ready through tcp://engine-proxy:2375: {said}; {}",
        logs_of(&sidecar)
    );
    assert!(
        logs_of(&sidecar).contains("\"endpoint\":\"tcp://engine-proxy:2375\""),
        "{}",
        logs_of(&sidecar)
    );

    // A webhook URL with a host name.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        &net,
        "-v",
        &rules_mount,
        &image,
        "notify",
        "test",
        "--rules",
        "/etc/dockwarden/rules.toml",
        "hook",
    ]);
    let said = expect_success(
        "dockwarden notify test hook (http://hooks-server:8080/...)",
        &out,
    );
    assert_eq!(said, "hook: HTTP 200");
}

#[test]
fn https_is_verified_against_the_bundled_roots_only() {
    let image = require_image();
    let dir = TempDir::new("tls");
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| {
        expect_success(
            &format!("openssl {}", args.join(" ")),
            &tool("openssl", args, &[], Duration::from_secs(60)),
        )
    };
    // A private CA and a certificate it signed for localhost.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=dockwarden-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &d("leaf.key"),
        "-out",
        &d("leaf.csr"),
        "-subj",
        "/CN=localhost",
    ]);
    fs::write(
        d("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d("leaf.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-out",
        &d("leaf.pem"),
        "-days",
        "2",
        "-extfile",
        &d("ext"),
    ]);
    let addr = free_local_addr();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &addr.to_string()])
            .args(["-cert", &d("leaf.pem"), "-key", &d("leaf.key")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server (scripts/test installs openssl)"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "openssl s_server does not listen on {addr}"
    );
    let rules = dir.path().join("rules.toml");
    fs::write(
        &rules,
        format!(
            "[notify.targets.tls]\nkind = \"webhook\"\nurl = \"https://localhost:{}/hook\"\n\n\
             [[rule]]\nname = \"x\"\non = [\"container.die\"]\nhandler = \"log\"\n",
            addr.port()
        ),
    )
    .expect("write rules");

    // The handshake runs and the certificate is checked: a private CA is
    // unknown to the bundled roots, also when SSL_CERT_FILE names it.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &format!("{}:/r.toml:ro", rules.display()),
        "-v",
        &format!("{}:/ca.pem:ro", d("ca.pem")),
        "-e",
        "SSL_CERT_FILE=/ca.pem",
        &image,
        "notify",
        "test",
        "--rules",
        "/r.toml",
        "tls",
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("tls: failed: ") && said.contains("invalid peer certificate: UnknownIssuer"),
        "{said}"
    );
}
