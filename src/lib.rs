//! netpressure_exporter: conntrack, socket and file-descriptor pressure of a Linux node,
//! sampled sub-second, with sliding-window peaks, served to Prometheus.
//!
//! Layout (`docs/architecture.md`): kernel I/O happens in `netlink/` (sockets),
//! `procfs/` (files under `/proc`), `sys`, `netns` and `bpf` (system calls, namespace
//! handles, the BPF programs: the drop counter and the node pass), each decoding into
//! plain records; `source/`
//! turns records into series; `sampler` runs the clock and publishes immutable
//! [`snapshot::Snapshot`]s; `http` encodes the latest one per scrape and never touches
//! the kernel. `webconfig` and `doctor` read their files through `procfs::read` for its
//! bounds (no FIFO, no endless file).

pub mod bpf;
pub mod btf;
pub mod cadence;
pub mod collectors;
pub mod config;
pub mod cputotals;
pub mod doctor;
// The fuzz targets' entry points (`fuzz/`), replayed by `tests/fuzz_corpora.rs`: public
// for those crates, never called by the binary (and so not linked into it). The same
// holds for `Sampler::step_all`, `NsContext::read_here` and
// `Processes::without_prlimit`, which benches, tests and examples use; a cargo feature
// would hide them at the price of a second build of the crate in the suite.
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod peak;
pub mod pods;
pub mod procfs;
pub mod sampler;
pub mod snapshot;
pub mod source;
pub mod sync;
pub mod sys;
pub mod top;
pub mod webconfig;
pub mod yaml;
