//! The node pass's program (`bpf/node_pass.bpf.c`): every namespace's conntrack and
//! TIME_WAIT counts and every TCP listener's queues, in one run, read from arrays mapped
//! into this process. Loaded with aya; run by reading a new iterator of its link.

use std::io::Read as _;
use std::os::fd::AsFd as _;

use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader};

use super::{chain, BpfError};
use crate::sys::MappedArray;

/// The object `scripts/build-bpf.sh` builds from `bpf/node_pass.bpf.c`, committed
/// (`tests/bpf_object.rs` proves it is that source's).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/node_pass.bpf.o");

/// The arrays' sizes, as `MAX_NAMESPACES` and `MAX_LISTENERS` in the C source.
pub const MAX_NAMESPACES: usize = 4096;
pub const MAX_LISTENERS: usize = 8192;

/// One namespace, as `struct ns_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsRecord {
    pub cookie: u64,
    pub ino: u32,
    /// Conntrack entries, when [`Meta::ct_found`].
    pub ct_count: u32,
    pub time_wait: u32,
    pub pad: u32,
}

/// One listening socket, as `struct listener_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerRecord {
    pub cookie: u64,
    pub ino: u32,
    pub family: u16,
    pub port: u16,
    /// Network byte order, as the kernel keeps it (IPv4 in the first word).
    pub addr: [u32; 4],
    pub queue: u32,
    pub limit: u32,
    pub syn_queue: u32,
    pub pad: u32,
}

impl ListenerRecord {
    pub fn ip(&self) -> std::net::IpAddr {
        let bytes = |w: u32| w.to_ne_bytes();
        if self.family == libc::AF_INET6 as u16 {
            let mut b = [0u8; 16];
            for (i, w) in self.addr.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&bytes(*w));
            }
            std::net::IpAddr::from(b)
        } else {
            std::net::IpAddr::from(bytes(self.addr[0]))
        }
    }
}

/// What a pass says of itself, as `struct meta`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub passes: u64,
    pub namespaces: u32,
    pub listeners: u32,
    pub namespaces_lost: u32,
    pub listeners_lost: u32,
    pub buckets: u32,
    pub ct_found: u32,
    pub ct_slot: u32,
    pub ct_offset: u32,
    /// Bit 0: the namespace list did not come round; 1: a chain too long; 2: the
    /// listening hash's buckets are not 16 bytes; 3: a read failed.
    pub trouble: u32,
    pub pad: u32,
}

/// The loaded program, its link, and its mapped arrays.
pub struct PassProgram {
    /// Holds the program and maps (dropping it unloads them).
    _ebpf: Ebpf,
    link: std::os::fd::OwnedFd,
    namespaces: MappedArray<NsRecord>,
    listeners: MappedArray<ListenerRecord>,
    meta: MappedArray<Meta>,
}

impl std::fmt::Debug for PassProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassProgram")
    }
}

/// One pass's records, copied out of the mapped arrays into buffers the caller keeps.
#[derive(Debug, Default)]
pub struct PassOutput {
    pub meta: Meta,
    pub namespaces: Vec<NsRecord>,
    pub listeners: Vec<ListenerRecord>,
}

impl PassProgram {
    /// Loads the program relocated for the running kernel (`btf`: the bytes of
    /// `/sys/kernel/btf/vmlinux`), links it, and maps its arrays.
    ///
    /// # Errors
    /// No BTF; a kernel before 5.17 (no `bpf_loop`) or whose layout the program does not
    /// know (the verifier's or the relocation's message); no CAP_BPF and CAP_PERFMON.
    pub fn load(btf: &[u8]) -> Result<Self, BpfError> {
        let btf = Btf::parse(btf, aya::Endianness::default()).map_err(|e| BpfError::load("the kernel's BTF", &e))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(OBJECT)
            .map_err(|e| BpfError::load("loading the node pass's maps", &e))?;
        let program: &mut Iter = ebpf
            .program_mut("node_pass")
            .ok_or_else(|| BpfError::Load("the object has no node_pass program".into()))?
            .try_into()
            .map_err(|e| BpfError::load("node_pass", &e))?;
        program
            .load("task", &btf)
            .map_err(|e| BpfError::load("loading the node pass (a task iterator)", &e))?;
        let link = {
            let fd = program.fd().map_err(|e| BpfError::load("node_pass", &e))?;
            crate::sys::bpf_iter_link(fd.as_fd()).map_err(|e| BpfError::Load(format!("linking the node pass: {e}")))?
        };
        let namespaces = mapped(&ebpf, "namespaces", MAX_NAMESPACES)?;
        let listeners = mapped(&ebpf, "listeners", MAX_LISTENERS)?;
        let meta = mapped(&ebpf, "result", 1)?;
        Ok(Self {
            _ebpf: ebpf,
            link,
            namespaces,
            listeners,
            meta,
        })
    }

    /// Runs one pass and copies its records into `out` (its buffers reused: no
    /// allocation once they have grown to the node's size).
    ///
    /// # Errors
    /// The iterator could not be made or read, or the program reported a failure.
    pub fn run(&mut self, out: &mut PassOutput) -> Result<(), BpfError> {
        let iter = crate::sys::bpf_iter_create(self.link.as_fd())
            .map_err(|e| BpfError::Read(format!("a new iterator: {e}")))?;
        let mut status = [0u8; 8];
        std::fs::File::from(iter)
            .read_exact(&mut status)
            .map_err(|e| BpfError::Read(format!("running the node pass: {e}")))?;
        let status = u64::from_ne_bytes(status);
        if status != 0 {
            return Err(BpfError::Read(format!("the node pass failed (status {status})")));
        }
        out.meta = self.meta.get(0).unwrap_or_default();
        out.namespaces.clear();
        out.namespaces
            .extend((0..(out.meta.namespaces as usize).min(MAX_NAMESPACES)).filter_map(|i| self.namespaces.get(i)));
        out.listeners.clear();
        out.listeners
            .extend((0..(out.meta.listeners as usize).min(MAX_LISTENERS)).filter_map(|i| self.listeners.get(i)));
        Ok(())
    }
}

/// Maps array `name`, after checking that its value is the record type's size.
fn mapped<T: Copy>(ebpf: &Ebpf, name: &str, entries: usize) -> Result<MappedArray<T>, BpfError> {
    let Some(aya::maps::Map::Array(map)) = ebpf.map(name) else {
        return Err(BpfError::Load(format!("the object has no array {name}")));
    };
    let info = map.info().map_err(|e| BpfError::load(&format!("map {name}"), &e))?;
    if info.value_size() as usize != size_of::<T>() || (info.max_entries() as usize) < entries {
        return Err(BpfError::Load(format!(
            "map {name}: values of {} bytes and {} entries, expected {} and {entries}",
            info.value_size(),
            info.max_entries(),
            size_of::<T>()
        )));
    }
    // SAFETY: an array made BPF_F_MMAPABLE (the object's definition, checked by the
    // mmap itself), with at least `entries` values of `T`'s size (checked above); the
    // record types are integers only.
    unsafe { MappedArray::new(map.fd().as_fd(), entries) }
        .map_err(|e| BpfError::Load(format!("mapping {name}: {e} ({})", chain(&e))))
}
