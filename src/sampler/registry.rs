//! The namespaces the sampler tracks besides its own, as the slow lane's discovery
//! decided: one immutable [`Registry`] that the slow lane publishes when it changes and
//! the fast lane reads, instead of a stream of add, relabel and remove messages that
//! two maps had to replay in step.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use crate::netns::NsKey;
use crate::source::NsContext;

/// One tracked namespace. Immutable: a new label set is a new `Tracked` with the same
/// handle and context; a new context (the inode was reused by another namespace) is a
/// new namespace.
#[derive(Debug)]
pub struct Tracked {
    /// Its `netns` label, and its pod's where it has one.
    pub labels: String,
    /// A handle on it, to enter it.
    pub ns: Arc<File>,
    /// What its sources share across both lanes.
    pub ctx: Arc<NsContext>,
}

/// Every tracked namespace, by key.
#[derive(Debug, Default)]
pub struct Registry {
    pub namespaces: BTreeMap<NsKey, Arc<Tracked>>,
}

/// The latest registry: written by the slow lane, read by the fast lane every tick (an
/// `Arc` clone under a lock taken for a pointer's copy, no allocation).
#[derive(Debug, Default)]
pub struct Latest(Mutex<Arc<Registry>>);

impl Latest {
    pub fn publish(&self, registry: Registry) {
        *crate::sync::lock(&self.0) = Arc::new(registry);
    }

    pub fn get(&self) -> Arc<Registry> {
        Arc::clone(&crate::sync::lock(&self.0))
    }
}

/// How a lane's namespaces differ from a registry's: what to drop, what to add, what to
/// relabel. `current` gives a namespace's context and labels as the lane has them.
#[allow(clippy::type_complexity)]
pub fn diff<'r, G>(
    lane: &BTreeMap<NsKey, G>,
    registry: &'r Registry,
    current: impl Fn(&G) -> (&Arc<NsContext>, &str),
) -> (Vec<NsKey>, Vec<(NsKey, &'r Arc<Tracked>)>, Vec<(NsKey, &'r str)>) {
    let (mut gone, mut new, mut relabelled) = (Vec::new(), Vec::new(), Vec::new());
    for (key, g) in lane {
        match registry.namespaces.get(key) {
            Some(t) if Arc::ptr_eq(current(g).0, &t.ctx) => {}
            // Gone, or its inode now names another namespace (dropped, then added).
            _ => gone.push(*key),
        }
    }
    for (key, t) in &registry.namespaces {
        match lane.get(key) {
            Some(g) if Arc::ptr_eq(current(g).0, &t.ctx) => {
                if current(g).1 != t.labels {
                    relabelled.push((*key, t.labels.as_str()));
                }
            }
            _ => new.push((*key, t)),
        }
    }
    (gone, new, relabelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(labels: &str, ctx: &Arc<NsContext>) -> Arc<Tracked> {
        Arc::new(Tracked {
            labels: labels.into(),
            ns: Arc::new(File::open("/proc/self/ns/net").unwrap()),
            ctx: Arc::clone(ctx),
        })
    }

    #[test]
    fn a_lane_follows_the_registry_and_a_reused_inode_is_a_new_namespace() {
        let (a, b, c) = (
            Arc::new(NsContext::default()),
            Arc::new(NsContext::default()),
            Arc::new(NsContext::default()),
        );
        let (ka, kb, kc) = ((1, 10), (1, 11), (1, 12));
        // The lane has a, b and c.
        let lane: BTreeMap<NsKey, (Arc<NsContext>, String)> = [
            (ka, (Arc::clone(&a), "a".to_string())),
            (kb, (Arc::clone(&b), "b".to_string())),
            (kc, (Arc::clone(&c), "c".to_string())),
        ]
        .into();
        // The registry: a relabelled, b gone, c's inode now another namespace, d new.
        let c2 = Arc::new(NsContext::default());
        let d = Arc::new(NsContext::default());
        let kd = (1, 13);
        let registry = Registry {
            namespaces: [
                (ka, tracked("a, now a pod", &a)),
                (kc, tracked("c2", &c2)),
                (kd, tracked("d", &d)),
            ]
            .into(),
        };
        let (gone, new, relabelled) = diff(&lane, &registry, |(ctx, labels)| (ctx, labels.as_str()));
        assert_eq!(gone, vec![kb, kc]);
        assert_eq!(
            new.iter().map(|(k, t)| (*k, t.labels.as_str())).collect::<Vec<_>>(),
            vec![(kc, "c2"), (kd, "d")]
        );
        assert_eq!(relabelled, vec![(ka, "a, now a pod")]);
    }
}
