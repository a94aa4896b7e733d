//! Which container and Kubernetes pod a broker process runs in, from /proc alone (no runtime
//! or API server access): the container id from the process's cgroup path, the pod UID from
//! the kubepods slice, the pod name from the container's `HOSTNAME` (Kubernetes sets it to the
//! pod name), and the namespace from the service-account file inside the container's root
//! filesystem. The Kubernetes API adds the rest (`crate::k8s`), keyed by the id and UID found
//! here.
//!
//! Cgroup layouts understood (the innermost container segment wins, so a container nested in
//! another, e.g. kind's pods inside a Docker "node", gives the inner id):
//! - containerd: `cri-containerd-<id>.scope` (systemd driver), `/kubepods/<qos>/pod<uid>/<id>`
//!   (cgroupfs driver);
//! - CRI-O: `crio-<id>.scope`; its monitor `crio-conmon-<id>.scope` is not the container;
//! - Docker: `docker-<id>.scope`, `/docker/<id>`;
//! - Podman: `libpod-<id>.scope` (and its `/container` sub-cgroup); `libpod-conmon-…` excluded;
//! - pod UIDs: `kubepods-<qos>-pod<uid with _>.slice`, `kubepods-pod<uid>.slice`, `pod<uid>`;
//!   static pods use a 32-hex config hash instead of a UUID;
//! - cgroup v2 (`0::/path`) and v1 (`12:pids:/path`, `1:name=systemd:/path`) lines of
//!   /proc/PID/cgroup, and paths seen from a private cgroup namespace (`0::/../../kubepods…`).
use std::path::Path;

use super::procfs::ProcFs;

/// What is known about a process's container; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
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
    let dir = proc.root().join(pid.to_string());
    let Ok(text) = std::fs::read_to_string(dir.join("cgroup")) else {
        return ContainerInfo::default();
    };
    let mut info = parse_proc_cgroup(&text);
    if info.pod_uid.is_some() {
        info.pod_name = std::fs::read(dir.join("environ")).ok().and_then(|env| {
            env.split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"HOSTNAME="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        info.pod_namespace =
            read_trimmed(&dir.join("root/var/run/secrets/kubernetes.io/serviceaccount/namespace"));
    }
    info
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.len() <= 253).then(|| text.to_owned())
}

/// The container id and pod UID in the text of /proc/PID/cgroup: the v2 line (`0::/path`)
/// first, else the first v1 line that names a container (controllers of one process all
/// point into the same container's hierarchy).
pub fn parse_proc_cgroup(text: &str) -> ContainerInfo {
    let paths = || {
        text.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2).map(|p| (l.starts_with("0::"), p)))
    };
    let v2 = paths()
        .filter(|(v2, _)| *v2)
        .map(|(_, p)| parse_cgroup(p))
        .find(|i| !i.is_empty());
    v2.or_else(|| {
        paths()
            .map(|(_, p)| parse_cgroup(p))
            .find(|i| !i.is_empty())
    })
    .unwrap_or_default()
}

/// The container id and pod UID in one cgroup path (v1 or v2; `..` segments of a private
/// cgroup namespace are passed over).
pub fn parse_cgroup(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for part in path.split('/') {
        if let Some(uid) = pod_uid(part) {
            info.pod_uid = Some(uid);
        }
        if let Some(id) = container_id(part) {
            info.id = Some(id.to_owned());
        }
    }
    info
}

/// `kubepods-besteffort-pod<uid>.slice` (systemd driver, `_` for `-`), `kubepods-pod<uid>.slice`
/// (guaranteed QoS) or `pod<uid>` (cgroupfs driver).
fn pod_uid(part: &str) -> Option<String> {
    // kind nests the node's kubelet slices: `kubelet-kubepods-…-pod<uid>.slice`.
    let rest = if part.contains("kubepods") {
        let stem = part.strip_suffix(".slice")?;
        &stem[stem.rfind("-pod")? + 4..]
    } else {
        part.strip_prefix("pod")?
    };
    let uid = rest.replace('_', "-");
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = uid.len() == 36
        && uid.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && hex(&uid.replace('-', ""));
    // Static pods: the kubelet's 32-hex config hash.
    let hash = uid.len() == 32 && hex(&uid);
    (uuid || hash).then_some(uid)
}

/// The container id a cgroup segment names, if it names one.
fn container_id(part: &str) -> Option<&str> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    let id = match stem.rsplit_once('-') {
        // The runtime monitors (conmon) live next to their container: not the container.
        Some((prefix, _)) if prefix.ends_with("conmon") => return None,
        Some(("cri-containerd" | "crio" | "docker" | "libpod", id)) => id,
        Some(_) => return None,
        // cgroupfs driver: the bare id (/docker/<id>, /kubepods/<qos>/pod<uid>/<id>).
        None => stem,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2504e04f8911d39a0c0305e82c33013f2504e04f8911d39a0c0305e82c3301";
    const ID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const UID: &str = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
    const HASH: &str = "5d5e9c0e2d6a4c39b3e1a0c3b2a1f0e9";

    fn u() -> String {
        UID.replace('-', "_")
    }

    #[test]
    fn runtimes_and_kubernetes_layouts() {
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            // Docker, systemd and cgroupfs drivers.
            (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
            (format!("/docker/{ID}"), Some(ID), None),
            // containerd, systemd driver, each QoS class.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            // containerd / CRI-O, cgroupfs driver.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                Some(ID),
                Some(UID),
            ),
            (format!("/kubepods/pod{UID}/{ID}"), Some(ID), Some(UID)),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
                Some(ID),
                Some(UID),
            ),
            // CRI-O, systemd driver; conmon is not the container.
            (
                format!("/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope", u()),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
                    u()
                ),
                None,
                Some(UID),
            ),
            // CRI-O's container sub-cgroup (infra/`container` under the scope).
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/crio-{ID}.scope/container",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            // Podman.
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
                None,
            ),
            (format!("/machine.slice/libpod-{ID}.scope"), Some(ID), None),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                None,
                None,
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                Some(ID),
                None,
            ),
            // A private cgroup namespace shows the path relative to the observer's own cgroup.
            (
                format!(
                    "/../../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!("/../../../burstable/pod{UID}/{ID}"),
                Some(ID),
                Some(UID),
            ),
            // Static pod: config hash instead of a UUID.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{HASH}.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
                Some(HASH),
            ),
            // kind: a pod inside a Docker "node": the innermost container wins.
            (
                format!(
                    "/docker/{ID2}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            // The pod's own slice, no container yet (sandbox being set up).
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                    u()
                ),
                None,
                Some(UID),
            ),
            // Not containers.
            ("/".to_owned(), None, None),
            (
                "/user.slice/user-0.slice/session-3.scope".to_owned(),
                None,
                None,
            ),
            ("/system.slice/docker.service".to_owned(), None, None),
            ("/system.slice/containerd.service".to_owned(), None, None),
            (
                "/kubepods.slice/kubepods-besteffort.slice".to_owned(),
                None,
                None,
            ),
            ("/brokerscope-test-mqtt".to_owned(), None, None),
            // Too short / not hex / not a UUID.
            (format!("/docker/{}", &ID[..63]), None, None),
            (
                format!("/system.slice/docker-{}x.scope", &ID[..63]),
                None,
                None,
            ),
            ("/kubepods/burstable/podnot-a-uid/".to_owned(), None, None),
            (format!("/system.slice/something-{ID}.scope"), None, None),
        ];
        for (path, id, uid) in cases {
            let info = parse_cgroup(&path);
            assert_eq!(info.id.as_deref(), id, "{path}");
            assert_eq!(info.pod_uid.as_deref(), uid, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_files_v1_v2_and_hybrid() {
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            // cgroup v2 only.
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
                    u()
                ),
                Some(ID),
                Some(UID),
            ),
            // cgroup v1, cgroupfs driver: every controller line names the container.
            (
                format!(
                    "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n\
                     11:memory:/kubepods/besteffort/pod{UID}/{ID}\n\
                     1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
                ),
                Some(ID),
                Some(UID),
            ),
            // cgroup v1, Docker with systemd; some controllers at the root.
            (
                format!(
                    "13:rdma:/\n\
                     12:cpu,cpuacct:/system.slice/docker-{ID}.scope\n\
                     1:name=systemd:/system.slice/docker-{ID}.scope\n"
                ),
                Some(ID),
                None,
            ),
            // Hybrid: the v2 line is empty (`0::/`), the v1 lines name the container.
            (
                format!("1:name=systemd:/docker/{ID}\n0::/\n"),
                Some(ID),
                None,
            ),
            // Hybrid with both: the v2 line wins.
            (
                format!("1:name=systemd:/docker/{ID2}\n0::/docker/{ID}\n"),
                Some(ID),
                None,
            ),
            // Private cgroup namespace.
            (
                format!("0::/../../kubepods/burstable/pod{UID}/{ID}\n"),
                Some(ID),
                Some(UID),
            ),
            // Host processes.
            ("0::/init.scope\n".to_owned(), None, None),
            (
                "12:pids:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n0::/user.slice/user-0.slice/session-1.scope\n".to_owned(),
                None,
                None,
            ),
            (String::new(), None, None),
            ("garbage\n".to_owned(), None, None),
        ];
        for (text, id, uid) in cases {
            let info = parse_proc_cgroup(&text);
            assert_eq!(info.id.as_deref(), id, "{text}");
            assert_eq!(info.pod_uid.as_deref(), uid, "{text}");
        }
    }

    #[test]
    fn a_host_process_has_no_container() {
        let info = container_of(&ProcFs::default(), std::process::id());
        assert!(info.pod_name.is_none() && info.pod_namespace.is_none());
    }

    #[test]
    fn reads_proc_files_of_a_pod_process() {
        // A fake procfs: the cgroup file, the environment and the service-account namespace.
        let root = std::env::temp_dir().join(format!("bs-container-{}", std::process::id()));
        let dir = root.join("77");
        let sa = dir.join("root/var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("environ"),
            b"PATH=/bin\0HOSTNAME=mqtt-7d9f8c6b5d-x2x4q\0",
        )
        .unwrap();
        std::fs::write(sa.join("namespace"), "messaging\n").unwrap();
        let info = container_of(&ProcFs::new(&root), 77);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            info,
            ContainerInfo {
                id: Some(ID.into()),
                pod_uid: Some(UID.into()),
                pod_name: Some("mqtt-7d9f8c6b5d-x2x4q".into()),
                pod_namespace: Some("messaging".into()),
            }
        );
    }
}
