//! Target selection: `--pid`, `--process`, `--port` and auto-discovery resolved to processes,
//! their cgroups and the TCP ports whose traffic is captured.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::discover::{self, BrokerKind};
use super::procfs::{ProcError, ProcFs};

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
    pub cgroup_root: PathBuf,
}

impl Resolver {
    pub fn new(proc: ProcFs, cgroup_root: PathBuf) -> Self {
        Self { proc, cgroup_root }
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
        let mut targets = Vec::with_capacity(wanted.len());
        for (pid, only) in wanted {
            match self.describe(pid, only, kinds.get(&pid).copied()) {
                Ok(t) => targets.push(t),
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
        let cgroup = join_cgroup(&self.cgroup_root, &rel);
        let ports = match only {
            Some(ports) => ports,
            None => self.proc.listening_ports(pid)?.into_iter().collect(),
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

/// "/sys/fs/cgroup" + "/a/b" → "/sys/fs/cgroup/a/b"; "/" is the root itself.
pub fn join_cgroup(root: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::discover::tests::{BEAM, RABBIT, listeners, process};
    use crate::capture::procfs::testkit::FakeProc;

    #[test]
    fn cgroup_paths_join() {
        let root = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(join_cgroup(root, "/"), root);
        assert_eq!(join_cgroup(root, "/my-broker"), root.join("my-broker"));
        assert_eq!(join_cgroup(root, "/a/b.scope"), root.join("a/b.scope"));
    }

    #[test]
    fn empty_spec_is_an_error() {
        let r = Resolver::new(ProcFs::default(), PathBuf::from("/sys/fs/cgroup"));
        assert!(matches!(
            r.resolve(&TargetSpec::default(), true),
            Err(TargetError::Empty)
        ));
    }

    #[test]
    fn unknown_selectors_are_errors_only_when_strict() {
        let r = Resolver::new(ProcFs::default(), PathBuf::from("/sys/fs/cgroup"));
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
        let r = Resolver::new(f.proc(), PathBuf::from("/sys/fs/cgroup"));
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
        let r = Resolver::new(f.proc(), PathBuf::from("/"));
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

    #[test]
    fn discovery_finding_nothing_is_not_an_error() {
        let f = FakeProc::new("empty");
        process(&f, 30, "nginx", "/usr/sbin/nginx", "nginx");
        listeners(&f, &[30], &[(80, 300, 30)]);
        // A broker that exited between discovery and reading its sockets (only comm and cmdline left).
        process(&f, 40, "nats-server", "/usr/bin/nats-server", "nats-server");
        let r = Resolver::new(f.proc(), PathBuf::from("/"));
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

    #[test]
    fn own_process_resolves_with_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proc = ProcFs::default();
        let root = proc.cgroup2_mount().unwrap().expect("cgroup v2 mounted");
        let r = Resolver::new(proc, root);
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
