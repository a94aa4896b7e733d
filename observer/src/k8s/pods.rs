//! The pod list the API server returns, reduced to what brokerscope labels brokers with: only
//! the fields below are parsed (serde skips the rest), and each pod becomes one [`PodMeta`] per
//! container.
use std::sync::Arc;

use serde::Deserialize;

/// What the Kubernetes API tells about the container a broker runs in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodMeta {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// The container's name in the pod spec; empty when looked up by pod UID only.
    pub container: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet`, `Pod`, or another owner
    /// kind as the API names it.
    pub workload_kind: String,
    pub workload_name: String,
    /// The ReplicaSet between a pod and its Deployment (span attribute `k8s.replicaset.name`).
    pub replicaset: Option<String>,
    pub node: String,
}

#[derive(Deserialize)]
pub(crate) struct PodList {
    #[serde(default)]
    pub items: Vec<Pod>,
}

#[derive(Deserialize)]
pub(crate) struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize)]
pub(crate) struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub node_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    #[serde(default)]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    /// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`; absent while the container is
    /// being created.
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
}

/// The runtime's id in a `containerID` (`containerd://3f25…` → `3f25…`).
pub fn container_id(s: &str) -> Option<&str> {
    let id = s.split_once("://").map_or(s, |(_, id)| id);
    (!id.is_empty()).then_some(id)
}

/// One pod's entries: the pod itself (for lookups by UID: container name empty) and each
/// container with its runtime id.
#[derive(Debug)]
pub(crate) struct PodEntries {
    pub pod: Arc<PodMeta>,
    /// Static pods' cgroups carry the kubelet's config hash instead of the API's UID.
    pub config_hash: Option<String>,
    pub containers: Vec<(String, Arc<PodMeta>)>,
}

impl Pod {
    pub fn entries(self) -> PodEntries {
        let (kind, name, replicaset) = workload(&self.metadata);
        let m = self.metadata;
        let pod = PodMeta {
            namespace: m.namespace,
            pod: m.name,
            uid: m.uid,
            container: String::new(),
            workload_kind: kind,
            workload_name: name,
            replicaset,
            node: self.spec.node_name,
        };
        let s = self.status;
        let containers = s
            .container_statuses
            .into_iter()
            .chain(s.init_container_statuses)
            .chain(s.ephemeral_container_statuses)
            .filter_map(|c| {
                let id = container_id(c.container_id.as_deref()?)?.to_owned();
                Some((
                    id,
                    Arc::new(PodMeta {
                        container: c.name,
                        ..pod.clone()
                    }),
                ))
            })
            .collect();
        PodEntries {
            pod: Arc::new(pod),
            config_hash: m.annotations.get("kubernetes.io/config.hash").cloned(),
            containers,
        }
    }
}

/// The workload a pod belongs to, from its controller reference alone (no further API calls,
/// so no RBAC beyond listing pods): a ReplicaSet named `<deployment>-<pod-template-hash>` is
/// reported as its Deployment; a Job stays a Job (whether a CronJob owns it would need the
/// Job object); a pod without owner is its own workload.
fn workload(m: &ObjectMeta) -> (String, String, Option<String>) {
    let owner = m
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| m.owner_references.first());
    let Some(o) = owner else {
        return ("Pod".into(), m.name.clone(), None);
    };
    if o.kind == "ReplicaSet"
        && let Some(hash) = m.labels.get("pod-template-hash")
        && let Some(deployment) = o.name.strip_suffix(hash.as_str())
        && let Some(deployment) = deployment.strip_suffix('-')
        && !deployment.is_empty()
    {
        return (
            "Deployment".into(),
            deployment.to_owned(),
            Some(o.name.clone()),
        );
    }
    let replicaset = (o.kind == "ReplicaSet").then(|| o.name.clone());
    (o.kind.clone(), o.name.clone(), replicaset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(owner: Option<(&str, &str)>, hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: "p-0".into(),
            labels: hash
                .map(|h| [("pod-template-hash".to_owned(), h.to_owned())].into())
                .unwrap_or_default(),
            owner_references: owner
                .map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                    }]
                })
                .unwrap_or_default(),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn workload_of_each_owner_kind() {
        let s =
            |k: &str, n: &str, rs: Option<&str>| (k.to_owned(), n.to_owned(), rs.map(Into::into));
        let cases = [
            (
                meta(Some(("ReplicaSet", "mqtt-7d9f8c6b5d")), Some("7d9f8c6b5d")),
                s("Deployment", "mqtt", Some("mqtt-7d9f8c6b5d")),
            ),
            (
                meta(Some(("ReplicaSet", "my-app-v2-55f7c9")), Some("55f7c9")),
                s("Deployment", "my-app-v2", Some("my-app-v2-55f7c9")),
            ),
            // A ReplicaSet made by hand (no template hash, or a hash that is not its suffix).
            (
                meta(Some(("ReplicaSet", "standalone")), None),
                s("ReplicaSet", "standalone", Some("standalone")),
            ),
            (
                meta(Some(("ReplicaSet", "standalone")), Some("abc")),
                s("ReplicaSet", "standalone", Some("standalone")),
            ),
            (
                meta(Some(("StatefulSet", "rabbitmq")), None),
                s("StatefulSet", "rabbitmq", None),
            ),
            (
                meta(Some(("DaemonSet", "nats")), None),
                s("DaemonSet", "nats", None),
            ),
            (
                meta(Some(("Job", "backup-28999440")), None),
                s("Job", "backup-28999440", None),
            ),
            (meta(None, None), s("Pod", "p-0", None)),
        ];
        for (m, want) in cases {
            assert_eq!(workload(&m), want);
        }
    }

    #[test]
    fn container_ids_of_each_runtime() {
        assert_eq!(container_id("containerd://abc"), Some("abc"));
        assert_eq!(container_id("cri-o://abc"), Some("abc"));
        assert_eq!(container_id("docker://abc"), Some("abc"));
        assert_eq!(container_id("containerd://"), None);
        assert_eq!(container_id(""), None);
    }
}
