//! Target selection: `--pid`, `--process`, `--port` and auto-discovery resolved to processes,
//! their cgroups and the TCP ports whose traffic is captured.
//!
//! [`CgroupTree`] maps the cgroup paths of /proc/PID/cgroup to directories to attach to, also
//! from inside a container with a private cgroup namespace.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::discover::{self, BrokerKind};
use super::procfs::{ListenCache, ProcError, ProcFs};

/// What the user asked to watch. Selectors add up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSpec {
    /// Exactly these processes.
    pub pids: Vec<u32>,
    /// Every process with this comm or executable name, now and later (restarts are followed).
    pub names: Vec<String>,
    /// The process listening on each port; only these ports of it are captured.
    pub ports: Vec<u16>,
    /// Also every broker auto-discovery finds ([`discover::discover`]), now and later, with all
    /// its ports. Finding none is not an error: the brokers may start later.
    pub discover: bool,
}

impl TargetSpec {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.names.is_empty() && self.ports.is_empty() && !self.discover
    }
}

/// A resolved target process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 directory the process's sockets are created in (absolute path).
    pub cgroup: PathBuf,
    /// Local TCP ports captured for it.
    pub ports: BTreeSet<u16>,
    /// What broker it is, when discovery found it or its process matches a discovery rule.
    pub kind: Option<BrokerKind>,
    /// All its listening ports are captured, also those it opens later (chosen by pid, name or
    /// discovery); false when it was chosen only by `--port`.
    pub follow_listen: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no target given: use --pid PID, --process NAME or --port PORT")]
    Empty,
    #[error("no process with pid {0} (it may have exited); check the pid with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error(
        "no running process is named {0:?} (comm or executable name); check with `pgrep -l {0}`, or start the broker first"
    )]
    NoSuchName(String),
    #[error("no process is listening on TCP port {0}; check with `ss -ltnp 'sport = :{0}'`")]
    NoListener(u16),
    #[error(
        "process {pid} has no cgroup v2 membership in /proc/{pid}/cgroup; cgroup v2 must be mounted"
    )]
    NoCgroup { pid: u32 },
    #[error(transparent)]
    Cgroup(#[from] CgroupTreeError),
    #[error(transparent)]
    Proc(#[from] ProcError),
}

impl TargetError {
    /// A selector that names nothing (as opposed to an unreadable /proc).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::NoSuchPid(_) | Self::NoSuchName(_) | Self::NoListener(_) | Self::Empty
        )
    }
}

/// Resolves a spec against /proc.
pub struct Resolver {
    pub proc: ProcFs,
    pub cgroups: CgroupTree,
    /// Listening ports of the targets from the previous resolve: the daemon resolves every
    /// second, and a broker's fd table need not be listed again while its listeners stay.
    listen_cache: ListenCache,
}

impl Resolver {
    pub fn new(proc: ProcFs, cgroups: CgroupTree) -> Self {
        Self {
            proc,
            cgroups,
            listen_cache: ListenCache::default(),
        }
    }

    /// Every target the spec names right now. With `strict`, a selector that matches nothing is an
    /// error (start-up); without, it is skipped (later refreshes, while a broker restarts).
    /// Discovery finding nothing, or a discovered process that cannot be read, is never an error.
    pub fn resolve(&self, spec: &TargetSpec, strict: bool) -> Result<Vec<Target>, TargetError> {
        if spec.is_empty() {
            return Err(TargetError::Empty);
        }
        // pid → Some(ports) when only some ports were asked for, None for all its listeners.
        let mut wanted: BTreeMap<u32, Option<BTreeSet<u16>>> = BTreeMap::new();
        for &pid in &spec.pids {
            if self.proc.exists(pid) {
                wanted.insert(pid, None);
            } else if strict {
                return Err(TargetError::NoSuchPid(pid));
            }
        }
        for name in &spec.names {
            let pids = self.proc.find_by_name(name)?;
            if pids.is_empty() && strict {
                return Err(TargetError::NoSuchName(name.clone()));
            }
            for pid in pids {
                wanted.insert(pid, None);
            }
        }
        // Discovered processes count as named: all their ports.
        let mut kinds: BTreeMap<u32, BrokerKind> = BTreeMap::new();
        let mut discovered_only = BTreeSet::new();
        if spec.discover {
            for d in discover::discover(&self.proc)? {
                kinds.insert(d.pid, d.kind);
                if !wanted.contains_key(&d.pid) {
                    discovered_only.insert(d.pid);
                }
                wanted.insert(d.pid, None);
            }
        }
        for &port in &spec.ports {
            let pids = self.proc.pid_listening_on(port)?;
            if pids.is_empty() && strict {
                return Err(TargetError::NoListener(port));
            }
            for pid in pids {
                // None: already wanted with all its ports.
                if let Some(ports) = wanted.entry(pid).or_insert_with(|| Some(BTreeSet::new())) {
                    ports.insert(port);
                }
                discovered_only.remove(&pid);
            }
        }
        self.listen_cache.keep_only(|pid| wanted.contains_key(&pid));
        let mut targets = Vec::with_capacity(wanted.len());
        for (pid, only) in wanted {
            match self.describe(pid, only, kinds.get(&pid).copied()) {
                Ok(t) => targets.push(t),
                // A cgroup we cannot reach is a deployment problem to report, not a broker to
                // skip silently; at start-up only, so a refresh does not stop the daemon.
                Err(e @ TargetError::Cgroup(_)) if strict => return Err(e),
                Err(_) if discovered_only.contains(&pid) => {}
                // Exited between listing and reading: not an error unless it was asked by pid.
                Err(TargetError::Proc(ProcError::NoSuchProcess { .. })) if !strict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(targets)
    }

    fn describe(
        &self,
        pid: u32,
        only: Option<BTreeSet<u16>>,
        kind: Option<BrokerKind>,
    ) -> Result<Target, TargetError> {
        let comm = self.proc.comm(pid)?;
        let kind = kind.or_else(|| discover::rule_kind(&self.proc, pid, &comm));
        let follow_listen = only.is_none();
        let rel = self
            .proc
            .cgroup_v2_path(pid)?
            .ok_or(TargetError::NoCgroup { pid })?;
        let cgroup = self.cgroups.host_dir(pid, &rel)?;
        let ports = match only {
            Some(ports) => ports,
            None => self
                .proc
                .listening_ports_cached(pid, &self.listen_cache)?
                .into_iter()
                .collect(),
        };
        Ok(Target {
            pid,
            comm,
            cgroup,
            ports,
            kind,
            follow_listen,
        })
    }
}

/// Why the cgroup of a target cannot be found on this machine's mounts. Every message says what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CgroupTreeError {
    #[error(
        "no cgroup v2 hierarchy is mounted; mount one (mount -t cgroup2 none /sys/fs/cgroup) — `brokerscope check` shows what is available"
    )]
    NoCgroup2,
    #[error(
        "--cgroup-root {}: not a cgroup2 mount or a directory inside one (cgroup2 mounts here: {mounts}); \
         mount the host's /sys/fs/cgroup there (in Kubernetes: a read-only hostPath volume) or pass one of those",
        .path.display()
    )]
    NotCgroup2 { path: PathBuf, mounts: String },
    #[error(
        "this process runs in a private cgroup namespace and the host's cgroup tree is not visible \
         (the cgroup2 mount {} shows only this namespace's subtree); mount the host's /sys/fs/cgroup \
         (read-only is enough) and pass --cgroup-root (e.g. --cgroup-root /host/sys/fs/cgroup)",
        .mount.display()
    )]
    HostTreeNotVisible { mount: PathBuf },
    #[error(
        "cgroup {cgroup} of process {pid} is outside the cgroup tree mounted at {} (whose root is {root}); \
         mount the host's /sys/fs/cgroup and pass --cgroup-root",
        .mount.display()
    )]
    Outside {
        pid: u32,
        cgroup: String,
        mount: PathBuf,
        root: String,
    },
    #[error(
        "cannot find this process's cgroup namespace root in {}: no directory {depth} level(s) down \
         holds pid {pid} in {own}/cgroup.procs; is {} the host's whole /sys/fs/cgroup? pass it with --cgroup-root",
        .mount.display(), .mount.display()
    )]
    NamespaceRootNotFound {
        mount: PathBuf,
        depth: usize,
        pid: u32,
        own: String,
    },
    #[error(
        "the cgroup2 mount {} has root {root}, a directory beside this cgroup namespace rather than above it; \
         mount the host's whole /sys/fs/cgroup and pass --cgroup-root",
        .mount.display()
    )]
    UnsupportedRoot { mount: PathBuf, root: String },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// A cgroup path as /proc/PID/cgroup and mountinfo print it: relative to the reader's cgroup
/// namespace root, so it may climb out of it first ("/../../kubepods.slice/x.scope").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NsPath {
    /// Levels above the namespace root.
    ups: usize,
    /// Then down through these directories.
    names: Vec<String>,
}

impl NsPath {
    fn parse(path: &str) -> Self {
        let mut p = NsPath::default();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if p.names.pop().is_none() {
                        p.ups += 1;
                    }
                }
                name => p.names.push(name.to_owned()),
            }
        }
        p
    }
}

/// Where the cgroup v2 tree is mounted here and how a path from /proc/PID/cgroup maps to a
/// directory under it.
///
/// On a host, /proc/PID/cgroup paths are relative to the tree's root and are joined to the mount.
/// In a container with a private cgroup namespace (Kubernetes with containerd and cgroup v2),
/// they are relative to the container's own cgroup ("/../../kubepods.slice/…/cri-containerd-ID.scope"),
/// and the container's /sys/fs/cgroup shows only its own subtree; the host's tree has to be
/// mounted somewhere (`--cgroup-root`, found automatically otherwise: its mountinfo root starts with
/// "/.."). The namespace root's place in that tree is found by looking for this process's own pid
/// in the cgroup.procs files at the right depth: it needs no privilege (no setns into the host's
/// namespace, which would take CAP_SYS_ADMIN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTree {
    /// Directory under which target cgroups are looked up.
    pub mount: PathBuf,
    /// Which cgroup `mount` shows, relative to our namespace root.
    root: NsPath,
    /// Where our namespace root is under `mount`, when `mount` shows more than our namespace.
    ns_root: Option<Vec<String>>,
}

impl CgroupTree {
    /// A tree whose mount shows the cgroup namespace root of every process it will be asked
    /// about (a host's own /sys/fs/cgroup).
    pub fn plain(mount: PathBuf) -> Self {
        Self {
            mount,
            root: NsPath::default(),
            ns_root: None,
        }
    }

    /// Finds the tree from this mount namespace's cgroup2 mounts: `configured` (a mount point or
    /// a directory inside one) when given, else the mount showing the most of the hierarchy.
    /// `own_pid` is this process as `proc` sees it.
    pub fn detect(
        proc: &ProcFs,
        configured: Option<&Path>,
        own_pid: u32,
    ) -> Result<Self, CgroupTreeError> {
        let mounts = proc.cgroup2_mounts()?;
        let (mount, root) = match configured {
            Some(path) => {
                let found = mounts
                    .iter()
                    .filter(|m| path.starts_with(&m.mount_point))
                    .max_by_key(|m| m.mount_point.components().count());
                let Some(m) = found else {
                    let list: Vec<String> = mounts
                        .iter()
                        .map(|m| m.mount_point.display().to_string())
                        .collect();
                    return Err(CgroupTreeError::NotCgroup2 {
                        path: path.to_owned(),
                        mounts: if list.is_empty() {
                            "none".into()
                        } else {
                            list.join(", ")
                        },
                    });
                };
                let mut root = NsPath::parse(&m.root);
                let below = path.strip_prefix(&m.mount_point).unwrap_or(Path::new(""));
                // A configured subdirectory: its root is the mount's root plus the way down.
                root.names
                    .extend(NsPath::parse(&below.to_string_lossy()).names);
                (path.to_owned(), root)
            }
            None => {
                // Highest above our namespace first; then one showing our namespace root.
                let best = mounts
                    .iter()
                    .enumerate()
                    // A mount hidden by a later one on the same mount point is not reachable.
                    .filter(|(i, m)| {
                        !mounts[i + 1..]
                            .iter()
                            .any(|later| later.mount_point == m.mount_point)
                    })
                    .map(|(_, m)| (m, NsPath::parse(&m.root)))
                    .max_by_key(|(_, r)| (r.names.is_empty(), r.ups))
                    .ok_or(CgroupTreeError::NoCgroup2)?;
                (best.0.mount_point.clone(), best.1)
            }
        };
        let ns_root = if root.ups == 0 {
            // Only our namespace is visible: fine unless it is not the host's.
            let ours = proc.cgroup_namespace("self");
            let hosts = proc.cgroup_namespace("1");
            if let (Some(ours), Some(hosts)) = (ours, hosts)
                && ours != hosts
            {
                return Err(CgroupTreeError::HostTreeNotVisible { mount });
            }
            None
        } else if !root.names.is_empty() {
            return Err(CgroupTreeError::UnsupportedRoot {
                mount,
                root: root_text(&root),
            });
        } else {
            Some(find_ns_root(proc, &mount, root.ups, own_pid)?)
        };
        Ok(Self {
            mount,
            root,
            ns_root,
        })
    }

    /// Whether the mount shows more than our cgroup namespace (we run in a private one).
    pub fn translates(&self) -> bool {
        self.ns_root.is_some()
    }

    /// The directory of cgroup `cgroup` (as /proc/`pid`/cgroup prints it) under the mount.
    pub fn host_dir(&self, pid: u32, cgroup: &str) -> Result<PathBuf, CgroupTreeError> {
        let p = NsPath::parse(cgroup);
        let outside = || CgroupTreeError::Outside {
            pid,
            cgroup: cgroup.to_owned(),
            mount: self.mount.clone(),
            root: root_text(&self.root),
        };
        let rel: Vec<String> = match &self.ns_root {
            Some(ns_root) => {
                let mut dirs = ns_root.clone();
                for _ in 0..p.ups {
                    dirs.pop().ok_or_else(outside)?;
                }
                dirs.extend(p.names);
                dirs
            }
            None if p.ups > 0 => return Err(outside()),
            None => p
                .names
                .strip_prefix(self.root.names.as_slice())
                .ok_or_else(outside)?
                .to_vec(),
        };
        Ok(rel.iter().fold(self.mount.clone(), |d, n| d.join(n)))
    }
}

fn root_text(p: &NsPath) -> String {
    let mut s = String::new();
    for _ in 0..p.ups {
        s.push_str("/..");
    }
    for n in &p.names {
        s.push('/');
        s.push_str(n);
    }
    if s.is_empty() { "/".into() } else { s }
}

/// The directories `depth` levels under `mount` where our namespace root can be: the one whose
/// subdirectory for our own cgroup lists `own_pid` in its cgroup.procs.
fn find_ns_root(
    proc: &ProcFs,
    mount: &Path,
    depth: usize,
    own_pid: u32,
) -> Result<Vec<String>, CgroupTreeError> {
    let own = proc
        .cgroup_v2_path(own_pid)?
        .unwrap_or_else(|| "/".to_owned());
    let own_path = NsPath::parse(&own);
    let mut level: Vec<Vec<String>> = vec![Vec::new()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dirs in &level {
            let dir = dirs.iter().fold(mount.to_owned(), |d, n| d.join(n));
            // Cgroups vanish while we walk; an unreadable one cannot be ours.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let mut d = dirs.clone();
                    d.push(e.file_name().to_string_lossy().into_owned());
                    next.push(d);
                }
            }
        }
        level = next;
    }
    let pid_line = own_pid.to_string();
    for candidate in level {
        let mut dirs = candidate.clone();
        if own_path.ups > dirs.len() {
            continue;
        }
        dirs.truncate(dirs.len() - own_path.ups);
        dirs.extend(own_path.names.iter().cloned());
        let procs = dirs
            .iter()
            .fold(mount.to_owned(), |d, n| d.join(n))
            .join("cgroup.procs");
        if std::fs::read_to_string(&procs).is_ok_and(|t| t.lines().any(|l| l.trim() == pid_line)) {
            return Ok(candidate);
        }
    }
    Err(CgroupTreeError::NamespaceRootNotFound {
        mount: mount.to_owned(),
        depth,
        pid: own_pid,
        own,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::discover::tests::{BEAM, RABBIT, listeners, process};
    use crate::capture::procfs::testkit::FakeProc;
    use std::fs;

    fn plain(root: &str) -> CgroupTree {
        CgroupTree::plain(PathBuf::from(root))
    }

    #[test]
    fn cgroup_paths_join() {
        let root = Path::new("/sys/fs/cgroup/unified");
        let t = CgroupTree::plain(root.to_owned());
        assert_eq!(t.host_dir(1, "/").unwrap(), root);
        assert_eq!(t.host_dir(1, "/my-broker").unwrap(), root.join("my-broker"));
        assert_eq!(t.host_dir(1, "/a/b.scope").unwrap(), root.join("a/b.scope"));
        // Outside our namespace, and no host tree to find it in.
        let e = t.host_dir(7, "/../other.scope").unwrap_err();
        assert!(
            e.to_string().contains("pass --cgroup-root") && e.to_string().contains("process 7"),
            "{e}"
        );
    }

    #[test]
    fn empty_spec_is_an_error() {
        let r = Resolver::new(ProcFs::default(), plain("/sys/fs/cgroup"));
        assert!(matches!(
            r.resolve(&TargetSpec::default(), true),
            Err(TargetError::Empty)
        ));
    }

    #[test]
    fn unknown_selectors_are_errors_only_when_strict() {
        let r = Resolver::new(ProcFs::default(), plain("/sys/fs/cgroup"));
        let spec = TargetSpec {
            pids: vec![u32::MAX - 1],
            ..Default::default()
        };
        assert!(matches!(
            r.resolve(&spec, true),
            Err(TargetError::NoSuchPid(_))
        ));
        assert!(r.resolve(&spec, false).unwrap().is_empty());
        let spec = TargetSpec {
            names: vec!["no-such-broker-xyz".into()],
            ..Default::default()
        };
        assert!(matches!(
            r.resolve(&spec, true),
            Err(TargetError::NoSuchName(_))
        ));
    }

    /// A host with a RabbitMQ node (AMQP and distribution ports), an unknown process on the MQTT
    /// port and a web server.
    fn broker_host() -> FakeProc {
        let f = FakeProc::new("resolve");
        process(&f, 10, "beam.smp", BEAM, RABBIT);
        process(&f, 20, "artemis", "/opt/artemis/bin/artemis", "artemis run");
        process(&f, 30, "nginx", "/usr/sbin/nginx", "nginx");
        f.file("20/cgroup", "0::/system.slice/artemis.service\n");
        let sockets = [
            (5672, 100, 10),
            (25672, 101, 10),
            (1883, 200, 20),
            (80, 300, 30),
        ];
        listeners(&f, &[10, 20, 30], &sockets);
        f
    }

    fn by_pid(targets: Vec<Target>) -> BTreeMap<u32, Target> {
        targets.into_iter().map(|t| (t.pid, t)).collect()
    }

    #[test]
    fn discovery_adds_brokers_with_all_their_ports() {
        let f = broker_host();
        let r = Resolver::new(f.proc(), plain("/sys/fs/cgroup"));
        let spec = TargetSpec {
            discover: true,
            ..Default::default()
        };
        assert!(!spec.is_empty());
        let t = by_pid(r.resolve(&spec, true).unwrap());
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [10, 20]);
        let rabbit = &t[&10];
        assert_eq!(rabbit.kind, Some(BrokerKind::RabbitMq));
        assert_eq!(rabbit.comm, "beam.smp");
        assert_eq!(rabbit.ports, BTreeSet::from([5672, 25672]));
        assert_eq!(rabbit.cgroup, PathBuf::from("/sys/fs/cgroup"));
        assert!(rabbit.follow_listen);
        let by_port = &t[&20];
        assert_eq!(by_port.kind, Some(BrokerKind::Mosquitto));
        assert_eq!(
            by_port.cgroup,
            PathBuf::from("/sys/fs/cgroup/system.slice/artemis.service")
        );
        assert!(by_port.follow_listen);

        // A --port selector on a discovered broker does not narrow it; one on another process
        // captures that port only, and its process is not followed.
        let spec = TargetSpec {
            discover: true,
            ports: vec![5672, 80],
            ..Default::default()
        };
        let t = by_pid(r.resolve(&spec, true).unwrap());
        assert_eq!(t[&10].ports, BTreeSet::from([5672, 25672]));
        assert_eq!((t[&30].kind, t[&30].follow_listen), (None, false));
        assert_eq!(t[&30].ports, BTreeSet::from([80]));
    }

    #[test]
    fn explicit_selectors_get_a_kind_when_a_rule_matches() {
        let f = broker_host();
        let r = Resolver::new(f.proc(), plain("/"));
        let spec = TargetSpec {
            pids: vec![10, 20, 30],
            ..Default::default()
        };
        let t = by_pid(r.resolve(&spec, true).unwrap());
        assert_eq!(t[&10].kind, Some(BrokerKind::RabbitMq));
        // Kinds from ports are discovery's guesses only.
        assert_eq!(t[&20].kind, None);
        assert_eq!(t[&30].kind, None);
        assert!(t.values().all(|t| t.follow_listen));
    }

    /// A Kubernetes node seen from the observer's container: the observer's cgroup namespace
    /// root is kubepods.slice/kubepods-burstable.slice/pod-obs.slice/cri-containerd-obs.scope, the
    /// host's tree is bound at /host/sys/fs/cgroup, the container's own /sys/fs/cgroup shows only
    /// its subtree, and a broker runs in another pod. `cgroups` is the fake host tree.
    fn kubernetes_node(f: &FakeProc, cgroups: &Path) {
        let obs = "kubepods.slice/kubepods-burstable.slice/pod-obs.slice/cri-containerd-obs.scope";
        let broker =
            "kubepods.slice/kubepods-besteffort.slice/pod-mq.slice/cri-containerd-mq.scope";
        for dir in [
            obs,
            broker,
            "system.slice/containerd.service",
            "kubepods.slice/kubepods-burstable.slice/pod-other.slice/cri-containerd-x.scope",
        ] {
            fs::create_dir_all(cgroups.join(dir)).unwrap();
            fs::write(cgroups.join(dir).join("cgroup.procs"), "").unwrap();
        }
        // The observer (pid 4242) and a sidecar of another pod at the same depth.
        fs::write(cgroups.join(obs).join("cgroup.procs"), "17\n4242\n").unwrap();
        f.file(
            "self/mountinfo",
            format!(
                "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                 29 22 0:26 /../../../.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                 30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n\
                 41 22 0:26 /../../../.. {} ro,relatime master:9 - cgroup2 cgroup2 rw,nsdelegate\n",
                // The kernel escapes spaces in mountinfo paths.
                cgroups.display().to_string().replace(' ', "\\040")
            ),
        );
        f.file("4242/cgroup", "0::/\n");
        f.file(
            "900/cgroup",
            "0::/../../../kubepods-besteffort.slice/pod-mq.slice/cri-containerd-mq.scope\n",
        );
        f.link("self/ns/cgroup", "cgroup:[4026532801]");
        f.link("1/ns/cgroup", "cgroup:[4026531835]");
    }

    #[test]
    fn mountinfo_lists_cgroup2_with_roots() {
        let f = FakeProc::new("mountinfo");
        let host = f.root.join("host cgroup");
        kubernetes_node(&f, &host);
        let mounts = f.proc().cgroup2_mounts().unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(mounts[1].root, "/");
        assert_eq!(mounts[2].mount_point, host);
        assert_eq!(mounts[2].root, "/../../../..");
        f.file("self/mountinfo", "1 2 0:3 /\n");
        let e = f.proc().cgroup2_mounts().unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn private_cgroup_namespace_maps_to_the_host_tree() {
        let f = FakeProc::new("cgns");
        let host = f.root.join("host");
        kubernetes_node(&f, &host);
        let p = f.proc();
        // Found automatically: the mount reaching furthest above our namespace (not the host
        // tree the container's own /sys/fs/cgroup hides).
        let t = CgroupTree::detect(&p, None, 4242).unwrap();
        assert!(t.translates());
        assert_eq!(t.mount, host);
        let rel = p.cgroup_v2_path(900).unwrap().unwrap();
        let broker = host
            .join("kubepods.slice/kubepods-besteffort.slice/pod-mq.slice/cri-containerd-mq.scope");
        assert_eq!(t.host_dir(900, &rel).unwrap(), broker);
        assert_eq!(
            t.host_dir(1, "/").unwrap(),
            host.join(
                "kubepods.slice/kubepods-burstable.slice/pod-obs.slice/cri-containerd-obs.scope"
            )
        );
        assert_eq!(
            t.host_dir(1, "/../../../../system.slice").unwrap(),
            host.join("system.slice")
        );
        let e = t.host_dir(5, "/../../../../../x").unwrap_err();
        assert!(e.to_string().contains("outside the cgroup tree"), "{e}");
        // Named explicitly: the same.
        assert_eq!(CgroupTree::detect(&p, Some(&host), 4242).unwrap(), t);

        // Only the container's own subtree: refused with what to do, not joined to a wrong place.
        let own = Path::new("/sys/fs/cgroup");
        let e = CgroupTree::detect(&p, Some(own), 4242).unwrap_err();
        assert!(
            matches!(e, CgroupTreeError::HostTreeNotVisible { .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("mount the host's /sys/fs/cgroup"),
            "{e}"
        );
        assert!(e.to_string().contains("--cgroup-root"), "{e}");
        let e = CgroupTree::detect(&p, Some(Path::new("/var/lib")), 4242).unwrap_err();
        assert!(e.to_string().contains("not a cgroup2 mount"), "{e}");
        assert!(e.to_string().contains("/sys/fs/cgroup"), "{e}");

        // Our pid nowhere at the namespace root's depth: the host tree is not what it claims.
        f.file("4243/cgroup", "0::/\n");
        let e = CgroupTree::detect(&p, None, 4243).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupTreeError::NamespaceRootNotFound {
                    depth: 4,
                    pid: 4243,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn namespace_root_found_below_own_cgroup() {
        // The observer moved into a child of its namespace root after the namespace was made.
        let f = FakeProc::new("cgns-child");
        let host = f.root.join("host");
        kubernetes_node(&f, &host);
        let ns = "kubepods.slice/kubepods-burstable.slice/pod-obs.slice/cri-containerd-obs.scope";
        fs::write(host.join(ns).join("cgroup.procs"), "").unwrap();
        fs::create_dir_all(host.join(ns).join("agent")).unwrap();
        fs::write(host.join(ns).join("agent/cgroup.procs"), "4242\n").unwrap();
        f.file("4242/cgroup", "0::/agent\n");
        let t = CgroupTree::detect(&f.proc(), None, 4242).unwrap();
        assert_eq!(
            t.host_dir(1, "/agent").unwrap(),
            host.join(ns).join("agent")
        );
    }

    #[test]
    fn host_namespace_joins_plainly() {
        let f = FakeProc::new("cg-host");
        f.file(
            "self/mountinfo",
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n",
        );
        f.link("self/ns/cgroup", "cgroup:[4026531835]");
        f.link("1/ns/cgroup", "cgroup:[4026531835]");
        let t = CgroupTree::detect(&f.proc(), None, 1).unwrap();
        assert!(!t.translates());
        assert_eq!(
            t.host_dir(1, "/my-broker").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/my-broker")
        );
        // A subdirectory as the root: paths below it only.
        let sub = Path::new("/sys/fs/cgroup/unified/brokers");
        let t = CgroupTree::detect(&f.proc(), Some(sub), 1).unwrap();
        assert_eq!(t.host_dir(1, "/brokers/a").unwrap(), sub.join("a"));
        assert!(matches!(
            t.host_dir(1, "/other"),
            Err(CgroupTreeError::Outside { .. })
        ));
        let none = FakeProc::new("cg-none");
        none.file("self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n");
        assert!(matches!(
            CgroupTree::detect(&none.proc(), None, 1),
            Err(CgroupTreeError::NoCgroup2)
        ));
    }

    #[test]
    fn discovered_broker_outside_a_visible_tree_fails_start_up_only() {
        let f = broker_host();
        f.file("20/cgroup", "0::/../other-pod.scope\n");
        let r = Resolver::new(f.proc(), plain("/sys/fs/cgroup"));
        let spec = TargetSpec {
            discover: true,
            ..Default::default()
        };
        let e = r.resolve(&spec, true).unwrap_err();
        assert!(
            matches!(
                e,
                TargetError::Cgroup(CgroupTreeError::Outside { pid: 20, .. })
            ),
            "{e:?}"
        );
        // A refresh skips it and keeps the rest.
        let t = by_pid(r.resolve(&spec, false).unwrap());
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn discovery_finding_nothing_is_not_an_error() {
        let f = FakeProc::new("empty");
        process(&f, 30, "nginx", "/usr/sbin/nginx", "nginx");
        listeners(&f, &[30], &[(80, 300, 30)]);
        // A broker that exited between discovery and reading its sockets (only comm and cmdline left).
        process(&f, 40, "nats-server", "/usr/bin/nats-server", "nats-server");
        let r = Resolver::new(f.proc(), plain("/"));
        let spec = TargetSpec {
            discover: true,
            ..Default::default()
        };
        assert!(r.resolve(&spec, true).unwrap().is_empty());
        assert!(r.resolve(&spec, false).unwrap().is_empty());
        // Explicit selectors stay strict.
        let spec = TargetSpec {
            discover: true,
            names: vec!["mosquitto".into()],
            ..Default::default()
        };
        assert!(matches!(
            r.resolve(&spec, true),
            Err(TargetError::NoSuchName(_))
        ));
        assert!(r.resolve(&spec, false).unwrap().is_empty());
    }

    /// One re-resolve of a `--pid` spec (what the daemon does every second) through sock_diag
    /// and the fd cache, and through net/tcp: the same targets; the mean time of each is printed
    /// (`-- --nocapture`). BROKERSCOPE_REFRESH_PID=PID resolves that process instead of this one.
    #[test]
    fn refresh_same_targets_with_and_without_sock_diag() {
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pid = std::env::var("BROKERSCOPE_REFRESH_PID")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(std::process::id);
        let proc = ProcFs::default();
        let root = proc.cgroup2_mount().unwrap().expect("cgroup v2 mounted");
        let fast = Resolver::new(proc.clone(), CgroupTree::plain(root.clone()));
        let slow = Resolver::new(proc.without_sock_diag(), CgroupTree::plain(root));
        let spec = TargetSpec {
            pids: vec![pid],
            ..Default::default()
        };
        let summary = |t: &[Target]| -> Vec<_> {
            t.iter()
                .map(|t| (t.pid, t.ports.clone(), t.cgroup.clone()))
                .collect()
        };
        const N: u32 = 20;
        let timed = |r: &Resolver| {
            let start = std::time::Instant::now();
            let mut last = Vec::new();
            for _ in 0..N {
                last = r.resolve(&spec, true).unwrap();
            }
            (start.elapsed() / N, summary(&last))
        };
        // Other tests of this process open and close listeners: retry until both agree.
        for attempt in 1.. {
            let (fast_t, fast_r) = timed(&fast);
            let (slow_t, slow_r) = timed(&slow);
            eprintln!("resolve pid {pid}: sock_diag + fd cache {fast_t:?}, net/tcp {slow_t:?}");
            if fast_r == slow_r {
                break;
            }
            assert!(attempt < 5, "{fast_r:?} != {slow_r:?}");
        }
    }

    #[test]
    fn own_process_resolves_with_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proc = ProcFs::default();
        let root = proc.cgroup2_mount().unwrap().expect("cgroup v2 mounted");
        let r = Resolver::new(proc, CgroupTree::plain(root));
        let me = std::process::id();
        let targets = r
            .resolve(
                &TargetSpec {
                    pids: vec![me],
                    ..Default::default()
                },
                true,
            )
            .unwrap();
        assert_eq!(targets.len(), 1);
        assert!(targets[0].ports.contains(&port));
        let by_port = r
            .resolve(
                &TargetSpec {
                    ports: vec![port],
                    ..Default::default()
                },
                true,
            )
            .unwrap();
        assert_eq!(by_port[0].pid, me);
        assert_eq!(by_port[0].ports, BTreeSet::from([port]));
        assert!(!by_port[0].follow_listen);
        // Discovery on the real /proc: whatever brokers run here, this test process is none.
        let with_discovery = r
            .resolve(
                &TargetSpec {
                    pids: vec![me],
                    discover: true,
                    ..Default::default()
                },
                true,
            )
            .unwrap();
        let own = with_discovery.iter().find(|t| t.pid == me).unwrap();
        assert_eq!((own.kind, own.follow_listen), (None, true));
        assert!(own.ports.contains(&port));
    }
}
