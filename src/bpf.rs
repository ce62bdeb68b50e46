//! The kernel-side drop counter: the BPF program of `bpf/drop_reasons.bpf.c` on the
//! `skb:kfree_skb` tracepoint, loaded with aya; and the node pass ([`pass`]). The only
//! modules that see aya's types.
//!
//! aya is pure Rust (no libbpf, no libelf to link), so the static binary stays static; it
//! does the CO-RE relocations against the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). It needs no tracefs (the program is BTF-typed, `tp_btf`,
//! attached through a BPF link) and raises no RLIMIT_MEMLOCK: from 5.11 the kernel
//! charges BPF memory to the loader's memory cgroup. Nothing is pinned: the link, the
//! program and the maps are descriptors of this process, and go when it exits.

#![allow(unsafe_code)] // the raw map calls of `crate::sys`, whose sizes are checked at load

use std::fmt::Write as _;

pub mod pass;

use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

/// The object `scripts/build-bpf.sh` builds from `bpf/drop_reasons.bpf.c`, committed
/// (`tests/bpf_object.rs` proves it is that source's).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/drop_reasons.bpf.o");

/// How many (namespace, reason) pairs the kernel map holds. Each costs 8 bytes per
/// possible CPU plus the hash element (preallocated: a tracepoint may fire in any
/// context, where allocating is not allowed on older kernels): 4,096 entries are 0.38
/// MiB on 2 CPUs (bpftool's memlock) and about 2.4 MiB on 64. 250 pods with 10 reasons
/// each fit with room.
pub const MAX_ENTRIES: u32 = 4096;

/// A key of the drop map, as `struct drop_key` in `bpf/drop_reasons.bpf.c`: the
/// namespace's cookie (unique for the boot) and inode, and the reason. Zeros for a
/// packet with neither a device nor a socket. Ordered by cookie first: a namespace's
/// keys are one run.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DropKey {
    pub cookie: u64,
    pub ino: u32,
    pub reason: u32,
}

/// Why the drop counter cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// Loading or attaching failed: aya's error chain flattened into one message
    /// (`chain`), with the capabilities to add where the kernel said EPERM. Text, as
    /// nothing branches on it: it is logged once and the source reports down.
    #[error("{0}")]
    Load(String),
    #[error("reading the drop map: {0}")]
    Read(String),
}

impl BpfError {
    fn load(what: &str, e: &dyn std::error::Error) -> Self {
        let mut msg = format!("{what}: {}", chain(e));
        if msg.contains("Operation not permitted") || msg.contains("os error 1)") {
            msg.push_str(" (loading BPF needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)");
        }
        Self::Load(msg)
    }
}

/// An error with its sources, one after the other (aya's top-level messages alone say
/// little: "error loading program").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// The loaded and attached program with its maps. Dropping it detaches the program.
pub struct DropCounter {
    ebpf: Ebpf,
    /// Keys to delete (reused between calls).
    keys: Vec<DropKey>,
    /// One value per possible CPU, as a per-CPU map's lookup returns them.
    per_cpu: Vec<u64>,
}

impl std::fmt::Debug for DropCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropCounter")
    }
}

impl DropCounter {
    /// Loads the program, relocated for the running kernel (whose BTF is `btf`, the bytes
    /// of `/sys/kernel/btf/vmlinux` under the sysfs root), and attaches it.
    ///
    /// # Errors
    /// No BTF, a kernel without the tracepoint's reason argument (before 5.17), no
    /// capability, BPF locked down: each with the kernel's answer.
    pub fn load(btf: &[u8]) -> Result<Self, BpfError> {
        let btf = Btf::parse(btf, aya::Endianness::default()).map_err(|e| BpfError::load("the kernel's BTF", &e))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(OBJECT)
            .map_err(|e| BpfError::load("loading the drop-reason maps", &e))?;
        // With the receiving socket (6.11+) where the tracepoint has it, else without.
        let mut first_error = None;
        for name in ["count_drop", "count_drop_3"] {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| BpfError::Load(format!("the object has no {name} program")))?
                .try_into()
                .map_err(|e| BpfError::load(name, &e))?;
            match program.load("kfree_skb", &btf) {
                Ok(()) => {
                    program
                        .attach()
                        .map_err(|e| BpfError::load("attaching to skb:kfree_skb", &e))?;
                    let cpus = aya::util::nr_cpus()
                        .map_err(|(what, e)| BpfError::Load(format!("counting the possible CPUs ({what}): {e}")))?;
                    // What the raw element calls below rest on: the maps' key and value
                    // sizes are the types they are read with.
                    for (map, key) in [("drops", size_of::<DropKey>()), ("overflow", size_of::<u32>())] {
                        let info = ebpf
                            .map(map)
                            .ok_or_else(|| BpfError::Load(format!("the object has no map {map}")))
                            .and_then(|m| m_info(m, map))?;
                        if (info.key_size() as usize, info.value_size()) != (key, 8) {
                            return Err(BpfError::Load(format!(
                                "map {map}: key of {} bytes and value of {}, expected {key} and 8",
                                info.key_size(),
                                info.value_size()
                            )));
                        }
                    }
                    return Ok(Self {
                        ebpf,
                        keys: Vec::new(),
                        per_cpu: vec![0; cpus],
                    });
                }
                Err(e) => {
                    log::debug!("drop_reasons: {name} did not load: {}", chain(&e));
                    first_error.get_or_insert(e);
                }
            }
        }
        let e = first_error.ok_or_else(|| BpfError::Load("no program to load".into()))?;
        Err(BpfError::load("loading the drop-reason program on skb:kfree_skb", &e))
    }

    /// Reads every (key, count) pair, the counts summed over CPUs, into `out` (cleared
    /// first), and returns the drops the full map could not count. Allocates nothing
    /// once `out` has grown to the map's size: raw map syscalls into buffers kept here.
    ///
    /// # Errors
    /// A map syscall failed.
    pub fn read(&mut self, out: &mut Vec<(DropKey, u64)>) -> Result<u64, BpfError> {
        out.clear();
        let per_cpu = &mut self.per_cpu;
        let sum = |v: &[u64]| v.iter().fold(0u64, |a, n| a.wrapping_add(*n));
        let drops = map_fd(&self.ebpf, "drops")?;
        each_key(drops, |k| {
            // A key deleted since the walk passed it is skipped; one added is read next time.
            // SAFETY: the sizes were checked at load, and `per_cpu` holds a value for
            // every possible CPU.
            if unsafe { crate::sys::bpf_map_lookup_percpu_u64(drops, k, per_cpu) }.map_err(read_error)? {
                out.push((k, sum(per_cpu)));
            }
            Ok(())
        })?;
        let overflow = map_fd(&self.ebpf, "overflow")?;
        // SAFETY: as above; the array's one key is the u32 0.
        if !unsafe { crate::sys::bpf_map_lookup_percpu_u64(overflow, 0u32, per_cpu) }.map_err(read_error)? {
            return Ok(0);
        }
        Ok(sum(per_cpu))
    }

    /// Deletes the keys for which `forget` holds (namespaces that are gone, or no longer
    /// sampled), and returns how many went.
    ///
    /// # Errors
    /// A map syscall failed.
    pub fn forget(&mut self, mut forget: impl FnMut(DropKey) -> bool) -> Result<usize, BpfError> {
        let drops = map_fd(&self.ebpf, "drops")?;
        // Collected first: deleting the key the walk stands on would restart it.
        self.keys.clear();
        let keys = &mut self.keys;
        each_key(drops, |k| {
            if forget(k) {
                keys.push(k);
            }
            Ok(())
        })?;
        let mut removed = 0;
        for &key in &self.keys {
            // Gone already, or removed: either way no longer there.
            // SAFETY: the key size was checked at load.
            if unsafe { crate::sys::bpf_map_delete(drops, key) }.map_err(read_error)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn read_error(e: std::io::Error) -> BpfError {
    BpfError::Read(e.to_string())
}

/// Walks every key of the drop map (`BPF_MAP_GET_NEXT_KEY`), without allocating.
fn each_key(
    map: std::os::fd::BorrowedFd<'_>,
    mut f: impl FnMut(DropKey) -> Result<(), BpfError>,
) -> Result<(), BpfError> {
    let mut key = None;
    // SAFETY: only the drop map is walked, whose key size was checked at load.
    while let Some(k) = unsafe { crate::sys::bpf_map_next_key(map, key) }.map_err(read_error)? {
        f(k)?;
        key = Some(k);
    }
    Ok(())
}

/// The kernel's description of a map (its key and value sizes).
fn m_info(map: &aya::maps::Map, name: &str) -> Result<aya::maps::MapInfo, BpfError> {
    match map {
        aya::maps::Map::PerCpuHashMap(m) | aya::maps::Map::PerCpuArray(m) => {
            m.info().map_err(|e| BpfError::load(&format!("map {name}"), &e))
        }
        _ => Err(BpfError::Load(format!("map {name} is not a per-CPU map"))),
    }
}

/// The descriptor of map `name`.
fn map_fd<'a>(ebpf: &'a Ebpf, name: &str) -> Result<std::os::fd::BorrowedFd<'a>, BpfError> {
    use std::os::fd::AsFd;
    match ebpf.map(name) {
        Some(aya::maps::Map::PerCpuHashMap(m) | aya::maps::Map::PerCpuArray(m)) => Ok(m.fd().as_fd()),
        _ => Err(BpfError::Read(format!("no per-CPU map {name}"))),
    }
}
