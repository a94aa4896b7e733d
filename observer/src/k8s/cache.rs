//! [`PodCache`]: the pods of this node by container id and by pod UID, refreshed on a thread of
//! its own. Lookups read an immutable index behind an `Arc` swapped in by the refresher (the
//! lock is held for a pointer copy), so the decode loop never waits for the API server.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{K8sError, client::ApiClient, pods::PodEntries, pods::PodMeta};

/// How the cache refreshes.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// This node's name (the pod list's field selector).
    pub node: String,
    /// Full refresh period.
    pub refresh: Duration,
    /// Refreshes asked for by cache misses come at most this often.
    pub min_interval: Duration,
    /// Containers kept at most; the rest of a pod list is dropped and counted.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            node: String::new(),
            refresh: Duration::from_secs(30),
            min_interval: Duration::from_secs(2),
            max_entries: 10_000,
        }
    }
}

/// Lookup and API counters (running totals; the daemon exports them as metrics).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Lookups while the API has never answered (nothing to look in).
    pub errors: AtomicU64,
    pub api_errors: AtomicU64,
    pub refreshes: AtomicU64,
    /// Containers left out of the index because of the cap.
    pub evictions: AtomicU64,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(Arc<PodMeta>),
    /// The API answered but does not (yet) know the container or pod; a refresh is asked for.
    Miss,
    /// The API has not answered successfully yet; a retry is asked for.
    Error,
}

#[derive(Default)]
struct Index {
    loaded: bool,
    by_container: HashMap<String, Arc<PodMeta>>,
    by_uid: HashMap<String, Arc<PodMeta>>,
}

struct Inner {
    index: Mutex<Arc<Index>>,
    /// Bumped by every successful refresh, so callers know when to look again.
    generation: AtomicU64,
    stats: CacheStats,
    /// A miss asks the refresher for an early refresh.
    wake: Mutex<bool>,
    wake_cv: Condvar,
    stop: AtomicBool,
}

/// The pods of this node, shared by the decode loop (lookups) and the refresh thread.
#[derive(Clone)]
pub struct PodCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PodCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCache")
            .field("generation", &self.generation())
            .finish()
    }
}

/// The refresh thread; stops when dropped.
pub struct Refresher {
    cache: PodCache,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        let inner = &self.cache.inner;
        inner.stop.store(true, Ordering::Relaxed);
        *inner.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        inner.wake_cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Refresher {
    pub fn cache(&self) -> &PodCache {
        &self.cache
    }
}

impl Default for PodCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PodCache {
    /// An empty cache (no API answer yet).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                index: Mutex::new(Arc::new(Index::default())),
                generation: AtomicU64::new(0),
                stats: CacheStats::default(),
                wake: Mutex::new(false),
                wake_cv: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// Starts the refresh thread: a first refresh at once, then every `config.refresh` and
    /// on misses (at most every `config.min_interval`).
    pub fn start(client: ApiClient, config: CacheConfig) -> Result<Refresher, K8sError> {
        let cache = PodCache::new();
        let thread_cache = cache.clone();
        let thread = std::thread::Builder::new()
            .name("brokerscope-k8s".into())
            .spawn(move || thread_cache.refresh_loop(&client, &config))
            .map_err(K8sError::Thread)?;
        Ok(Refresher {
            cache,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Changes whenever the index is replaced.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The pod of a container id (preferred: it names the container too), else of a pod UID.
    /// Never blocks on I/O; a miss asks for an early refresh.
    pub fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Lookup {
        let index = self
            .inner
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let s = &self.inner.stats;
        if !index.loaded {
            s.errors.fetch_add(1, Ordering::Relaxed);
            self.request_refresh();
            return Lookup::Error;
        }
        let found = container_id
            .and_then(|id| index.by_container.get(id))
            .or_else(|| pod_uid.and_then(|u| index.by_uid.get(u)));
        match found {
            Some(m) => {
                s.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(m.clone())
            }
            None => {
                s.misses.fetch_add(1, Ordering::Relaxed);
                self.request_refresh();
                Lookup::Miss
            }
        }
    }

    /// Asks the refresher for a refresh soon (non-blocking).
    pub fn request_refresh(&self) {
        if let Ok(mut w) = self.inner.wake.try_lock() {
            *w = true;
            self.inner.wake_cv.notify_one();
        }
    }

    /// Replaces the index with these pods (the refresher's job; public for tests and for
    /// feeding a cache from elsewhere).
    pub(crate) fn install(&self, pods: Vec<PodEntries>, max_entries: usize) {
        let mut index = Index {
            loaded: true,
            ..Index::default()
        };
        let mut dropped = 0u64;
        for p in pods {
            for (id, meta) in p.containers {
                if index.by_container.len() >= max_entries {
                    dropped += 1;
                    continue;
                }
                index.by_container.insert(id, meta);
            }
            if index.by_uid.len() < max_entries {
                if let Some(hash) = p.config_hash {
                    index.by_uid.insert(hash, p.pod.clone());
                }
                index.by_uid.insert(p.pod.uid.clone(), p.pod);
            }
        }
        let s = &self.inner.stats;
        s.evictions.fetch_add(dropped, Ordering::Relaxed);
        s.refreshes.fetch_add(1, Ordering::Relaxed);
        *self.inner.index.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Containers in the index.
    pub fn len(&self) -> usize {
        self.inner
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_container
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn refresh_loop(&self, client: &ApiClient, config: &CacheConfig) {
        let inner = &self.inner;
        let mut logged: HashSet<&'static str> = HashSet::new();
        let mut failing = false;
        let mut last: Option<Instant> = None;
        while !inner.stop.load(Ordering::Relaxed) {
            // Misses may ask early, but not more often than min_interval.
            if let Some(l) = last {
                let wait = config.min_interval.saturating_sub(l.elapsed());
                if !wait.is_zero() {
                    self.sleep(wait, false);
                    if inner.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            last = Some(Instant::now());
            match client.list_pods(&config.node) {
                Ok(pods) => {
                    let n = pods.len();
                    self.install(pods, config.max_entries);
                    if failing || self.generation() == 1 {
                        info!(node = %config.node, pods = n, "Kubernetes pod metadata loaded");
                    }
                    failing = false;
                }
                Err(e) => {
                    inner.stats.api_errors.fetch_add(1, Ordering::Relaxed);
                    failing = true;
                    // Once per kind: a broken API server must not flood the log.
                    if logged.insert(e.kind()) {
                        warn!(error = %e, "Kubernetes API (further errors of this kind are only counted)");
                    }
                }
            }
            let elapsed = last.map_or(Duration::ZERO, |l| l.elapsed());
            self.sleep(config.refresh.saturating_sub(elapsed), true);
        }
    }

    /// Sleeps up to `d`; with `wakeable`, a miss (or stop) ends it early.
    fn sleep(&self, d: Duration, wakeable: bool) {
        let inner = &self.inner;
        let deadline = Instant::now() + d;
        let mut woken = inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if inner.stop.load(Ordering::Relaxed) || (wakeable && *woken) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            woken = inner
                .wake_cv
                .wait_timeout(woken, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if wakeable {
            *woken = false;
        }
    }
}
