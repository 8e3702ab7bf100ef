//! Errors of the Kubernetes executor.
//!
//! Invariant: an error that ends a task is turned into a task report in one
//! place (`executor`), with the message naming the object and the reason.

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    #[error("Kubernetes API: {action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// An object built from a launch did not have the shape Kubernetes
    /// expects (e.g. a pod template that is not a partial Pod).
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
    /// The scheduler cannot run this group as asked.
    #[error("{0}")]
    Unschedulable(String),
}

impl KubeError {
    pub fn api(action: &'static str, kind: &'static str, name: &str, source: kube::Error) -> Self {
        KubeError::Api {
            action,
            kind,
            name: name.to_string(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, message: impl ToString) -> Self {
        KubeError::Invalid {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// True when the API said the object already exists (a re-dispatch).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// True when the API said the object does not exist.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
