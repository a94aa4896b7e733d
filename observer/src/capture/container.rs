//! Which container and Kubernetes pod a broker process runs in, from /proc alone (no runtime
//! or API server access): the container id from the process's cgroup path (Docker, containerd,
//! CRI-O, Podman, systemd-nspawn-free layouts), the pod UID from the kubepods slice, the pod
//! name from the container's `HOSTNAME` (Kubernetes sets it to the pod name), and the namespace
//! from the service-account file inside the container's root filesystem.
use std::path::Path;

use super::procfs::ProcFs;

/// What is known about a process's container; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's container id (64 hex digits).
    pub id: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl ContainerInfo {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.pod_uid.is_none()
    }
}

/// Reads a process's container and pod, if it runs in one.
pub fn container_of(proc: &ProcFs, pid: u32) -> ContainerInfo {
    let Ok(Some(cgroup)) = proc.cgroup_v2_path(pid) else {
        return ContainerInfo::default();
    };
    let mut info = parse_cgroup(&cgroup);
    if info.pod_uid.is_some() {
        let root = proc.root().join(pid.to_string());
        info.pod_name = std::fs::read(root.join("environ")).ok().and_then(|env| {
            env.split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"HOSTNAME="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        info.pod_namespace =
            read_trimmed(&root.join("root/var/run/secrets/kubernetes.io/serviceaccount/namespace"));
    }
    info
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.len() <= 253).then(|| text.to_owned())
}

/// The container id and pod UID in a cgroup v2 path.
pub fn parse_cgroup(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for part in path.split('/') {
        // kubepods-besteffort-pod<uid>.slice (systemd driver, '_' for '-') or pod<uid> (cgroupfs).
        if let Some(at) = part.rfind("pod")
            && (part.starts_with("kubepods") || part.starts_with("pod"))
        {
            let uid = part[at + 3..].trim_end_matches(".slice").replace('_', "-");
            if uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                info.pod_uid = Some(uid);
            }
        }
        // docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope, or
        // a bare <id> (cgroupfs driver: /docker/<id>, /kubepods/…/pod…/<id>).
        let stem = part.trim_end_matches(".scope");
        let id = stem.rsplit('-').next().unwrap_or(stem);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            info.id = Some(id.to_owned());
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2504e04f8911d39a0c0305e82c33013f2504e04f8911d39a0c0305e82c3301";
    const UID: &str = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";

    #[test]
    fn runtimes_and_kubernetes_layouts() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
            (format!("/docker/{ID}"), Some(ID), None),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
                    UID.replace('-', "_")
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
                    UID.replace('-', "_")
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
                None,
            ),
            ("/".to_owned(), None, None),
            (
                "/user.slice/user-0.slice/session-3.scope".to_owned(),
                None,
                None,
            ),
            ("/brokerscope-test-mqtt".to_owned(), None, None),
        ];
        for (path, id, uid) in cases {
            let info = parse_cgroup(&path);
            assert_eq!(info.id.as_deref(), id, "{path}");
            assert_eq!(info.pod_uid.as_deref(), uid, "{path}");
        }
    }

    #[test]
    fn a_host_process_has_no_container() {
        let info = container_of(&ProcFs::default(), std::process::id());
        assert!(info.pod_name.is_none() && info.pod_namespace.is_none());
    }
}
