//! Every Docker API call dockwarden makes, with its method and path as a
//! socket proxy sees them, and how to tell that a proxy refused one.
//!
//! A socket proxy (HAProxy with an allow list, `tecnativa/docker-socket-proxy`,
//! an authorization plugin) answers a call it does not allow with `403`; its
//! body is often an HTML page, not the engine's JSON. [`denied`] recognises
//! that answer, [`plain`] makes its body one readable line, and [`Call::hint`]
//! says what to allow. `deploy/README.md` and `deploy/socket-proxy/` list the
//! same calls; a unit test keeps the README's table in step with [`Call::ALL`].
//!
//! It must not decide what to call, nor log or count a denial: callers name
//! the call they made, and `internal_events::denied` reports it.

/// One kind of Docker API call, with its IDs left out (`{id}`), so that every
/// container or exec gives the same one: log it once, count it under a fixed
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    /// `GET /version`: the API version, negotiated at each connection.
    Version,
    /// `GET /v1.NN/events`: the event stream and the idle probe.
    Events,
    /// `GET /containers/json`: the resync's listing.
    ContainerList,
    /// `GET /containers/{id}/json`.
    ContainerInspect,
    /// `GET /containers/{id}/stats`: the status API's `stats=true`.
    ContainerStats,
    /// `GET /exec/{id}/json`: the exec audit's enrichment.
    ExecInspect,
    /// `POST /containers/{id}/restart`.
    ContainerRestart,
    /// `POST /containers/{id}/update`: `raise_memory`.
    ContainerUpdate,
    /// `POST /containers/{id}/stop`: `recreate`, when the old one runs.
    ContainerStop,
    /// `POST /containers/{id}/rename`: `recreate`, and its rollback.
    ContainerRename,
    /// `POST /containers/create`: `recreate`.
    ContainerCreate,
    /// `POST /networks/{id}/connect`: `recreate`, each network but the first.
    NetworkConnect,
    /// `POST /containers/{id}/start`: `recreate`, and its rollback.
    ContainerStart,
    /// `DELETE /containers/{id}`: `recreate` (the old one, or the new one in
    /// a rollback).
    ContainerRemove,
}

impl Call {
    /// Every call, reads first.
    pub const ALL: [Call; 14] = [
        Call::Version,
        Call::Events,
        Call::ContainerList,
        Call::ContainerInspect,
        Call::ContainerStats,
        Call::ExecInspect,
        Call::ContainerRestart,
        Call::ContainerUpdate,
        Call::ContainerStop,
        Call::ContainerRename,
        Call::ContainerCreate,
        Call::NetworkConnect,
        Call::ContainerStart,
        Call::ContainerRemove,
    ];

    /// `GET`, `POST` or `DELETE`.
    pub fn method(self) -> &'static str {
        match self {
            Call::Version
            | Call::Events
            | Call::ContainerList
            | Call::ContainerInspect
            | Call::ContainerStats
            | Call::ExecInspect => "GET",
            Call::ContainerRemove => "DELETE",
            _ => "POST",
        }
    }

    /// The path without the API version prefix and the query, IDs as `{id}`.
    pub fn path(self) -> &'static str {
        match self {
            Call::Version => "/version",
            Call::Events => "/events",
            Call::ContainerList => "/containers/json",
            Call::ContainerInspect => "/containers/{id}/json",
            Call::ContainerStats => "/containers/{id}/stats",
            Call::ExecInspect => "/exec/{id}/json",
            Call::ContainerRestart => "/containers/{id}/restart",
            Call::ContainerUpdate => "/containers/{id}/update",
            Call::ContainerStop => "/containers/{id}/stop",
            Call::ContainerRename => "/containers/{id}/rename",
            Call::ContainerCreate => "/containers/create",
            Call::NetworkConnect => "/networks/{id}/connect",
            Call::ContainerStart => "/containers/{id}/start",
            Call::ContainerRemove => "/containers/{id}",
        }
    }

    /// Whether it changes anything: a `--dry-run` never makes such a call.
    pub fn mutates(self) -> bool {
        self.method() != "GET"
    }

    /// What an operator does about a denial.
    pub fn hint(self) -> String {
        format!(
            "allow {} {} in the socket proxy",
            self.method(),
            self.path()
        )
    }

    /// The call a request is, from its method and path as sent (with or
    /// without `/v1.NN` and a query): `("POST", "/v1.41/containers/ab12/restart?t=10")`
    /// → [`Call::ContainerRestart`].
    pub fn of(method: &str, path: &str) -> Option<Call> {
        let path = path.split('?').next().unwrap_or(path);
        let path = match path.strip_prefix("/v") {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_digit())
                    && rest.find('/').is_some_and(|i| {
                        rest[..i].chars().all(|c| c.is_ascii_digit() || c == '.')
                    }) =>
            {
                rest.find('/').map_or(path, |i| &rest[i..])
            }
            _ => path,
        };
        let segments: Vec<&str> = path.split('/').collect();
        Call::ALL.into_iter().find(|call| {
            call.method().eq_ignore_ascii_case(method)
                && call.path().split('/').count() == segments.len()
                && call.path().split('/').zip(&segments).all(|(want, got)| {
                    want == *got || (want == "{id}" && !got.is_empty() && !is_word(got))
                })
        })
    }
}

/// Path words that are not IDs, so `/containers/json` is never taken for
/// an inspect of a container called `json`.
fn is_word(segment: &str) -> bool {
    matches!(segment, "json" | "create")
}

/// The proxy's (or the engine's) message if `e` is a refusal: an HTTP 403.
pub fn denied(e: &bollard::errors::Error) -> Option<&str> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message,
        } => Some(message),
        _ => None,
    }
}

/// An error body as one short line of text: an HTML page (HAProxy's
/// `<html><body><h1>403 Forbidden</h1>…`) loses its tags, whitespace is
/// collapsed, and it is cut at 200 characters.
pub fn plain(message: &str) -> String {
    let mut text = String::with_capacity(message.len().min(256));
    let mut in_tag = false;
    for c in message.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = line.char_indices().nth(200) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_sent_map_to_their_call() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("GET", "/version".to_owned(), Some(Call::Version)),
            (
                "GET",
                "/v1.41/events?since=1.5".to_owned(),
                Some(Call::Events),
            ),
            (
                "GET",
                "/containers/json?all=true&size=false".to_owned(),
                Some(Call::ContainerList),
            ),
            (
                "GET",
                format!("/containers/{id}/json"),
                Some(Call::ContainerInspect),
            ),
            (
                "GET",
                "/containers/web-1/stats?stream=false".to_owned(),
                Some(Call::ContainerStats),
            ),
            ("GET", format!("/exec/{id}/json"), Some(Call::ExecInspect)),
            (
                "POST",
                format!("/v1.41/containers/{id}/restart?t=10"),
                Some(Call::ContainerRestart),
            ),
            (
                "POST",
                "/containers/create?name=web&platform=".to_owned(),
                Some(Call::ContainerCreate),
            ),
            (
                "POST",
                "/networks/net-a/connect".to_owned(),
                Some(Call::NetworkConnect),
            ),
            (
                "DELETE",
                format!("/containers/{id}?v=false&force=true"),
                Some(Call::ContainerRemove),
            ),
            ("GET", format!("/containers/{id}/restart"), None),
            ("POST", format!("/containers/{id}/exec"), None),
            ("GET", "/images/json".to_owned(), None),
            ("GET", "/v1.41/info".to_owned(), None),
        ];
        for (method, path, want) in cases {
            assert_eq!(Call::of(method, &path), want, "{method} {path}");
        }
        for call in Call::ALL {
            assert_eq!(Call::of(call.method(), call.path()), Some(call));
        }
    }

    #[test]
    fn reads_are_the_calls_a_dry_run_makes() {
        let reads: Vec<&str> = Call::ALL
            .iter()
            .filter(|c| !c.mutates())
            .map(|c| c.path())
            .collect();
        assert_eq!(
            reads,
            [
                "/version",
                "/events",
                "/containers/json",
                "/containers/{id}/json",
                "/containers/{id}/stats",
                "/exec/{id}/json"
            ]
        );
        assert_eq!(
            Call::ContainerRestart.hint(),
            "allow POST /containers/{id}/restart in the socket proxy"
        );
    }

    #[test]
    fn a_403_is_a_denial_and_its_html_becomes_one_line() {
        let html = "<html><body><h1>403 Forbidden</h1>\nRequest forbidden by administrative rules.\n</body></html>\n";
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message: html.to_owned(),
        };
        assert_eq!(
            denied(&e).map(plain).as_deref(),
            Some("403 Forbidden Request forbidden by administrative rules.")
        );
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x".to_owned(),
        };
        assert!(denied(&e).is_none());
        assert_eq!(plain("No such container: x"), "No such container: x");
        assert_eq!(plain(&"x".repeat(300)).chars().count(), 201);
    }

    /// `deploy/README.md`'s table of API calls names every call, as
    /// `METHOD path`.
    #[test]
    fn the_deploy_readme_lists_every_call() {
        let readme = include_str!("../../deploy/README.md");
        for call in Call::ALL {
            let named = format!("`{} {}", call.method(), call.path());
            assert!(
                readme.contains(&named),
                "deploy/README.md does not name {named}`"
            );
        }
    }
}
