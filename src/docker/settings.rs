//! Where the engine is, as the docker CLI reads it: `DOCKER_HOST`,
//! `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH` (else `DOCKER_CONFIG`, else
//! `~/.docker`), and the rules file's `[engine]` section, which the
//! environment overrides.
//!
//! It owns the precedence of those settings and reading `[engine]`; it must
//! not connect: [`super::Endpoint`] and the source do.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::tls::{self, TlsEndpoint, TlsFile, TlsFiles};
use super::{DEFAULT_SOCKET, DockerError, Endpoint};
use crate::config::table::Table;

/// Where the docker CLI goes when TLS is on and no host is given.
pub const DEFAULT_TLS_HOST: &str = "tcp://localhost:2376";

/// A path from the rules file, with its place for `dockwarden check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub path: PathBuf,
    pub span: Range<usize>,
}

/// `[engine]`: how to reach the engine. Each key is overridden by its
/// environment variable, as the docker CLI reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// `unix:///path` or `tcp://host:port`; `DOCKER_HOST` overrides.
    pub host: Option<String>,
    /// TLS, verifying the engine's certificate against `ca.pem`, and
    /// presenting `cert.pem`; a non-empty `DOCKER_TLS_VERIFY` turns it on.
    pub tls_verify: bool,
    /// The directory holding `ca.pem`, `cert.pem`, `key.pem`;
    /// `DOCKER_CERT_PATH` overrides.
    pub cert_path: Option<Placed>,
    /// Each file on its own, instead of `cert_path`'s.
    pub ca_file: Option<Placed>,
    pub cert_file: Option<Placed>,
    pub key_file: Option<Placed>,
}

/// Reads `[engine]` from the rules file's top table.
pub fn read(top: &mut Table<'_, '_>, span: &Range<usize>) -> EngineConfig {
    let diags = top.collector();
    let mut t = top
        .table("engine", "[engine]")
        .unwrap_or_else(|| Table::absent("[engine]", span.clone(), diags));
    let host = t.str("host").and_then(|(h, s)| match Endpoint::parse(h) {
        Ok(_) => Some(h.to_owned()),
        Err(e) => {
            let why = match e {
                DockerError::BadHost { why, .. } => why,
                _ => "expected unix:///path or tcp://host:port",
            };
            t.error(s, format!("`host` in [engine]: {why}, found \"{h}\""));
            None
        }
    });
    let tls_verify = t.bool("tls_verify", false);
    let mut path = |key: &'static str| {
        let (p, s) = t.str(key)?;
        if p.trim().is_empty() {
            t.error(s, format!("`{key}` in [engine] must not be empty"));
            return None;
        }
        Some(Placed {
            path: p.into(),
            span: s,
        })
    };
    let config = EngineConfig {
        host,
        tls_verify,
        cert_path: path("cert_path"),
        ca_file: path("ca_file"),
        cert_file: path("cert_file"),
        key_file: path("key_file"),
    };
    t.finish();
    config
}

impl EngineConfig {
    /// The certificate files this section names that cannot be used, each
    /// at the place that names it: what `dockwarden check` reports. (`run`
    /// instead keeps retrying: a file may be mounted later.)
    pub fn file_problems(&self) -> Vec<(Range<usize>, String)> {
        let pick = |own: &Option<Placed>, name: &str| match (own, &self.cert_path) {
            (Some(p), _) => Some((p.path.clone(), p.span.clone(), own_key(name))),
            (None, Some(dir)) => Some((dir.path.join(name), dir.span.clone(), "cert_path")),
            (None, None) => None,
        };
        let files = [
            pick(&self.ca_file, "ca.pem"),
            pick(&self.cert_file, "cert.pem"),
            pick(&self.key_file, "key.pem"),
        ];
        let problems = tls::check_files(
            files
                .each_ref()
                .map(|f| f.as_ref().map(|(path, _, _)| path.as_path())),
        );
        files
            .into_iter()
            .zip(problems)
            .filter_map(|(file, problem)| {
                let (_, span, key) = file?;
                Some((span, format!("`{key}` in [engine]: {}", problem?)))
            })
            .collect()
    }
}

fn own_key(name: &str) -> &'static str {
    match name {
        "ca.pem" => "ca_file",
        "cert.pem" => "cert_file",
        _ => "key_file",
    }
}

/// The endpoint from the environment and `config`, the environment first.
pub(super) fn resolve(
    config: &EngineConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, DockerError> {
    let set = |key: &str| {
        env(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    // As the docker CLI: any non-empty value turns TLS on (even "0"); the
    // variables can only turn it on, never off.
    let verify = set("DOCKER_TLS_VERIFY").is_some() || config.tls_verify;
    let tls_only = set("DOCKER_TLS").is_some();
    let host = match set("DOCKER_HOST").or_else(|| config.host.clone()) {
        Some(h) => h,
        None if verify || tls_only => DEFAULT_TLS_HOST.to_owned(),
        None => return Ok(Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET))),
    };
    let endpoint = Endpoint::parse(&host)?;
    let Endpoint::Tcp(addr) = endpoint else {
        // TLS settings concern TCP only, as for the docker CLI.
        return Ok(endpoint);
    };
    if !verify && tls_only {
        return Err(DockerError::BadTls {
            why: "DOCKER_TLS without DOCKER_TLS_VERIFY (TLS that does not verify the engine's \
                  certificate) is not supported: set DOCKER_TLS_VERIFY=1 and give the engine's CA \
                  as ca.pem"
                .to_owned(),
        });
    }
    if !verify {
        return Ok(Endpoint::Tcp(addr));
    }
    if host.starts_with("http://") {
        return Err(DockerError::BadHost {
            host,
            why: "http:// is plain HTTP, but TLS is on (DOCKER_TLS_VERIFY or [engine] tls_verify); use tcp://",
        });
    }
    let files = files(config, &set);
    TlsEndpoint::new(addr, files)
        .map(Endpoint::Tls)
        .map_err(|why| DockerError::BadHost { host, why })
}

/// Where `ca.pem`, `cert.pem` and `key.pem` are: `DOCKER_CERT_PATH`, else
/// the rules file's own file, else its `cert_path`, else `DOCKER_CONFIG`,
/// else `~/.docker`.
fn files(config: &EngineConfig, set: &dyn Fn(&str) -> Option<String>) -> TlsFiles {
    let env_dir = set("DOCKER_CERT_PATH");
    let default_dir = match set("DOCKER_CONFIG") {
        Some(d) => (PathBuf::from(d), "DOCKER_CONFIG"),
        None => (
            Path::new(&set("HOME").unwrap_or_else(|| "/".to_owned())).join(".docker"),
            "the default directory, ~/.docker",
        ),
    };
    let pick = |own: &Option<Placed>, name: &str| -> TlsFile {
        let (path, from) = match (&env_dir, own, &config.cert_path) {
            (Some(dir), _, _) => (Path::new(dir).join(name), "DOCKER_CERT_PATH".to_owned()),
            (None, Some(p), _) => (p.path.clone(), format!("[engine] {}", own_key(name))),
            (None, None, Some(dir)) => (dir.path.join(name), "[engine] cert_path".to_owned()),
            (None, None, None) => (default_dir.0.join(name), default_dir.1.to_owned()),
        };
        TlsFile { path, from }
    };
    TlsFiles {
        ca: pick(&config.ca_file, "ca.pem"),
        cert: pick(&config.cert_file, "cert.pem"),
        key: pick(&config.key_file, "key.pem"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(config: &EngineConfig, vars: &[(&str, &str)]) -> Result<Endpoint, DockerError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve(config, &move |k| {
            vars.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        })
    }

    fn tls(e: Result<Endpoint, DockerError>) -> TlsEndpoint {
        match e {
            Ok(Endpoint::Tls(t)) => t,
            other => panic!("expected TLS, got {other:?}"),
        }
    }

    #[test]
    fn the_environment_reads_like_the_docker_cli() {
        let none = EngineConfig::default();
        assert_eq!(
            resolve_with(&none, &[]).ok(),
            Some(Endpoint::Unix(DEFAULT_SOCKET.into()))
        );
        assert_eq!(
            resolve_with(&none, &[("DOCKER_HOST", "tcp://h:2375")]).ok(),
            Some(Endpoint::Tcp("h:2375".into()))
        );
        let t = tls(resolve_with(
            &none,
            &[
                ("DOCKER_HOST", "tcp://docker.example:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", "/certs"),
            ],
        ));
        assert_eq!(t.addr, "docker.example:2376");
        assert_eq!(t.host, "docker.example");
        assert_eq!(t.files.ca.path, PathBuf::from("/certs/ca.pem"));
        assert_eq!(t.files.key.path, PathBuf::from("/certs/key.pem"));
        assert_eq!(t.files.cert.from, "DOCKER_CERT_PATH");
        // No DOCKER_CERT_PATH: DOCKER_CONFIG, else ~/.docker.
        let t = tls(resolve_with(
            &none,
            &[("DOCKER_TLS_VERIFY", "1"), ("HOME", "/home/op")],
        ));
        assert_eq!(t.addr, "localhost:2376", "the CLI's default TLS host");
        assert_eq!(
            t.files.cert.path,
            PathBuf::from("/home/op/.docker/cert.pem")
        );
        let t = tls(resolve_with(
            &none,
            &[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CONFIG", "/etc/docker-client"),
            ],
        ));
        assert_eq!(t.files.ca.path, PathBuf::from("/etc/docker-client/ca.pem"));
        // TLS settings do not apply to a unix socket.
        assert_eq!(
            resolve_with(
                &none,
                &[
                    ("DOCKER_HOST", "unix:///s.sock"),
                    ("DOCKER_TLS_VERIFY", "1")
                ]
            )
            .ok(),
            Some(Endpoint::Unix("/s.sock".into()))
        );
        // TLS without verification is refused, in one line.
        let e = resolve_with(
            &none,
            &[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS", "1")],
        )
        .expect_err("refused");
        assert!(e.to_string().contains("DOCKER_TLS_VERIFY"), "{e}");
        assert!(!e.to_string().contains('\n'));
        assert!(
            resolve_with(
                &none,
                &[("DOCKER_HOST", "http://h:2376"), ("DOCKER_TLS_VERIFY", "1")]
            )
            .is_err()
        );
    }

    #[test]
    fn the_environment_overrides_the_rules_file() {
        let placed = |p: &str| {
            Some(Placed {
                path: p.into(),
                span: 0..1,
            })
        };
        let file = EngineConfig {
            host: Some("tcp://10.0.0.5:2376".into()),
            tls_verify: true,
            cert_path: placed("/etc/dockwarden/docker"),
            ca_file: placed("/etc/ssl/engine-ca.pem"),
            cert_file: None,
            key_file: None,
        };
        let t = tls(resolve_with(&file, &[]));
        assert_eq!(t.addr, "10.0.0.5:2376");
        assert_eq!(t.files.ca.path, PathBuf::from("/etc/ssl/engine-ca.pem"));
        assert_eq!(t.files.ca.from, "[engine] ca_file");
        assert_eq!(
            t.files.cert.path,
            PathBuf::from("/etc/dockwarden/docker/cert.pem")
        );
        assert_eq!(t.files.cert.from, "[engine] cert_path");
        let t = tls(resolve_with(
            &file,
            &[
                ("DOCKER_HOST", "tcp://other:2376"),
                ("DOCKER_CERT_PATH", "/env"),
            ],
        ));
        assert_eq!(t.addr, "other:2376");
        assert_eq!(t.files.ca.path, PathBuf::from("/env/ca.pem"));
        // The file alone turns TLS on; an empty variable changes nothing.
        let plain = EngineConfig {
            tls_verify: false,
            ..file
        };
        assert_eq!(
            resolve_with(&plain, &[("DOCKER_TLS_VERIFY", "")]).ok(),
            Some(Endpoint::Tcp("10.0.0.5:2376".into()))
        );
    }
}
