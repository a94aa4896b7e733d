//! [`Brokers`]: broker pid → [`BrokerMeta`], what /proc says (container id, pod UID, and for
//! pods the name and namespace) completed by the [`PodCache`] when the API is on.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::cache::{Lookup, PodCache};
use crate::capture::{
    container::{ContainerInfo, container_of},
    procfs::ProcFs,
};

/// Container and Kubernetes identity of one broker process; absent values are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMeta {
    /// Unique per distinct value (never reused), so callers can key caches by it.
    pub id: u64,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    pub replicaset: Option<String>,
    pub node: Option<String>,
}

impl BrokerMeta {
    fn same(&self, other: &BrokerMeta) -> bool {
        BrokerMeta {
            id: 0,
            ..self.clone()
        } == BrokerMeta {
            id: 0,
            ..other.clone()
        }
    }

    /// Metric labels `namespace`, `pod`, `workload` (only those known).
    pub fn metric_labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("namespace", self.pod_namespace.as_deref()),
            ("pod", self.pod_name.as_deref()),
            ("workload", self.workload_name.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// OpenTelemetry resource attributes (k8s.* and container.id).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((k.to_owned(), v.clone()));
            }
        };
        add("container.id", &self.container_id);
        add("k8s.container.name", &self.container_name);
        add("k8s.pod.name", &self.pod_name);
        add("k8s.namespace.name", &self.pod_namespace);
        add("k8s.pod.uid", &self.pod_uid);
        add("k8s.node.name", &self.node);
        add("k8s.replicaset.name", &self.replicaset);
        let key = match self.workload_kind.as_deref() {
            Some("Deployment") => Some("k8s.deployment.name"),
            Some("StatefulSet") => Some("k8s.statefulset.name"),
            Some("DaemonSet") => Some("k8s.daemonset.name"),
            Some("Job") => Some("k8s.job.name"),
            Some("CronJob") => Some("k8s.cronjob.name"),
            _ => None,
        };
        if let Some(k) = key {
            add(k, &self.workload_name);
        }
        out
    }
}

/// Pids remembered at most; the table restarts when full.
const MAX_PIDS: usize = 4096;

struct Entry {
    container: ContainerInfo,
    generation: u64,
    meta: Option<Arc<BrokerMeta>>,
}

/// pid → [`BrokerMeta`], shared by the decode loop, the audit context and the span exporter.
/// /proc is read once per pid; the pod cache is consulted again only when it has changed.
pub struct Brokers {
    proc: ProcFs,
    cache: Option<PodCache>,
    pids: Mutex<HashMap<u32, Entry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brokers")
            .field("api", &self.cache.is_some())
            .finish()
    }
}

impl Brokers {
    /// `cache`: the API's pods, or `None` for /proc alone.
    pub fn new(proc: ProcFs, cache: Option<PodCache>) -> Self {
        Self {
            proc,
            cache,
            pids: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn cache(&self) -> Option<&PodCache> {
        self.cache.as_ref()
    }

    /// The broker's identity; `None` for a process outside any container.
    pub fn resolve(&self, pid: u32) -> Option<Arc<BrokerMeta>> {
        let generation = self.cache.as_ref().map_or(0, PodCache::generation);
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = pids.get(&pid)
            && (e.generation == generation || e.container.is_empty() || self.cache.is_none())
        {
            return e.meta.clone();
        }
        let (container, old) = match pids.remove(&pid) {
            Some(e) => (e.container, e.meta),
            None => (container_of(&self.proc, pid), None),
        };
        let meta = self.compose(&container).map(|m| match old {
            // Same identity: keep the id so caches keyed by it stay valid.
            Some(o) if o.same(&m) => o,
            _ => Arc::new(BrokerMeta {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                ..m
            }),
        });
        if pids.len() >= MAX_PIDS {
            pids.clear();
        }
        pids.insert(
            pid,
            Entry {
                container,
                generation,
                meta: meta.clone(),
            },
        );
        meta
    }

    /// Forgets a pid (the process is gone; its number may come back as another process).
    pub fn forget(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    fn compose(&self, c: &ContainerInfo) -> Option<BrokerMeta> {
        if c.is_empty() {
            return None;
        }
        let mut m = BrokerMeta {
            container_id: c.id.clone(),
            pod_name: c.pod_name.clone(),
            pod_namespace: c.pod_namespace.clone(),
            pod_uid: c.pod_uid.clone(),
            ..BrokerMeta::default()
        };
        if let Some(cache) = &self.cache
            && let Lookup::Hit(p) = cache.lookup(c.id.as_deref(), c.pod_uid.as_deref())
        {
            let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            m.pod_name = some(&p.pod).or(m.pod_name);
            m.pod_namespace = some(&p.namespace).or(m.pod_namespace);
            m.pod_uid = some(&p.uid).or(m.pod_uid);
            m.container_name = some(&p.container);
            m.workload_kind = some(&p.workload_kind);
            m.workload_name = some(&p.workload_name);
            m.replicaset = p.replicaset.clone();
            m.node = some(&p.node);
        }
        Some(m)
    }
}
