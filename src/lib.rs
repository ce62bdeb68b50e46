//! netpressure_exporter: conntrack, socket and file-descriptor pressure of a Linux node,
//! sampled sub-second, with sliding-window peaks, served to Prometheus.
//!
//! Layout: `netlink/` and `procfs/` are the only modules doing kernel I/O; `source/`
//! turns their records into series; `sampler` runs the clock and publishes immutable
//! [`snapshot::Snapshot`]s; `server` encodes the latest one per scrape.

pub mod bpf;
pub mod btf;
pub mod collectors;
pub mod config;
pub mod cputotals;
pub mod doctor;
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
