//! Which of the node's network namespaces the slow lane samples: all it finds
//! (`netns::discover`), within `--netns.max` and the descriptor budget, pods first,
//! each with its labels (`netns`, and `namespace`/`pod` for a pod's namespace).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::netns::{self, Found, NsKey};
use crate::pods::{self, Pod};
use crate::source::breakdown::Owner;

/// Descriptors the exporter keeps for itself before any other namespace gets one: its
/// own namespace's sources, the HTTP server and its connections, the discovery walk, the
/// drop counter's BPF program, link and maps.
pub const RESERVED_FDS: u64 = 128;

/// Descriptors one sampled namespace holds at most: the namespace itself (one, shared by
/// both lanes), ctnetlink, two sock_diag sockets (one a lane), sockstat, sockstat6,
/// netstat, snmp, and the rtnetlink socket that names address owners for the conntrack
/// breakdown: 9 once every source has opened (measured: 208 descriptors with 20
/// namespaces, 26 with none), 11 with conntrack's procfs fallback (count, max and stat
/// files instead of one socket). A breakdown's dump socket lives only during the dump,
/// and needs the ctnetlink socket's CAP_NET_ADMIN: never with the fallback.
pub const FDS_PER_NAMESPACE: u64 = 11;

/// How many other namespaces fit in `nofile` descriptors.
pub fn namespaces_within(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(RESERVED_FDS) / FDS_PER_NAMESPACE).unwrap_or(usize::MAX)
}

/// A namespace to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: NsKey,
    pub labels: String,
    /// The same labels as values, for the conntrack breakdown's source owners.
    pub owner: Owner,
    pub path: PathBuf,
}

/// Why discovery found nothing to go on.
#[derive(Debug)]
pub enum Failure {
    /// Out of descriptors: everything other namespaces hold must be let go.
    NoDescriptors(io::Error),
    Other(io::Error),
}

pub struct Discovery {
    procfs: PathBuf,
    pod_logs: PathBuf,
    own: NsKey,
    init: Option<NsKey>,
    /// `--netns.max`, and what the descriptor budget allows.
    max: usize,
    budget: usize,
    found: HashMap<NsKey, Found>,
    /// The pod UID in the cgroup of the process a namespace was found through, by
    /// (namespace, PID): read once per process.
    uids: HashMap<(NsKey, u32), Option<String>>,
    pub omitted: usize,
    pub duration: Duration,
    budget_logged: bool,
}

/// The `netns` label of a namespace.
pub fn netns_label(key: NsKey, init: Option<NsKey>) -> String {
    format!(r#"netns="{}""#, netns_value(key, init))
}

/// The `netns` label's value: `host` for the node's initial namespace, else the inode.
pub fn netns_value(key: NsKey, init: Option<NsKey>) -> String {
    if netns::is_init(key, init) {
        "host".to_string()
    } else {
        key.1.to_string()
    }
}

fn with_pod(netns: &str, pod: &Pod) -> String {
    let mut labels = format!("{netns},");
    crate::snapshot::render_labels(&mut labels, &[("namespace", &pod.namespace), ("pod", &pod.name)]);
    labels
}

impl Discovery {
    pub fn new(procfs: PathBuf, pod_logs: PathBuf, own: NsKey, max: usize, nofile: u64) -> Self {
        let init = netns::init_key(&procfs);
        Self {
            procfs,
            pod_logs,
            own,
            init,
            max,
            budget: namespaces_within(nofile),
            found: HashMap::new(),
            uids: HashMap::new(),
            omitted: 0,
            duration: Duration::ZERO,
            budget_logged: false,
        }
    }

    /// The inodes of every namespace the last run found (the own one and those past
    /// `--netns.max` included).
    pub fn found(&self) -> impl Iterator<Item = u64> + '_ {
        self.found.keys().map(|k| k.1).chain(std::iter::once(self.own.1))
    }

    /// Finds the node's namespaces and returns the ones to sample, in priority order:
    /// pods first, then those already sampled (so that the set does not churn), then by
    /// inode. The rest are counted in `omitted`.
    ///
    /// # Errors
    /// `procfs` cannot be listed.
    pub fn run<T>(&mut self, tracked: &BTreeMap<NsKey, T>) -> Result<Vec<Target>, Failure> {
        let t = Instant::now();
        if let Err(e) = netns::discover(&self.procfs, &mut self.found) {
            return Err(match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE) => Failure::NoDescriptors(e),
                _ => Failure::Other(e),
            });
        }
        self.found.remove(&self.own);
        let index = pods::index(&self.pod_logs);
        let found = &self.found;
        self.uids
            .retain(|(key, pid), _| found.get(key).is_some_and(|f| f.pid == Some(*pid)));
        let mut candidates: Vec<(bool, bool, NsKey, Option<&Pod>)> = Vec::with_capacity(found.len());
        for (key, f) in found {
            let uid = match f.pid {
                Some(pid) => self
                    .uids
                    .entry((*key, pid))
                    .or_insert_with(|| pods::uid_of_process(&self.procfs, pid))
                    .as_deref(),
                None => None,
            };
            let pod = uid.and_then(|u| index.get(u));
            candidates.push((uid.is_some(), tracked.contains_key(key), *key, pod));
        }
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let room = self.max.min(self.budget);
        if candidates.len() > self.budget && self.budget < self.max && !self.budget_logged {
            log::warn!(
                "sampling {} of {} other network namespaces: RLIMIT_NOFILE leaves descriptors for {} ({} each, {} kept for the exporter); raise the limit (LimitNOFILE, ulimit -n) to sample them all",
                room,
                candidates.len(),
                self.budget,
                FDS_PER_NAMESPACE,
                RESERVED_FDS
            );
            self.budget_logged = true;
        }
        self.omitted = candidates.len().saturating_sub(room);
        let targets = candidates
            .into_iter()
            .take(room)
            .filter_map(|(_, _, key, pod)| {
                let f = found.get(&key)?;
                let netns = netns_label(key, self.init);
                Some(Target {
                    key,
                    labels: pod.map_or_else(|| netns.clone(), |p| with_pod(&netns, p)),
                    owner: Owner {
                        netns: netns_value(key, self.init),
                        pod: pod.map(|p| (p.namespace.clone(), p.name.clone())),
                    },
                    path: f.path.clone(),
                })
            })
            .collect();
        self.duration = t.elapsed();
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_reserve_to_the_exporter() {
        assert_eq!(namespaces_within(1024), 81);
        assert_eq!(namespaces_within(256), 11);
        assert_eq!(namespaces_within(100), 0);
        assert_eq!(namespaces_within(65_536), 5946);
    }
}
