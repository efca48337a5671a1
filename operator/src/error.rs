//! The operator's error type. Variants double as the `kind` label of the error metric.
//! No variant carries Secret data: API errors name the object, never its contents.

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was attempted (`apply Deployment ns/name`).
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The resource has no namespace (it is namespaced; should not happen).
    #[error("SwappoMessaging {0} has no namespace")]
    MissingNamespace(String),
    /// A built object could not be serialized (a bug).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// The object.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Configuration is unusable (flags, kubeconfig).
    #[error("configuration: {0}")]
    Config(String),
    /// Another replica holds the leader Lease now; this one stopped reconciling.
    #[error("lost the leader lease {0}")]
    LostLeadership(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

impl Error {
    /// A short label for metrics (`swappo_operator_reconcile_errors_total{kind=..}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 => "forbidden",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 422 => "invalid",
            Error::Kube { .. } => "kube_api",
            Error::MissingNamespace(_) => "missing_namespace",
            Error::Serialize { .. } => "serialize",
            Error::Config(_) => "config",
            Error::LostLeadership(_) => "lost_leadership",
            Error::Http(_) => "http",
        }
    }

    /// Wraps a kube error with what was attempted.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
