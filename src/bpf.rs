//! The kernel-side drop counter: the BPF program of `bpf/drop_reasons.bpf.c` on the
//! `skb:kfree_skb` tracepoint, loaded with aya. The only module that sees aya's types.
//!
//! aya is pure Rust (no libbpf, no libelf to link), so the static binary stays static; it
//! does the CO-RE relocations against the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). It needs no tracefs (the program is BTF-typed, `tp_btf`,
//! attached through a BPF link) and raises no RLIMIT_MEMLOCK: from 5.11 the kernel
//! charges BPF memory to the loader's memory cgroup. Nothing is pinned: the link, the
//! program and the maps are descriptors of this process, and go when it exits.

use std::fmt::Write as _;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

/// The object `scripts/build-bpf.sh` builds from `bpf/drop_reasons.bpf.c`, committed
/// (`tests/bpf_object.rs` proves it is that source's).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/drop_reasons.bpf.o");

/// How many (namespace, reason) pairs the kernel map holds. Each costs 8 bytes per
/// possible CPU plus the hash element (preallocated: a tracepoint may fire in any
/// context, where allocating is not allowed on older kernels): 4,096 entries are about
/// 0.3 MiB on 2 CPUs and 2.3 MiB on 64. 250 pods with 10 reasons each fit with room.
pub const MAX_ENTRIES: u32 = 4096;

/// Why the drop counter cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
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
    /// What one per-CPU sum of the last read came to, per key (reused between reads).
    keys: Vec<u64>,
}

impl std::fmt::Debug for DropCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropCounter")
    }
}

impl DropCounter {
    /// Loads the program, relocated for the running kernel, and attaches it.
    ///
    /// # Errors
    /// No BTF, a kernel without the tracepoint's reason argument (before 5.17), no
    /// capability, BPF locked down: each with the kernel's answer.
    pub fn load() -> Result<Self, BpfError> {
        let btf = Btf::from_sys_fs().map_err(|e| BpfError::load("reading the kernel's BTF", &e))?;
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
                    return Ok(Self { ebpf, keys: Vec::new() });
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
    /// first), and returns the drops the full map could not count.
    ///
    /// # Errors
    /// A map syscall failed.
    pub fn read(&mut self, out: &mut Vec<(u64, u64)>) -> Result<u64, BpfError> {
        out.clear();
        let map = drops(&self.ebpf)?;
        for item in map.iter() {
            let (key, per_cpu) = item.map_err(|e| BpfError::Read(chain(&e)))?;
            out.push((key, per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v))));
        }
        let overflow: PerCpuArray<&MapData, u64> = self
            .ebpf
            .map("overflow")
            .ok_or_else(|| BpfError::Read("no overflow map".into()))
            .and_then(|m| PerCpuArray::try_from(m).map_err(|e| BpfError::Read(chain(&e))))?;
        let full = overflow.get(&0, 0).map_err(|e| BpfError::Read(chain(&e)))?;
        Ok(full.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
    }

    /// Deletes the keys for which `forget` holds (the namespaces no longer sampled, whose
    /// inodes the kernel may hand to a new namespace).
    ///
    /// # Errors
    /// A map syscall failed.
    pub fn forget(&mut self, mut forget: impl FnMut(u64) -> bool) -> Result<usize, BpfError> {
        self.keys.clear();
        {
            let map = drops(&self.ebpf)?;
            for key in map.keys() {
                let key = key.map_err(|e| BpfError::Read(chain(&e)))?;
                if forget(key) {
                    self.keys.push(key);
                }
            }
        }
        let mut map: PerCpuHashMap<&mut MapData, u64, u64> = self
            .ebpf
            .map_mut("drops")
            .ok_or_else(|| BpfError::Read("no drops map".into()))
            .and_then(|m| PerCpuHashMap::try_from(m).map_err(|e| BpfError::Read(chain(&e))))?;
        let mut removed = 0;
        for key in &self.keys {
            // Gone already (a concurrent delete cannot happen: only this process has the
            // map), or removed: either way no longer there.
            if map.remove(key).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn drops(ebpf: &Ebpf) -> Result<PerCpuHashMap<&MapData, u64, u64>, BpfError> {
    ebpf.map("drops")
        .ok_or_else(|| BpfError::Read("no drops map".into()))
        .and_then(|m| PerCpuHashMap::try_from(m).map_err(|e| BpfError::Read(chain(&e))))
}
