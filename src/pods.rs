//! Kubernetes pod attribution without the API server: the pod UID from a process's
//! cgroup path, and the pod's namespace and name from the kubelet's log directories
//! (`/var/log/pods/NAMESPACE_NAME_UID`; namespace and pod names cannot contain `_`).
//!
//! cgroup paths (kubelet `cgroup_manager_linux.go`):
//! - systemd driver: `.../kubepods-burstable-pod<UID with _ for ->.slice/cri-containerd-<id>.scope`
//!   (Guaranteed pods omit the QoS level);
//! - cgroupfs driver: `/kubepods/<qos>/pod<UID>/<container id>`.
//!
//! Under cgroup v1 every controller line carries the same path; the first `pod` match
//! wins. A process outside any pod gives no UID, and no labels: never a wrong one.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// A pod's identity as served in labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// Finds the pod UID in the contents of `/proc/PID/cgroup`.
pub fn pod_uid(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        // hierarchy-id:controllers:path
        let path = line.splitn(3, ':').nth(2)?;
        for part in path.split('/') {
            if let Some(uid) = uid_in(part) {
                return Some(uid);
            }
        }
    }
    None
}

/// `kubepods-besteffort-pod1234_5678.slice` or `pod1234-5678` -> the UID with dashes.
fn uid_in(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let at = part.rfind("pod")?;
    // The cgroupfs form is the whole component; the systemd form follows a dash.
    if at != 0 && !part[..at].ends_with('-') {
        return None;
    }
    let uid = part[at + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A Kubernetes UID: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod UID of process `pid`, from its cgroup under `procfs` (`None`: gone, not in
/// a pod, or unreadable). The process scan reads the same file through its own reused
/// buffer instead, for its cost at thousands of processes.
pub fn uid_of_process(procfs: &Path, pid: u32) -> Option<String> {
    let cgroup = crate::procfs::read(&procfs.join(pid.to_string()).join("cgroup")).ok()?;
    pod_uid(&String::from_utf8_lossy(&cgroup))
}

/// Every pod the kubelet's `NAMESPACE_NAME_UID` directories in `pod_logs` name, by UID
/// (listed once per discovery, not once per namespace). Empty where there is no such
/// directory (not a Kubernetes node).
pub fn index(pod_logs: &Path) -> HashMap<String, Pod> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(pod_logs) else { return out };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(3, '_');
        let (Some(ns), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        out.insert(
            uid.to_string(),
            Pod {
                uid: uid.to_string(),
                namespace: ns.to_string(),
                name: pod.to_string(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_layouts() {
        // Path shapes from kubelet's cgroup_manager_linux.go (this machine is no node).
        let v2_systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_1111_2222_3333_444455556666.slice/cri-containerd-abc.scope\n";
        assert_eq!(
            pod_uid(v2_systemd).as_deref(),
            Some("0a1b2c3d-1111-2222-3333-444455556666")
        );
        let guaranteed = "0::/kubepods.slice/kubepods-pod0a1b2c3d_1111_2222_3333_444455556666.slice/crio-abc.scope\n";
        assert_eq!(
            pod_uid(guaranteed).as_deref(),
            Some("0a1b2c3d-1111-2222-3333-444455556666")
        );
        let v1_cgroupfs = "12:memory:/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/0123abcd\n11:cpu,cpuacct:/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/0123abcd\n";
        assert_eq!(
            pod_uid(v1_cgroupfs).as_deref(),
            Some("0a1b2c3d-1111-2222-3333-444455556666")
        );
        assert_eq!(pod_uid("0::/user.slice/user-0.slice/session-1.scope\n"), None);
        assert_eq!(pod_uid("0::/system.slice/podman.service\n"), None);
        assert_eq!(pod_uid("0::/kubepods/podnot-a-uid/x\n"), None);
        assert_eq!(pod_uid(""), None);
    }
}
