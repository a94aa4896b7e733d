//! Kubernetes metadata for the brokers the observer watches.
//!
//! What lives where:
//! - `client`: [`ApiClient`], a small blocking HTTPS client (ureq, rustls with ring, the
//!   cluster CA as the only root) for `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`,
//!   in-cluster (service-account token and CA files, `KUBERNETES_SERVICE_HOST`/`_PORT`) or at
//!   an explicit URL (plain `http://` allowed there, for tests and `kubectl proxy`);
//! - `pods`: the pod list's JSON reduced to [`PodMeta`] (namespace, pod, UID, container name,
//!   workload kind and name from the owner reference, node);
//! - `cache`: [`PodCache`], the node's pods by container id and pod UID, refreshed by a thread
//!   of its own every `refresh_seconds` and early on a miss (at most every 2 s); lookups never
//!   do I/O; API errors are logged once per kind and counted, never fatal;
//! - `broker`: [`Brokers`], broker pid → [`BrokerMeta`]: the container from /proc
//!   (`crate::capture::container`), completed by the cache when the API is on.
//!
//! The only RBAC needed is `list` on pods cluster-wide (the DaemonSet's ClusterRole grants
//! get/list/watch pods and get nodes). Workloads come from owner references without further
//! calls: a ReplicaSet whose name ends in the pod's `pod-template-hash` is reported as its
//! Deployment; Jobs stay Jobs.
pub mod broker;
pub mod cache;
pub mod client;
pub mod pods;

use std::path::PathBuf;

pub use broker::{BrokerMeta, Brokers};
pub use cache::{CacheConfig, CacheStats, Lookup, PodCache, Refresher};
pub use client::{ApiClient, ApiConfig, DEFAULT_CA_FILE, DEFAULT_TOKEN_FILE};
pub use pods::PodMeta;

/// What went wrong talking to the Kubernetes API. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error(
        "Kubernetes API URL {0:?} is not usable: give http://HOST:PORT or https://HOST:PORT (--kube-api-url)"
    )]
    Url(String),
    #[error(
        "cannot read the Kubernetes {what} file {}: {source}; mount the service-account secret or set kubernetes.{}_file",
        path.display(),
        what.to_ascii_lowercase()
    )]
    File {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "no PEM certificate in the Kubernetes CA file {}: give the cluster's CA bundle (kubernetes.ca_file)",
        .0.display()
    )]
    NoCertificate(PathBuf),
    #[error(
        "Kubernetes API at {url}: {message}; check --kube-api-url and that the API server is reachable"
    )]
    Request { url: String, message: String },
    #[error(
        "Kubernetes API answered 401 Unauthorized: the service-account token is missing or invalid; mount a token (automountServiceAccountToken) or set kubernetes.token_file"
    )]
    Unauthorized,
    #[error(
        "Kubernetes API answered 403 Forbidden ({0}): the observer's service account needs RBAC to list pods (ClusterRole with get/list/watch on pods and get on nodes, bound to it)"
    )]
    Forbidden(String),
    #[error("Kubernetes API answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Kubernetes API sent a pod list that is not valid JSON: {0}")]
    Json(String),
    #[error("starting the Kubernetes metadata thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl K8sError {
    /// A short name per kind of error (errors are logged once per kind).
    pub fn kind(&self) -> &'static str {
        match self {
            K8sError::Url(_) => "url",
            K8sError::File { .. } => "file",
            K8sError::NoCertificate(_) => "ca",
            K8sError::Request { .. } => "request",
            K8sError::Unauthorized => "unauthorized",
            K8sError::Forbidden(_) => "forbidden",
            K8sError::Status { .. } => "status",
            K8sError::Json(_) => "json",
            K8sError::Thread(_) => "thread",
        }
    }
}

#[cfg(test)]
mod tests;
