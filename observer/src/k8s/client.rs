//! [`ApiClient`]: lists the pods of one node from the Kubernetes API server, blocking (it runs
//! on the refresh thread only).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    K8sError,
    pods::{PodEntries, PodList},
};

/// The in-cluster service-account files.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Largest pod list accepted (a node runs at most a few hundred pods).
const MAX_BODY: u64 = 64 << 20;

/// Where and how to reach the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `https://host:port` or, for tests and `kubectl proxy`, `http://host:port`.
    pub url: String,
    /// Bearer token file, read before every request (projected tokens are rotated); a missing
    /// file means no token (fine behind `kubectl proxy`).
    pub token_file: Option<PathBuf>,
    /// CA bundle the server's certificate must chain to (https only).
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl ApiConfig {
    /// The in-cluster URL from `KUBERNETES_SERVICE_HOST`/`_PORT`, if set.
    pub fn in_cluster_url(env: impl Fn(&str) -> Option<String>) -> Option<String> {
        let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "443".into());
        // An IPv6 service address needs brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("https://{host}:{port}"))
    }
}

/// A blocking client for `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`.
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
    token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish()
    }
}

impl ApiClient {
    pub fn new(config: &ApiConfig) -> Result<Self, K8sError> {
        let url = config.url.trim_end_matches('/');
        let https = if let Some(rest) = url.strip_prefix("https://") {
            !rest.is_empty()
        } else if url.strip_prefix("http://").is_some_and(|r| !r.is_empty()) {
            false
        } else {
            return Err(K8sError::Url(config.url.clone()));
        };
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Status codes are errors of their own kind here (401/403 name the RBAC).
            .http_status_as_error(false);
        if https && let Some(ca) = &config.ca_file {
            builder = builder.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(read_ca(ca)?)))
                    .build(),
            );
        }
        Ok(Self {
            agent: builder.build().into(),
            base: url.to_owned(),
            token_file: config.token_file.clone(),
        })
    }

    /// The pods scheduled on `node`, one entry set per pod.
    pub(crate) fn list_pods(&self, node: &str) -> Result<Vec<PodEntries>, K8sError> {
        let url = format!(
            "{}/api/v1/pods?fieldSelector=spec.nodeName={}",
            self.base,
            encode(node)
        );
        let mut req = self.agent.get(&url).header("Accept", "application/json");
        if let Some(token) = self.token()? {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut resp = req.call().map_err(|e| K8sError::Request {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| K8sError::Request {
                url: self.base.clone(),
                message: e.to_string(),
            })?;
        match status {
            200 => {}
            401 => return Err(K8sError::Unauthorized),
            403 => return Err(K8sError::Forbidden(message_of(&body))),
            s => {
                return Err(K8sError::Status {
                    status: s,
                    message: message_of(&body),
                });
            }
        }
        let list: PodList =
            serde_json::from_slice(&body).map_err(|e| K8sError::Json(e.to_string()))?;
        Ok(list.items.into_iter().map(|p| p.entries()).collect())
    }

    fn token(&self) -> Result<Option<String>, K8sError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(K8sError::File {
                path: path.clone(),
                what: "token",
                source: e,
            }),
        }
    }
}

fn read_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, K8sError> {
    let pem = std::fs::read(path).map_err(|e| K8sError::File {
        path: path.to_owned(),
        what: "CA",
        source: e,
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(K8sError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The API's `Status.message`, else the start of the body.
fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Status {
        message: String,
    }
    serde_json::from_slice::<Status>(body)
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// Percent-encodes a node name for a query value (node names are DNS names; this is for the
/// odd character a hand-written `--node-name` may hold).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
