//! A Docker API call refused with 403: a socket proxy's allow list (or an
//! authorization plugin) does not let it through.
//!
//! Each call (method and path, IDs as `{id}`) is logged once per process,
//! with what to allow; every denial is counted in
//! `dockwarden_engine_calls_denied_total{method,path}`. Callers never retry a
//! denied call on the spot: the answer will not change until the proxy's
//! configuration does.

use tracing::{debug, error};

use super::InternalEvent;
use crate::docker::calls::{self, Call};
use crate::metrics::Metrics;

/// One refused call.
pub struct CallDenied<'a> {
    pub call: Call,
    /// What dockwarden was doing, e.g. `restart web-1`.
    pub during: &'a str,
    /// The answer's body (HAProxy's is an HTML page).
    pub message: &'a str,
}

impl InternalEvent for CallDenied<'_> {
    fn emit(&self, metrics: &Metrics) {
        let (method, path) = (self.call.method(), self.call.path());
        if metrics.engine_call_denied(method, path) {
            let message = calls::plain(self.message);
            error!(
                method,
                path,
                status = 403,
                during = %self.during,
                answer = %message,
                hint = %self.call.hint(),
                "Docker API call denied: {method} {path} (403). Hint: {}. Later denials of this call are counted in dockwarden_engine_calls_denied_total, not logged.",
                self.call.hint()
            );
        } else {
            debug!(method, path, during = %self.during, "Docker API call denied again.");
        }
    }
}

/// Reports `e` if it is a denial of `call`; true if it was.
pub fn report(metrics: &Metrics, call: Call, during: &str, e: &bollard::errors::Error) -> bool {
    match calls::denied(e) {
        Some(message) => {
            CallDenied {
                call,
                during,
                message,
            }
            .emit(metrics);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_403_is_a_denial_and_every_one_is_counted() {
        let metrics = Metrics::new();
        let denied = bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message: "<html><body><h1>403 Forbidden</h1></body></html>".into(),
        };
        let gone = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container".into(),
        };
        assert!(report(
            &metrics,
            Call::ContainerRestart,
            "restart a",
            &denied
        ));
        assert!(report(
            &metrics,
            Call::ContainerRestart,
            "restart b",
            &denied
        ));
        assert!(!report(
            &metrics,
            Call::ContainerRestart,
            "restart c",
            &gone
        ));
        let text = metrics.render();
        assert!(
            text.contains(
                "dockwarden_engine_calls_denied_total{method=\"POST\",path=\"/containers/{id}/restart\"} 2"
            ),
            "{text}"
        );
        // The first denial of a call is the one logged.
        assert!(!metrics.engine_call_denied("POST", "/containers/{id}/restart"));
        assert!(metrics.engine_call_denied("GET", "/exec/{id}/json"));
    }
}
