//! /proc: processes, their cgroups, sockets and listening ports.
//!
//! Everything here reads a procfs tree through [`ProcFs`], whose root is normally `/proc` but can
//! be any directory laid out the same way (the tests build fake trees).
//!
//! - Processes: [`ProcFs::pids`], [`ProcFs::comm`], [`ProcFs::exe_name`], [`ProcFs::cmdline`],
//!   [`ProcFs::find_by_name`], [`ProcFs::cgroup_v2_path`].
//! - Sockets: [`ProcFs::socket_inodes`] (the fd table), [`ProcFs::tcp_sockets`] (`net/tcp` and
//!   `net/tcp6` of the process's network namespace), [`ProcFs::listening_ports`] (and
//!   [`ProcFs::listening_ports_cached`] with a [`ListenCache`], for the per-second re-resolve),
//!   [`ProcFs::pid_listening_on`], [`ProcFs::listeners_on`].
//! - Mounts: [`ProcFs::cgroup2_mount`], [`ProcFs::cgroup2_mounts`] (with their cgroup roots, from
//!   mountinfo), [`ProcFs::tracefs_mount`].
//! - [`SocketOwners`]: which process (and fd) owns a TCP connection given its addresses.
//!
//! A socket is tied to a process only through its inode: `net/tcp` lists every socket of a
//! network namespace with its inode, and `/proc/PID/fd/N` links to `socket:[INODE]`.
//!
//! For processes in our own network namespace (and only when the root is a real procfs), the
//! socket tables come from [`super::sockdiag`] instead: reading net/tcp costs ~5-7 ms of CPU per
//! read on a host with a large established hash, a listener dump or an exact lookup by 4-tuple
//! a few µs. The results are the same; any sock_diag failure falls back to /proc.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::sockdiag::SockDiag;

/// `st` column of `net/tcp`: TCP_ESTABLISHED.
pub const TCP_ESTABLISHED: u8 = 0x01;
/// `st` column of `net/tcp`: TCP_LISTEN.
pub const TCP_LISTEN: u8 = 0x0A;

/// The kernel keeps comm in TASK_COMM_LEN (16) bytes including the NUL.
const COMM_LEN: usize = 15;

/// Why something could not be read from /proc. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} does not exist (it may have exited); check the pid")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read {}: {source}{}", .path.display(), io_hint(.source))]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "cannot parse {what} at {}:{line}; the file is not in the expected procfs format \
         (unusual kernel?) — report it with the file's contents",
        .path.display()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "; run as root (other processes' fd tables and exe links need CAP_SYS_PTRACE)"
        }
        io::ErrorKind::NotFound => "; is procfs mounted (mount -t proc proc /proc)?",
        _ => "",
    }
}

impl ProcError {
    /// The process (or the fd/socket being read) went away: callers scanning many processes skip these.
    pub fn is_vanished(&self) -> bool {
        match self {
            ProcError::NoSuchProcess { .. } => true,
            ProcError::Io { source, .. } => is_gone(source),
            ProcError::Parse { .. } => false,
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// One line of `net/tcp` or `net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocketEntry {
    /// As printed: an IPv4-mapped IPv6 address stays `V6` (see [`normalize`]).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state (`TCP_ESTABLISHED` = 1, ..., `TCP_LISTEN` = 0x0A).
    pub state: u8,
    /// Socket inode; 0 for sockets no longer attached to a file (e.g. TIME_WAIT).
    pub inode: u64,
    pub uid: u32,
}

/// Turns an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into plain IPv4; anything else unchanged.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// A procfs tree (normally `/proc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
    /// The root is a real procfs (not a fake tree): TCP tables of processes in our own network
    /// namespace may be asked of sock_diag.
    sock_diag: bool,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let sock_diag = is_procfs(&root);
        Self { root, sock_diag }
    }

    /// The same tree, always reading net/tcp (for comparisons and measurements).
    pub fn without_sock_diag(mut self) -> Self {
        self.sock_diag = false;
        self
    }

    /// The procfs root this reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    fn pid_path(&self, pid: u32, rel: &str) -> PathBuf {
        self.pid_dir(pid).join(rel)
    }

    /// A failed read under /proc/PID: "not found" means the process exited if its directory is gone.
    fn io_err(&self, pid: u32, path: PathBuf, source: io::Error) -> ProcError {
        if is_gone(&source) && !self.pid_dir(pid).exists() {
            ProcError::NoSuchProcess { pid }
        } else {
            ProcError::Io { path, source }
        }
    }

    /// {root}/self/`rel` as text (lossy), with its path for parse errors.
    fn read_self(&self, rel: &str) -> Result<(PathBuf, String), ProcError> {
        let path = self.root.join("self").join(rel);
        match fs::read(&path) {
            Ok(raw) => Ok((path, String::from_utf8_lossy(&raw).into_owned())),
            Err(source) => Err(ProcError::Io { path, source }),
        }
    }

    fn read_pid_file(&self, pid: u32, rel: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.pid_path(pid, rel);
        fs::read(&path).map_err(|e| self.io_err(pid, path, e))
    }

    pub fn exists(&self, pid: u32) -> bool {
        pid != 0 && self.pid_dir(pid).is_dir()
    }

    fn comm_bytes(&self, pid: u32) -> Result<Vec<u8>, ProcError> {
        let mut b = self.read_pid_file(pid, "comm")?;
        if b.last() == Some(&b'\n') {
            b.pop();
        }
        Ok(b)
    }

    /// comm (without trailing newline)
    pub fn comm(&self, pid: u32) -> Result<String, ProcError> {
        Ok(String::from_utf8_lossy(&self.comm_bytes(pid)?).into_owned())
    }

    fn exe_basename_bytes(&self, pid: u32) -> Result<Option<Vec<u8>>, ProcError> {
        let path = self.pid_path(pid, "exe");
        match fs::read_link(&path) {
            Ok(target) => {
                let full = target.as_os_str().as_bytes();
                // The kernel appends this when the binary was replaced or removed after exec.
                let full = full.strip_suffix(b" (deleted)").unwrap_or(full);
                let base = full.rsplit(|&c| c == b'/').next().unwrap_or(full);
                Ok((!base.is_empty()).then(|| base.to_vec()))
            }
            // Kernel threads and zombies have no exe link.
            Err(e) if is_gone(&e) && self.pid_dir(pid).exists() => Ok(None),
            Err(e) => Err(self.io_err(pid, path, e)),
        }
    }

    /// basename of /proc/PID/exe readlink (strip " (deleted)")
    pub fn exe_name(&self, pid: u32) -> Result<Option<String>, ProcError> {
        Ok(self
            .exe_basename_bytes(pid)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// argv from /proc/PID/cmdline (empty for kernel threads).
    pub fn cmdline(&self, pid: u32) -> Result<Vec<String>, ProcError> {
        let raw = self.read_pid_file(pid, "cmdline")?;
        // Trailing NULs: the terminator, plus padding left by processes that rewrite their argv.
        let end = raw.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        if end == 0 {
            return Ok(Vec::new());
        }
        Ok(raw[..end]
            .split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// Tgid from /proc/PID/status; `None` if the file is not there (fake trees) or has no Tgid line.
    fn tgid(&self, pid: u32) -> Result<Option<u32>, ProcError> {
        let path = self.pid_path(pid, "status");
        let text = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if is_gone(&e) && self.pid_dir(pid).exists() => return Ok(None),
            Err(e) => return Err(self.io_err(pid, path, e)),
        };
        Ok(text
            .split(|&c| c == b'\n')
            .find_map(|l| l.strip_prefix(b"Tgid:"))
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()))
    }

    /// All numeric entries of /proc that are processes (tgids, not threads), sorted.
    pub fn pids(&self) -> Result<Vec<u32>, ProcError> {
        let rd = fs::read_dir(&self.root).map_err(|source| ProcError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let Some(pid) = parse_decimal::<u32>(&ent.file_name()) else {
                continue;
            };
            // The real /proc lists only tgids, but a thread's dir may still show up in copies of it.
            match self.tgid(pid) {
                Ok(Some(tgid)) if tgid != pid => {}
                Err(e) if e.is_vanished() => {}
                _ => out.push(pid),
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Processes whose comm equals `name`, or whose exe basename equals `name`, or (comm is
    /// truncated to 15 bytes) whose comm equals the first 15 bytes of name and exe basename starts
    /// with it. For that truncated case, argv[0] or argv[1] (scripts: the interpreter's first
    /// argument) having `name` as basename also counts.
    pub fn find_by_name(&self, name: &str) -> Result<Vec<u32>, ProcError> {
        let name = name.as_bytes();
        let prefix = &name[..name.len().min(COMM_LEN)];
        let mut out = Vec::new();
        for pid in self.pids()? {
            // Processes we cannot read (or that exited) are simply not matches.
            let Ok(comm) = self.comm_bytes(pid) else {
                continue;
            };
            if comm == name {
                out.push(pid);
                continue;
            }
            let exe = self.exe_basename_bytes(pid).ok().flatten();
            if exe.as_deref() == Some(name) {
                out.push(pid);
                continue;
            }
            if name.len() > COMM_LEN && comm == prefix {
                let by_exe = exe.is_some_and(|e| e.starts_with(prefix));
                if by_exe || self.argv_names(pid, name) {
                    out.push(pid);
                }
            }
        }
        Ok(out)
    }

    fn argv_names(&self, pid: u32, name: &[u8]) -> bool {
        let Ok(argv) = self.cmdline(pid) else {
            return false;
        };
        argv.iter()
            .take(2)
            .any(|a| a.rsplit('/').next().is_some_and(|b| b.as_bytes() == name))
    }

    /// The cgroup v2 path of the process: the "0::/path" line of /proc/PID/cgroup (hybrid hosts
    /// have v1 lines too; take the "0::" one). Returns e.g. "/my-broker" or "/"; `None` on a
    /// v1-only host.
    pub fn cgroup_v2_path(&self, pid: u32) -> Result<Option<String>, ProcError> {
        let raw = self.read_pid_file(pid, "cgroup")?;
        let text = String::from_utf8_lossy(&raw);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .filter(|p| !p.is_empty())
            .map(str::to_owned))
    }

    /// Socket inodes the process holds: readlink every /proc/PID/fd/N, keep "socket:[INODE]" →
    /// (inode, fd). Sorted by fd.
    pub fn socket_inodes(&self, pid: u32) -> Result<Vec<(u64, u32)>, ProcError> {
        let dir = self.pid_path(pid, "fd");
        let rd = fs::read_dir(&dir).map_err(|e| self.io_err(pid, dir.clone(), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| self.io_err(pid, dir.clone(), e))?;
            let Some(fd) = parse_decimal::<u32>(&ent.file_name()) else {
                continue;
            };
            let link = ent.path();
            let target = match fs::read_link(&link) {
                Ok(t) => t,
                Err(e) if is_gone(&e) => continue, // closed since the directory was listed
                Err(e) => return Err(self.io_err(pid, link, e)),
            };
            if let Some(inode) = parse_socket_link(target.as_os_str().as_bytes()) {
                out.push((inode, fd));
            }
        }
        out.sort_unstable_by_key(|&(_, fd)| fd);
        Ok(out)
    }

    /// TCP sockets of the process's network namespace: parse /proc/PID/net/tcp and
    /// /proc/PID/net/tcp6 (missing tcp6, i.e. IPv6 disabled, is fine).
    pub fn tcp_sockets(&self, pid: u32) -> Result<Vec<TcpSocketEntry>, ProcError> {
        let mut out = self.tcp_table(pid, "net/tcp")?;
        match self.tcp_table(pid, "net/tcp6") {
            Ok(v6) => out.extend(v6),
            Err(ProcError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    fn tcp_table(&self, pid: u32, rel: &str) -> Result<Vec<TcpSocketEntry>, ProcError> {
        let raw = self.read_pid_file(pid, rel)?;
        parse_tcp_table(&String::from_utf8_lossy(&raw), &self.pid_path(pid, rel))
    }

    /// Listening TCP ports owned by the process: tcp_sockets() in state LISTEN (0x0A) whose inode
    /// is in socket_inodes(pid). Sorted, deduplicated.
    pub fn listening_ports(&self, pid: u32) -> Result<Vec<u16>, ProcError> {
        let inodes: HashSet<u64> = self
            .socket_inodes(pid)?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        Ok(owned_ports(&self.listen_table(pid)?, &inodes))
    }

    /// [`ProcFs::listening_ports`], without listing the fd table again (one readlink per fd:
    /// thousands for a busy broker) when the same process (same start time) was listed less
    /// than [`LISTEN_RELIST`] ago and the listening sockets of its namespace are the same ones.
    pub fn listening_ports_cached(
        &self,
        pid: u32,
        cache: &ListenCache,
    ) -> Result<Vec<u16>, ProcError> {
        let table = self.listen_table(pid)?;
        let mut listeners: Vec<u64> = table
            .iter()
            .filter(|s| s.state == TCP_LISTEN)
            .map(|s| s.inode)
            .collect();
        listeners.sort_unstable();
        let start = match self.start_time(pid) {
            Ok(t) => Some(t),
            // A tree without stat files (tests): no cache.
            Err(e) if e.is_vanished() && self.exists(pid) => None,
            Err(e) => return Err(e),
        };
        let mut entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(start) = start
            && let Some(e) = entries.get(&pid)
            && e.start == start
            && e.listeners == listeners
            && e.listed.elapsed() < LISTEN_RELIST
        {
            return Ok(e.ports.clone());
        }
        let inodes: HashSet<u64> = self
            .socket_inodes(pid)?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let ports = owned_ports(&table, &inodes);
        if let Some(start) = start {
            entries.insert(
                pid,
                ListenEntry {
                    start,
                    listeners,
                    ports: ports.clone(),
                    listed: Instant::now(),
                },
            );
        }
        Ok(ports)
    }

    /// The listening sockets of the process's namespace: sock_diag when it is ours, else its
    /// net/tcp tables (all states).
    fn listen_table(&self, pid: u32) -> Result<Vec<TcpSocketEntry>, ProcError> {
        match self.own_netns_listeners(pid) {
            Some(t) => Ok(t),
            None => self.tcp_sockets(pid),
        }
    }

    /// Start time of the process (field 22 of /proc/PID/stat, clock ticks since boot): tells a
    /// reused pid from the process that had it.
    fn start_time(&self, pid: u32) -> Result<u64, ProcError> {
        let raw = self.read_pid_file(pid, "stat")?;
        let text = String::from_utf8_lossy(&raw);
        // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
        text.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(19)?.parse().ok())
            .ok_or_else(|| ProcError::Parse {
                path: self.pid_path(pid, "stat"),
                line: 1,
                what: "the start time (field 22)".to_owned(),
            })
    }

    /// The processes listening on `port` (any address, v4 or v6), sorted. Processes that vanish
    /// mid-scan are skipped; other per-process errors (e.g. no permission to read a process's fds)
    /// are returned only if no listener was found.
    pub fn pid_listening_on(&self, port: u16) -> Result<Vec<u32>, ProcError> {
        let mut pids: Vec<u32> = self
            .listeners_on(&[port], &[])?
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.dedup();
        Ok(pids)
    }

    /// (pid, port) for every process listening on one of `ports`, sorted. The fd tables of
    /// `known` are read first, and a listener one of them holds is not looked for in other
    /// processes: when the owners are known, the other fd tables of the namespace are not read.
    /// Errors as for [`ProcFs::pid_listening_on`].
    pub fn listeners_on(&self, ports: &[u16], known: &[u32]) -> Result<Vec<(u32, u16)>, ProcError> {
        let pids = self.pids()?;
        let known: HashSet<u32> = known.iter().copied().filter(|p| pids.contains(p)).collect();
        let mut found = Vec::new();
        let mut first_err = None;
        // net/tcp is per namespace, so read it once per namespace, and only read the fd tables
        // of namespaces that have such a listener.
        for NsGroup {
            pids: mut group,
            ours,
        } in self.group_by_netns(&pids)
        {
            let table = match ours.then(diag_listeners).flatten() {
                Some(t) => t,
                None => match self.first_table(&group, &mut first_err) {
                    Some(t) => t,
                    None => continue,
                },
            };
            // inode → port
            let listeners: HashMap<u64, u16> = table
                .iter()
                .filter(|s| {
                    s.state == TCP_LISTEN && ports.contains(&s.local.port()) && s.inode != 0
                })
                .map(|s| (s.inode, s.local.port()))
                .collect();
            if listeners.is_empty() {
                continue;
            }
            group.sort_by_key(|p| !known.contains(p));
            let mut owned_by_known = HashSet::new();
            for &pid in &group {
                let is_known = known.contains(&pid);
                if !is_known && listeners.keys().all(|i| owned_by_known.contains(i)) {
                    break;
                }
                match self.socket_inodes(pid) {
                    Ok(fds) => {
                        for (inode, _) in fds {
                            let Some(&port) = listeners.get(&inode) else {
                                continue;
                            };
                            if is_known {
                                owned_by_known.insert(inode);
                            } else if owned_by_known.contains(&inode) {
                                continue;
                            }
                            found.push((pid, port));
                        }
                    }
                    Err(e) => note_err(&mut first_err, e),
                }
            }
        }
        if found.is_empty()
            && let Some(e) = first_err
        {
            return Err(e);
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Groups pids sharing a network namespace (by the /proc/PID/ns/net link), keeping order.
    /// A pid whose link cannot be read gets a group of its own.
    fn group_by_netns(&self, pids: &[u32]) -> Vec<NsGroup> {
        let own = self.own_netns();
        let mut groups: Vec<NsGroup> = Vec::new();
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut seen = HashSet::new();
        for &pid in pids {
            if !seen.insert(pid) {
                continue;
            }
            match fs::read_link(self.pid_path(pid, "ns/net")) {
                Ok(ns) => match index.get(&ns) {
                    Some(&i) => groups[i].pids.push(pid),
                    None => {
                        let ours = own.as_ref() == Some(&ns);
                        index.insert(ns, groups.len());
                        groups.push(NsGroup {
                            pids: vec![pid],
                            ours,
                        });
                    }
                },
                Err(_) => groups.push(NsGroup {
                    pids: vec![pid],
                    ours: false,
                }),
            }
        }
        groups
    }

    /// Our network namespace (the /proc/self/ns/net link) when sock_diag may be used: it answers
    /// for the namespace of the netlink socket, i.e. this one.
    fn own_netns(&self) -> Option<PathBuf> {
        if !self.sock_diag {
            return None;
        }
        fs::read_link(self.root.join("self/ns/net")).ok()
    }

    /// Whether the process's sockets can be asked of sock_diag (it shares our netns).
    fn in_own_netns(&self, pid: u32) -> bool {
        self.own_netns().is_some_and(|own| {
            fs::read_link(self.pid_path(pid, "ns/net")).is_ok_and(|ns| ns == own)
        })
    }

    /// The listening sockets of the process's namespace from sock_diag, if it is ours and the
    /// kernel answered.
    fn own_netns_listeners(&self, pid: u32) -> Option<Vec<TcpSocketEntry>> {
        self.in_own_netns(pid).then(diag_listeners).flatten()
    }

    /// The tcp tables of a namespace, read through the first of its pids that is still there.
    fn first_table(
        &self,
        group: &[u32],
        first_err: &mut Option<ProcError>,
    ) -> Option<Vec<TcpSocketEntry>> {
        for &pid in group {
            match self.tcp_sockets(pid) {
                Ok(t) => return Some(t),
                Err(e) => note_err(first_err, e),
            }
        }
        None
    }

    fn mounts(&self) -> Result<Vec<(PathBuf, String)>, ProcError> {
        let (path, text) = self.read_self("mounts")?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut f = line.split_ascii_whitespace();
            let (Some(_dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else {
                return Err(ProcError::Parse {
                    path,
                    line: i + 1,
                    what: "a mount line (expected: device mountpoint fstype ...)".into(),
                });
            };
            out.push((
                PathBuf::from(OsStr::from_bytes(&unescape_mount(mnt))),
                fstype.to_owned(),
            ));
        }
        Ok(out)
    }

    /// Mount point of cgroup v2 from {root}/self/mounts: the line with fstype "cgroup2"; e.g.
    /// "/sys/fs/cgroup/unified" on hybrid hosts, "/sys/fs/cgroup" on unified ones. None if not
    /// mounted.
    pub fn cgroup2_mount(&self) -> Result<Option<PathBuf>, ProcError> {
        Ok(self
            .mounts()?
            .into_iter()
            .find(|(_, t)| t == "cgroup2")
            .map(|(m, _)| m))
    }

    /// Every cgroup2 mount of this mount namespace, from {root}/self/mountinfo, in mount order.
    /// Unlike /proc/self/mounts, mountinfo tells which cgroup each mount shows (its root).
    pub fn cgroup2_mounts(&self) -> Result<Vec<Cgroup2Mount>, ProcError> {
        let (path, text) = self.read_self("mountinfo")?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let sep = f.iter().position(|&x| x == "-");
            let (Some(sep), true) = (sep, f.len() >= 5) else {
                return Err(ProcError::Parse {
                    path,
                    line: i + 1,
                    what: "a mountinfo line (expected: id parent dev root mountpoint options ... - fstype ...)"
                        .into(),
                });
            };
            if sep < 5 || f.get(sep + 1) != Some(&"cgroup2") {
                continue;
            }
            out.push(Cgroup2Mount {
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape_mount(f[4]))),
                root: String::from_utf8_lossy(&unescape_mount(f[3])).into_owned(),
            });
        }
        Ok(out)
    }

    /// The cgroup namespace of a process (the /proc/PID/ns/cgroup link, e.g. "cgroup:[4026531835]");
    /// `None` when it cannot be read (no such link in fake trees, or no permission).
    pub fn cgroup_namespace(&self, pid: &str) -> Option<PathBuf> {
        fs::read_link(self.root.join(pid).join("ns/cgroup")).ok()
    }

    /// tracefs mount point, if mounted (fstype "tracefs"); /sys/kernel/tracing is preferred when
    /// tracefs is mounted in several places.
    pub fn tracefs_mount(&self) -> Result<Option<PathBuf>, ProcError> {
        let all: Vec<PathBuf> = self
            .mounts()?
            .into_iter()
            .filter(|(_, t)| t == "tracefs")
            .map(|(m, _)| m)
            .collect();
        let preferred = Path::new("/sys/kernel/tracing");
        Ok(all
            .iter()
            .find(|m| *m == preferred)
            .or(all.first())
            .cloned())
    }
}

/// One line of mountinfo with fstype cgroup2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The cgroup the mount shows at its top, relative to the reader's cgroup namespace: "/"
    /// for a mount of the namespace's own root; "/../.." for a host tree bound into a
    /// container (its top is two levels above the namespace root).
    pub root: String,
}

/// Even when nothing seems to have changed, a process's fd table is listed again this often: a
/// listener it closes or receives while another process keeps it open (so its namespace has the
/// same listeners) is noticed within this time.
pub const LISTEN_RELIST: Duration = Duration::from_secs(10);

/// What [`ProcFs::listening_ports_cached`] remembers per pid.
#[derive(Debug, Default)]
pub struct ListenCache {
    entries: Mutex<HashMap<u32, ListenEntry>>,
}

#[derive(Debug)]
struct ListenEntry {
    start: u64,
    /// Inodes of every listening socket of the namespace, sorted.
    listeners: Vec<u64>,
    ports: Vec<u16>,
    listed: Instant,
}

impl ListenCache {
    /// Forgets every pid but these (processes no longer targets).
    pub fn keep_only(&self, pids: impl Fn(u32) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|&pid, _| pids(pid));
    }
}

/// Ports of the LISTEN sockets in `table` whose inode is one of `inodes`, sorted, deduplicated.
fn owned_ports(table: &[TcpSocketEntry], inodes: &HashSet<u64>) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .iter()
        .filter(|s| s.state == TCP_LISTEN && inodes.contains(&s.inode))
        .map(|s| s.local.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Pids sharing a network namespace; `ours`: it is our own and sock_diag may be asked.
struct NsGroup {
    pids: Vec<u32>,
    ours: bool,
}

/// Whether `root` is a procfs mount (fake trees in tests are not).
fn is_procfs(root: &Path) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data, all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and st is a writable statfs.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    let magic = st.f_type as i64;
    rc == 0 && magic == PROC_SUPER_MAGIC
}

/// Every listener of our namespace from sock_diag; `None` (use /proc) if the kernel cannot say,
/// e.g. without the tcp_diag module.
fn diag_listeners() -> Option<Vec<TcpSocketEntry>> {
    match SockDiag::open().and_then(|mut d| d.listeners()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!("{e}; reading /proc/net/tcp instead");
            None
        }
    }
}

/// Keeps the first error that is not "the process went away".
fn note_err(slot: &mut Option<ProcError>, e: ProcError) {
    if !e.is_vanished() && slot.is_none() {
        *slot = Some(e);
    }
}

/// Only plain decimal names ("123"), not "+123" which `parse` would accept.
fn parse_decimal<T: std::str::FromStr>(name: &OsStr) -> Option<T> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// "socket:[12345]" → 12345.
fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    parse_decimal(OsStr::from_bytes(inner))
}

/// Undoes the octal escapes (`\040` for space, ...) the kernel uses in /proc/self/mounts.
fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn parse_hex_u32(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// "0100007F:1F90" → 127.0.0.1:8080. The kernel prints each 32-bit word of the (network order)
/// address as a host-order integer, so the word's native-endian bytes are the address bytes;
/// the port is printed already converted to host order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    if port.is_empty() || port.len() > 4 || !port.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    match ip.len() {
        8 => {
            let v4 = Ipv4Addr::from(parse_hex_u32(ip)?.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(v4, port)))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (w, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = ip.get(w * 8..w * 8 + 8)?;
                chunk.copy_from_slice(&parse_hex_u32(word)?.to_ne_bytes());
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(bytes),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Parses the text of a `net/tcp` or `net/tcp6` file (header line included); `path` is for errors.
pub fn parse_tcp_table(text: &str, path: &Path) -> Result<Vec<TcpSocketEntry>, ProcError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.is_empty() || f[0] == "sl" {
            continue; // blank or the header
        }
        let bad = |what: &str| ProcError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            what: what.to_owned(),
        };
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if f.len() < 10 {
            return Err(bad("a socket line (expected at least 10 fields)"));
        }
        let local = parse_proc_addr(f[1]).ok_or_else(|| bad("the local address"))?;
        let remote = parse_proc_addr(f[2]).ok_or_else(|| bad("the remote address"))?;
        let state = u8::from_str_radix(f[3], 16).map_err(|_| bad("the state"))?;
        let uid = f[7].parse().map_err(|_| bad("the uid"))?;
        let inode = f[9].parse().map_err(|_| bad("the inode"))?;
        out.push(TcpSocketEntry {
            local,
            remote,
            state,
            inode,
            uid,
        });
    }
    Ok(out)
}

/// Owner of a socket: the process and the fd through which it holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketOwner {
    pub pid: u32,
    pub fd: u32,
    pub inode: u64,
}

/// What [`SocketOwners::find`] knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Owner(SocketOwner),
    /// Not among the sockets read at the last refresh: a refresh may find it.
    Unknown,
    /// The kernel has the connection without a file (not accepted yet) or not at all (closed):
    /// no fd table holds it now, so a refresh would be wasted.
    NoFileYet,
}

/// Finds which process owns a TCP connection, given its addresses, by reading the target
/// processes' net/tcp and fd tables; results cached by inode; refresh on miss (rate-limited by
/// the caller).
#[derive(Debug)]
pub struct SocketOwners {
    proc: ProcFs,
    /// (normalized local, normalized remote) → inodes (several only across namespaces), for
    /// namespaces read through net/tcp.
    by_tuple: HashMap<(SocketAddr, SocketAddr), Vec<u64>>,
    by_inode: HashMap<u64, SocketOwner>,
    /// Some refreshed pid is in our namespace: a tuple not in `by_tuple` is looked up live with
    /// sock_diag (one hash lookup) instead of from a copy of the whole table.
    diag_lookup: bool,
    diag: Option<SockDiag>,
    /// sock_diag failed once: net/tcp from then on.
    diag_broken: bool,
}

impl SocketOwners {
    pub fn new(proc: ProcFs) -> Self {
        Self {
            proc,
            by_tuple: HashMap::new(),
            by_inode: HashMap::new(),
            diag_lookup: false,
            diag: None,
            diag_broken: false,
        }
    }

    pub fn proc(&self) -> &ProcFs {
        &self.proc
    }

    /// Rebuild the tables for these pids (each pid's fds, and the tcp tables of its netns unless
    /// it is ours: those are looked up per connection). Pids that have exited are skipped; the
    /// tables are rebuilt from whatever could be read, and the first other error (if any) is
    /// returned afterwards.
    pub fn refresh(&mut self, pids: &[u32]) -> Result<(), ProcError> {
        let mut by_inode: HashMap<u64, SocketOwner> = HashMap::new();
        let mut by_tuple: HashMap<(SocketAddr, SocketAddr), Vec<u64>> = HashMap::new();
        let mut first_err = None;
        let mut diag_lookup = false;
        for NsGroup { pids: group, ours } in self.proc.group_by_netns(pids) {
            for &pid in &group {
                match self.proc.socket_inodes(pid) {
                    // A socket shared after fork keeps the first owner seen.
                    Ok(fds) => {
                        for (inode, fd) in fds {
                            by_inode
                                .entry(inode)
                                .or_insert(SocketOwner { pid, fd, inode });
                        }
                    }
                    Err(e) => note_err(&mut first_err, e),
                }
            }
            if ours && self.diag.is_none() && !self.diag_broken {
                match SockDiag::open() {
                    Ok(d) => self.diag = Some(d),
                    Err(e) => {
                        tracing::debug!("{e}; reading /proc/net/tcp instead");
                        self.diag_broken = true;
                    }
                }
            }
            if ours && self.diag.is_some() {
                diag_lookup = true;
                continue;
            }
            let Some(table) = self.proc.first_table(&group, &mut first_err) else {
                continue;
            };
            // Only sockets of the target processes: the namespace may hold many others.
            for s in table
                .into_iter()
                .filter(|s| by_inode.contains_key(&s.inode))
            {
                by_tuple
                    .entry((normalize(s.local), normalize(s.remote)))
                    .or_default()
                    .push(s.inode);
            }
        }
        self.by_inode = by_inode;
        self.by_tuple = by_tuple;
        self.diag_lookup = diag_lookup;
        first_err.map_or(Ok(()), Err)
    }

    /// Owner (pid, fd, inode) of the connection local→remote, if one of the pids of the last
    /// refresh held it then. Addresses are compared after [`normalize`].
    pub fn lookup(&mut self, local: SocketAddr, remote: SocketAddr) -> Option<SocketOwner> {
        match self.find(local, remote) {
            Lookup::Owner(o) => Some(o),
            Lookup::Unknown | Lookup::NoFileYet => None,
        }
    }

    /// [`SocketOwners::lookup`], saying whether a [`SocketOwners::refresh`] could help.
    pub fn find(&mut self, local: SocketAddr, remote: SocketAddr) -> Lookup {
        if let Some(inodes) = self.by_tuple.get(&(normalize(local), normalize(remote)))
            && let Some(o) = inodes.iter().find_map(|i| self.by_inode.get(i))
        {
            return Lookup::Owner(*o);
        }
        if !self.diag_lookup {
            return Lookup::Unknown;
        }
        let Some(diag) = self.diag.as_mut() else {
            return Lookup::Unknown;
        };
        match diag.connection(local, remote) {
            Ok(Some(s)) if s.inode != 0 => match self.by_inode.get(&s.inode) {
                Some(o) => Lookup::Owner(*o),
                None => Lookup::Unknown,
            },
            // Inode 0: not attached to a file (not accepted yet, or closing); no socket: gone.
            Ok(_) => Lookup::NoFileYet,
            Err(e) => {
                tracing::debug!("{e}; reading /proc/net/tcp from the next refresh on");
                self.diag = None;
                self.diag_broken = true;
                Lookup::Unknown
            }
        }
    }

    /// Owner of a socket inode, if one of the refreshed pids held it.
    pub fn owner_of_inode(&self, inode: u64) -> Option<SocketOwner> {
        self.by_inode.get(&inode).copied()
    }
}

/// Fake procfs trees for tests (here and in the modules built on [`ProcFs`]).
#[cfg(test)]
pub(crate) mod testkit {
    use super::ProcFs;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake procfs tree in a fresh temp directory, removed on drop.
    pub(crate) struct FakeProc {
        pub(crate) root: PathBuf,
    }

    impl FakeProc {
        pub(crate) fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "brokerscope-procfs-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self { root }
        }
        pub(crate) fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, contents).unwrap();
            self
        }
        pub(crate) fn link(&self, rel: &str, target: &str) -> &Self {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
            self
        }
        pub(crate) fn proc(&self) -> ProcFs {
            ProcFs::new(&self.root)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    pub(crate) const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n";

    /// One `net/tcp` line: a socket bound to 0.0.0.0:`port` in state LISTEN with this inode.
    pub(crate) fn tcp_listen_line(slot: usize, port: u16, inode: u64) -> String {
        format!(
            "{slot:4}: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{FakeProc, TCP_HEADER, tcp_listen_line};
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    const TCP6_HEADER: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    /// The shared namespace of pids 100 and 200 (host-order words: little-endian fixtures).
    fn host_tcp() -> String {
        TCP_HEADER.to_owned()
            // 0.0.0.0:9092 LISTEN, kafka
            + "   0: 00000000:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0                      \n"
            // 0.0.0.0:22 LISTEN, sshd
            + "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0                      \n"
            // 127.0.0.1:9092 <-> 127.0.0.1:50000 ESTABLISHED, kafka's side
            + "   2: 0100007F:2384 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1                     \n"
            // the client's side, owned by nobody we know
            + "   3: 0100007F:C350 0100007F:2384 01 00000000:00000000 00:00000000 00000000  1000        0 5003 1 0000000000000000 20 4 30 10 -1                     \n"
            // TIME_WAIT: no inode
            + "   4: 0100000A:2384 0200000A:D431 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000                                     \n"
    }

    fn host_tcp6() -> String {
        TCP6_HEADER.to_owned()
            // [::]:9093 LISTEN, kafka
            + "   0: 00000000000000000000000000000000:2385 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0\n"
            // [::1]:8080 LISTEN, owned by a process not in this tree
            + "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0\n"
            // ::ffff:127.0.0.1:9093 <-> ::ffff:127.0.0.1:50001 ESTABLISHED, kafka
            + "   2: 0000000000000000FFFF00000100007F:2385 0000000000000000FFFF00000100007F:C351 01 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1\n"
    }

    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
tracefs /sys/kernel/debug/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0
tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 /mnt/my\\040disk ext4 rw,relatime 0 0
";

    fn fixture() -> FakeProc {
        let f = FakeProc::new("tree");
        let (tcp, tcp6) = (host_tcp(), host_tcp6());
        // 100: kafka-server-start (comm truncated), hybrid cgroups.
        f.file("100/comm", "kafka-server-st\n")
            .link("100/exe", "/opt/kafka/bin/kafka-server-start (deleted)")
            .file("100/cmdline", b"kafka-server-start\0--config\0/etc/kafka/server.properties\0")
            .file("100/status", "Name:\tkafka-server-st\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t100\nNgid:\t0\nPid:\t100\n")
            .file(
                "100/cgroup",
                "12:pids:/my-broker\n4:memory:/my-broker\n1:name=systemd:/my-broker\n0::/my-broker\n",
            )
            .link("100/ns/net", "net:[4026531840]")
            .link("100/fd/0", "/dev/null")
            .link("100/fd/3", "socket:[1001]")
            .link("100/fd/4", "socket:[1002]")
            .link("100/fd/5", "socket:[1003]")
            .link("100/fd/6", "pipe:[999]")
            .link("100/fd/7", "socket:[1004]")
            .file("100/net/tcp", &tcp)
            .file("100/net/tcp6", &tcp6);
        // 101: a thread of 100.
        f.file("101/comm", "kafka-io\n")
            .file("101/status", "Name:\tkafka-io\nTgid:\t100\nPid:\t101\n");
        // 200: sshd, same namespace, unified cgroups.
        f.file("200/comm", "sshd\n")
            .link("200/exe", "/usr/sbin/sshd")
            .file(
                "200/cmdline",
                b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\0\0\0\0",
            )
            .file("200/status", "Name:\tsshd\nTgid:\t200\n")
            .file("200/cgroup", "0::/system.slice/ssh.service\n")
            .link("200/ns/net", "net:[4026531840]")
            .link("200/fd/3", "socket:[2001]")
            .file("200/net/tcp", &tcp)
            .file("200/net/tcp6", &tcp6);
        // 300: own namespace without ns link, IPv6 disabled (no tcp6), v1-only cgroups, no status.
        f.file("300/comm", "redis-server\n")
            .link("300/exe", "/usr/bin/redis-server")
            .file("300/cmdline", "")
            .file("300/cgroup", "4:memory:/redis\n1:name=systemd:/redis\n")
            .file("300/net/tcp", TCP_HEADER);
        fs::create_dir_all(f.root.join("300/fd")).unwrap();
        // Non-process entries.
        f.file("self/mounts", MOUNTS)
            .file("sys/kernel/pid_max", "4194304\n")
            .file("uptime", "1.0 1.0\n");
        f
    }

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn comm_exe_cmdline() {
        let f = fixture();
        let p = f.proc();
        assert!(p.exists(100));
        assert!(!p.exists(999));
        assert_eq!(p.comm(100).unwrap(), "kafka-server-st");
        assert_eq!(
            p.exe_name(100).unwrap().as_deref(),
            Some("kafka-server-start")
        );
        assert_eq!(p.exe_name(200).unwrap().as_deref(), Some("sshd"));
        assert_eq!(
            p.cmdline(100).unwrap(),
            [
                "kafka-server-start",
                "--config",
                "/etc/kafka/server.properties"
            ]
        );
        assert_eq!(p.cmdline(200).unwrap().len(), 1);
        assert!(p.cmdline(300).unwrap().is_empty());
        // No exe link (kernel thread) is not an error.
        assert_eq!(p.exe_name(101).unwrap(), None);
    }

    #[test]
    fn pids_are_tgids_only() {
        let f = fixture();
        assert_eq!(f.proc().pids().unwrap(), [100, 200, 300]);
    }

    #[test]
    fn find_by_name_rules() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(p.find_by_name("kafka-server-start").unwrap(), [100]); // truncated comm + exe
        assert_eq!(p.find_by_name("kafka-server-st").unwrap(), [100]); // comm as shown
        assert_eq!(p.find_by_name("sshd").unwrap(), [200]);
        assert_eq!(p.find_by_name("redis-server").unwrap(), [300]);
        assert!(p.find_by_name("kafka").unwrap().is_empty());
        assert!(p.find_by_name("nginx").unwrap().is_empty());
    }

    #[test]
    fn find_by_name_script_by_argv() {
        let f = FakeProc::new("script");
        f.file("7/comm", "my-long-broker-\n")
            .link("7/exe", "/usr/bin/python3.12")
            .file("7/cmdline", b"/usr/bin/python3\0/opt/my-long-broker-name\0")
            .file("8/comm", "my-long-broker-\n")
            .link("8/exe", "/usr/bin/python3.12")
            .file(
                "8/cmdline",
                b"/usr/bin/python3\0/opt/my-long-broker-other\0",
            );
        assert_eq!(f.proc().find_by_name("my-long-broker-name").unwrap(), [7]);
    }

    #[test]
    fn cgroup_paths() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(
            p.cgroup_v2_path(100).unwrap().as_deref(),
            Some("/my-broker")
        );
        assert_eq!(
            p.cgroup_v2_path(200).unwrap().as_deref(),
            Some("/system.slice/ssh.service")
        );
        assert_eq!(p.cgroup_v2_path(300).unwrap(), None);
        f.file("400/cgroup", "1:name=systemd:/\n0::/\n");
        assert_eq!(p.cgroup_v2_path(400).unwrap().as_deref(), Some("/"));
    }

    #[test]
    fn socket_inodes_from_fd_links() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(
            p.socket_inodes(100).unwrap(),
            [(1001, 3), (1002, 4), (1003, 5), (1004, 7)]
        );
        assert_eq!(p.socket_inodes(200).unwrap(), [(2001, 3)]);
        assert!(p.socket_inodes(300).unwrap().is_empty());
    }

    #[test]
    #[cfg_attr(
        target_endian = "big",
        ignore = "fixtures are in little-endian host order"
    )]
    fn tcp_tables_parse() {
        let f = fixture();
        let t = f.proc().tcp_sockets(100).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(
            t[0],
            TcpSocketEntry {
                local: v4("0.0.0.0:9092"),
                remote: v4("0.0.0.0:0"),
                state: TCP_LISTEN,
                inode: 1001,
                uid: 1000
            }
        );
        assert_eq!(t[2].local, v4("127.0.0.1:9092"));
        assert_eq!(t[2].remote, v4("127.0.0.1:50000"));
        assert_eq!(t[2].state, TCP_ESTABLISHED);
        assert_eq!(t[4].local, v4("10.0.0.1:9092"));
        assert_eq!(t[4].inode, 0);
        assert_eq!(t[5].local, v4("[::]:9093"));
        assert_eq!(t[6].local, v4("[::1]:8080"));
        assert_eq!(t[6].uid, 0);
        // v4-mapped stays V6; normalize() makes it V4.
        assert_eq!(t[7].local, v4("[::ffff:127.0.0.1]:9093"));
        assert_eq!(normalize(t[7].local), v4("127.0.0.1:9093"));
        assert_eq!(normalize(t[7].remote), v4("127.0.0.1:50001"));
        // Missing tcp6 (IPv6 disabled) is fine.
        assert!(f.proc().tcp_sockets(300).unwrap().is_empty());
    }

    #[test]
    #[cfg_attr(
        target_endian = "big",
        ignore = "fixtures are in little-endian host order"
    )]
    fn address_parsing() {
        assert_eq!(parse_proc_addr("0100007F:1F90"), Some(v4("127.0.0.1:8080")));
        assert_eq!(parse_proc_addr("0101A8C0:0050"), Some(v4("192.168.1.1:80")));
        assert_eq!(
            parse_proc_addr("B80D0120000000000000000001000000:01BB"),
            Some(v4("[2001:db8::1]:443"))
        );
        for bad in [
            "",
            "0100007F",
            "0100007F:",
            "0100007:0050",
            "0100007G:0050",
            "0100007F:10000",
        ] {
            assert_eq!(parse_proc_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn normalize_only_touches_v4_mapped() {
        assert_eq!(normalize(v4("[::ffff:10.1.2.3]:5672")), v4("10.1.2.3:5672"));
        assert_eq!(normalize(v4("[::1]:5672")), v4("[::1]:5672"));
        assert_eq!(normalize(v4("10.1.2.3:5672")), v4("10.1.2.3:5672"));
        // IPv4-compatible (deprecated ::a.b.c.d) is not mapped.
        assert_eq!(normalize(v4("[::10.1.2.3]:1")), v4("[::10.1.2.3]:1"));
    }

    #[test]
    fn listening_ports_are_owned_listeners() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(p.listening_ports(100).unwrap(), [9092, 9093]);
        assert_eq!(p.listening_ports(200).unwrap(), [22]);
        assert!(p.listening_ports(300).unwrap().is_empty());
    }

    #[test]
    fn listening_ports_cache_skips_unchanged_fd_tables() {
        let f = fixture();
        let p = f.proc();
        let stat = |start: u64| {
            format!(
                "100 (kafka (x) y) S 1 100 100 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"
            )
        };
        f.file("100/stat", stat(5000));
        assert_eq!(p.start_time(100).unwrap(), 5000);
        let cache = ListenCache::default();
        let all = p.listening_ports(100).unwrap();
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), all);
        // The fd table changes but the namespace's listeners do not: not listed again.
        fs::remove_file(f.root.join("100/fd/3")).unwrap();
        let fewer = p.listening_ports(100).unwrap();
        assert_ne!(fewer, all);
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), all);
        // Same pid, another process (start time): listed again.
        f.file("100/stat", stat(6000));
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), fewer);
        // A listener appears in the namespace: listed again.
        f.link("100/fd/3", "socket:[1001]")
            .file("100/net/tcp", host_tcp() + &tcp_listen_line(9, 1234, 7777));
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), all);
        // Forgotten: listed again.
        fs::remove_file(f.root.join("100/fd/3")).unwrap();
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), all);
        cache.keep_only(|pid| pid != 100);
        assert_eq!(p.listening_ports_cached(100, &cache).unwrap(), fewer);
        // Without a stat file (fake trees): always listed.
        assert_eq!(p.listening_ports_cached(200, &cache).unwrap(), [22]);
        assert!(p.listening_ports_cached(300, &cache).unwrap().is_empty());
        f.file("100/stat", "100 (kafka) S 1\n");
        assert!(matches!(
            p.listening_ports_cached(100, &cache),
            Err(ProcError::Parse { .. })
        ));
    }

    #[test]
    fn pid_listening_on_scans_all() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(p.pid_listening_on(9092).unwrap(), [100]);
        assert_eq!(p.pid_listening_on(9093).unwrap(), [100]);
        assert_eq!(p.pid_listening_on(22).unwrap(), [200]);
        assert!(p.pid_listening_on(8080).unwrap().is_empty()); // listener of an unknown process
        assert!(p.pid_listening_on(50000).unwrap().is_empty()); // not a listener
        // A forked worker sharing the listening socket is an owner too.
        f.file("201/comm", "sshd\n")
            .link("201/ns/net", "net:[4026531840]")
            .link("201/fd/3", "socket:[2001]")
            .file("201/net/tcp", host_tcp());
        assert_eq!(p.pid_listening_on(22).unwrap(), [200, 201]);
    }

    #[test]
    fn listeners_on_several_ports_skips_known_owners() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(
            p.listeners_on(&[9092, 22, 1234], &[]).unwrap(),
            [(100, 9092), (200, 22)]
        );
        // A forked worker sharing kafka's listener.
        f.file("102/comm", "kafka-worker\n")
            .link("102/ns/net", "net:[4026531840]")
            .link("102/fd/3", "socket:[1001]")
            .file("102/net/tcp", host_tcp());
        assert_eq!(
            p.listeners_on(&[9092], &[]).unwrap(),
            [(100, 9092), (102, 9092)]
        );
        // Owner known: the other fd tables are not searched for that listener.
        assert_eq!(p.listeners_on(&[9092], &[100]).unwrap(), [(100, 9092)]);
        assert_eq!(
            p.listeners_on(&[9092, 22], &[100]).unwrap(),
            [(100, 9092), (200, 22)]
        );
    }

    #[test]
    fn pid_listening_on_skips_vanished() {
        let f = fixture();
        // A process whose files are gone (exited between readdir and reading).
        fs::create_dir_all(f.root.join("500")).unwrap();
        f.link("500/ns/net", "net:[1]");
        assert_eq!(f.proc().pid_listening_on(9092).unwrap(), [100]);
    }

    #[test]
    #[cfg_attr(
        target_endian = "big",
        ignore = "fixtures are in little-endian host order"
    )]
    fn socket_owners_lookup() {
        let f = fixture();
        let mut o = SocketOwners::new(f.proc());
        assert_eq!(o.lookup(v4("127.0.0.1:9092"), v4("127.0.0.1:50000")), None); // before refresh
        o.refresh(&[100, 200, 300]).unwrap();
        let kafka = SocketOwner {
            pid: 100,
            fd: 5,
            inode: 1003,
        };
        assert_eq!(
            o.lookup(v4("127.0.0.1:9092"), v4("127.0.0.1:50000")),
            Some(kafka)
        );
        // Addresses are normalised both in the table and in the query.
        let mapped = Some(SocketOwner {
            pid: 100,
            fd: 7,
            inode: 1004,
        });
        assert_eq!(
            o.lookup(v4("127.0.0.1:9093"), v4("127.0.0.1:50001")),
            mapped
        );
        assert_eq!(
            o.lookup(
                v4("[::ffff:127.0.0.1]:9093"),
                v4("[::ffff:127.0.0.1]:50001")
            ),
            mapped
        );
        // The other direction is the client's socket, which no target holds.
        assert_eq!(o.lookup(v4("127.0.0.1:50000"), v4("127.0.0.1:9092")), None);
        assert_eq!(
            o.owner_of_inode(2001),
            Some(SocketOwner {
                pid: 200,
                fd: 3,
                inode: 2001
            })
        );
        // Refreshing for fewer pids forgets the others; vanished pids are skipped.
        o.refresh(&[200, 999]).unwrap();
        assert_eq!(o.lookup(v4("127.0.0.1:9092"), v4("127.0.0.1:50000")), None);
        assert_eq!(o.owner_of_inode(2001).map(|s| s.pid), Some(200));
    }

    #[test]
    fn mount_points() {
        let f = fixture();
        let p = f.proc();
        assert_eq!(
            p.cgroup2_mount().unwrap(),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            p.tracefs_mount().unwrap(),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        let g = FakeProc::new("mounts");
        g.file("self/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        assert_eq!(
            g.proc().cgroup2_mount().unwrap(),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(g.proc().tracefs_mount().unwrap(), None);
        assert_eq!(unescape_mount("/mnt/my\\040disk\\134x"), b"/mnt/my disk\\x");
        assert_eq!(unescape_mount("/a\\04"), b"/a\\04");
    }

    #[test]
    fn errors_say_what_to_do() {
        let f = fixture();
        let p = f.proc();
        let e = p.comm(999).unwrap_err();
        assert!(matches!(e, ProcError::NoSuchProcess { pid: 999 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "process 999 does not exist (it may have exited); check the pid"
        );
        for e in [
            p.exe_name(999).unwrap_err(),
            p.cmdline(999).unwrap_err(),
            p.cgroup_v2_path(999).unwrap_err(),
            p.socket_inodes(999).unwrap_err(),
            p.tcp_sockets(999).unwrap_err(),
            p.listening_ports(999).unwrap_err(),
        ] {
            assert!(matches!(e, ProcError::NoSuchProcess { pid: 999 }), "{e:?}");
        }

        f.file(
            "600/net/tcp",
            format!("{TCP_HEADER}   0: 0100007F:1F90 garbage 0A\n"),
        );
        let e = p.tcp_sockets(600).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 2, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("600/net/tcp:2") && msg.contains("report"),
            "{msg}"
        );

        let e = ProcError::Io {
            path: "/proc/1/fd".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().contains("run as root"), "{e}");
        assert!(!e.is_vanished());

        let missing = ProcFs::new(f.root.join("nope"));
        let e = missing.pids().unwrap_err();
        assert!(e.to_string().contains("is procfs mounted"), "{e}");
        assert!(missing.cgroup2_mount().is_err());
    }

    // ---- Against the real /proc ----

    fn own() -> u32 {
        std::process::id()
    }

    #[test]
    fn real_own_process() {
        let p = ProcFs::default();
        assert!(p.exists(own()));
        assert!(p.pids().unwrap().contains(&own()));
        let comm = p.comm(own()).unwrap();
        assert!(!comm.is_empty() && !comm.ends_with('\n'));
        let exe = std::env::current_exe().unwrap();
        let base = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(p.exe_name(own()).unwrap().as_deref(), Some(base));
        assert!(base.as_bytes().starts_with(comm.as_bytes()));
        assert!(!p.cmdline(own()).unwrap().is_empty());
        let cg = p
            .cgroup_v2_path(own())
            .unwrap()
            .expect("cgroup v2 line in /proc/self/cgroup");
        assert!(cg.starts_with('/'), "{cg}");
        assert!(p.find_by_name(&comm).unwrap().contains(&own()));
        assert!(p.find_by_name(base).unwrap().contains(&own()));
        assert!(matches!(
            p.comm(0x7fff_fff0),
            Err(ProcError::NoSuchProcess { .. })
        ));
    }

    #[test]
    fn real_mounts() {
        let p = ProcFs::default();
        let cg = p
            .cgroup2_mount()
            .unwrap()
            .expect("cgroup2 mounted on this machine");
        assert!(cg.is_dir(), "{}", cg.display());
        if let Some(t) = p.tracefs_mount().unwrap() {
            assert!(t.is_absolute());
        }
    }

    #[test]
    fn real_listeners() {
        let p = ProcFs::default();
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let (p4, p6) = (
            l4.local_addr().unwrap().port(),
            l6.local_addr().unwrap().port(),
        );
        let ports = p.listening_ports(own()).unwrap();
        assert!(
            ports.contains(&p4) && ports.contains(&p6),
            "{ports:?} lacks {p4}/{p6}"
        );
        assert!(ports.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p.pid_listening_on(p4).unwrap(), [own()]);
        assert_eq!(p.pid_listening_on(p6).unwrap(), [own()]);
        let inodes = p.socket_inodes(own()).unwrap();
        assert!(inodes.iter().any(|&(_, fd)| fd == l4.as_raw_fd() as u32));
    }

    #[test]
    fn real_socket_owners() {
        check_socket_owners(ProcFs::default());
        check_socket_owners(ProcFs::default().without_sock_diag());
    }

    #[test]
    fn real_find_says_when_a_refresh_helps() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut o = SocketOwners::new(ProcFs::default());
        o.refresh(&[own()]).unwrap();
        // Not accepted yet: the server side has no file, no fd table can hold it.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let client_addr = client.local_addr().unwrap();
        assert_eq!(o.find(addr, client_addr), Lookup::NoFileYet);
        // Accepted after the refresh: a refresh helps, and finds it.
        let (server, _) = l.accept().unwrap();
        assert_eq!(o.find(addr, client_addr), Lookup::Unknown);
        o.refresh(&[own()]).unwrap();
        let Lookup::Owner(s) = o.find(addr, client_addr) else {
            panic!("accepted socket not found");
        };
        assert_eq!(s.fd, server.as_raw_fd() as u32);
        // A tuple no socket has.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(o.find(nobody, client_addr), Lookup::NoFileYet);
        // Through net/tcp nothing is known about files: always Unknown until refreshed.
        let mut slow = SocketOwners::new(ProcFs::default().without_sock_diag());
        assert_eq!(slow.find(nobody, client_addr), Lookup::Unknown);
    }

    /// A process in another network namespace (as in a pod) is read through its net/tcp: the
    /// sock_diag answer, for our namespace, does not have its listener.
    #[test]
    fn real_other_namespace_uses_net_tcp() {
        use std::io::BufRead;
        let script = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                      print(s.getsockname()[1], flush=True); time.sleep(30)";
        let child = std::process::Command::new("unshare")
            .args(["--net", "--", "python3", "-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no unshare");
            return;
        };
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("skipped: unshare --net failed (not root?)");
            return;
        };
        let pid = child.id(); // unshare execs python3
        let p = ProcFs::default();
        let result = || {
            assert!(!p.in_own_netns(pid));
            assert_eq!(p.listening_ports(pid).unwrap(), [port]);
            assert_eq!(p.listeners_on(&[port], &[pid]).unwrap(), [(pid, port)]);
            let theirs = p.socket_inodes(pid).unwrap();
            let ours = diag_listeners().unwrap();
            assert!(
                !ours
                    .iter()
                    .any(|e| theirs.iter().any(|&(i, _)| i == e.inode))
            );
        };
        let outcome = std::panic::catch_unwind(result);
        let _ = child.kill();
        let _ = child.wait();
        if let Err(e) = outcome {
            std::panic::resume_unwind(e);
        }
    }

    fn check_socket_owners(proc: ProcFs) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let mut o = SocketOwners::new(proc);
        o.refresh(&[own()]).unwrap();
        let c = o
            .lookup(client.local_addr().unwrap(), client.peer_addr().unwrap())
            .unwrap();
        assert_eq!((c.pid, c.fd), (own(), client.as_raw_fd() as u32));
        let s = o
            .lookup(server.local_addr().unwrap(), server.peer_addr().unwrap())
            .unwrap();
        assert_eq!((s.pid, s.fd), (own(), server.as_raw_fd() as u32));
        assert_ne!(c.inode, s.inode);
        assert_eq!(o.owner_of_inode(s.inode), Some(s));

        // Dual-stack listener: the accepted v4 connection is listed in tcp6 as ::ffff:127.0.0.1.
        let dual = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = dual.local_addr().unwrap().port();
        if let Ok(client) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let (server, peer) = dual.accept().unwrap();
            assert!(matches!(peer, SocketAddr::V6(_)), "{peer}");
            o.refresh(&[own()]).unwrap();
            let local = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
            let s = o.lookup(local, client.local_addr().unwrap()).unwrap();
            assert_eq!(s.fd, server.as_raw_fd() as u32);
            let s = o.lookup(server.local_addr().unwrap(), peer).unwrap();
            assert_eq!(s.fd, server.as_raw_fd() as u32);
        }
    }

    /// sock_diag and net/tcp give the same answers on this machine (and how long each takes).
    #[test]
    fn sock_diag_matches_proc_net_tcp() {
        let fast = ProcFs::default();
        assert!(fast.sock_diag, "/proc is a procfs");
        assert!(fast.in_own_netns(own()));
        let slow = fast.clone().without_sock_diag();
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = std::net::TcpListener::bind("[::]:0").ok(); // IPv6 may be disabled
        let p4 = l4.local_addr().unwrap().port();
        // Other tests of this process open and close listeners: retry until two reads agree.
        let mut fast_ports = Vec::new();
        for attempt in 1.. {
            let t = Instant::now();
            fast_ports = fast.listening_ports(own()).unwrap();
            let fast_t = t.elapsed();
            let t = Instant::now();
            let slow_ports = slow.listening_ports(own()).unwrap();
            let slow_t = t.elapsed();
            eprintln!("listening_ports: sock_diag {fast_t:?}, net/tcp {slow_t:?}");
            if fast_ports == slow_ports {
                break;
            }
            assert!(
                attempt < 5,
                "sock_diag {fast_ports:?}, net/tcp {slow_ports:?}"
            );
        }
        assert!(fast_ports.contains(&p4));
        if let Some(l6) = &l6 {
            assert!(fast_ports.contains(&l6.local_addr().unwrap().port()));
        }
        assert_eq!(
            fast.listeners_on(&[p4], &[]).unwrap(),
            slow.listeners_on(&[p4], &[]).unwrap()
        );
        // The whole listener table of the namespace, entry for entry. Other processes may open
        // or close listeners between the two reads: retry a few times.
        let key = |e: &TcpSocketEntry| (e.inode, e.local, e.remote, e.uid, e.state);
        for attempt in 1.. {
            let mut a = diag_listeners().expect("sock_diag answers here");
            let mut b: Vec<_> = slow
                .tcp_sockets(own())
                .unwrap()
                .into_iter()
                .filter(|e| e.state == TCP_LISTEN)
                .collect();
            a.sort_by_key(key);
            b.sort_by_key(key);
            if a == b {
                assert!(a.iter().any(|e| e.local == l4.local_addr().unwrap()));
                break;
            }
            assert!(attempt < 5, "sock_diag {a:?}\nnet/tcp {b:?}");
        }
    }
}
