//! `netpressure_exporter conntrack-top`: the breakdown of one conntrack table, once, for
//! a person at a terminal on the node: entries by protocol and state, the top sources
//! with the pod that owns each address, the top destinations. The same dump and counts
//! as the exporter's breakdown ([`crate::source::breakdown`]), without Prometheus.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command};

use crate::netlink::ctnetlink::{CtDump, Ctnetlink, DumpEnd};
use crate::netlink::route::Addresses;
use crate::netns::{self, NsKey};
use crate::sampler::discovery::{netns_value, Discovery};
use crate::sampler::home::{Entries, Home};
use crate::source::breakdown::{protocol_label, Owner, Owners, Tally};

/// What `conntrack-top` was asked.
#[derive(Debug)]
pub struct Args {
    pub netns: Option<String>,
    pub top: usize,
    pub procfs: PathBuf,
    pub pod_logs: PathBuf,
    pub timeout: Duration,
}

fn command() -> Command {
    Command::new("conntrack-top")
        .bin_name("netpressure_exporter conntrack-top")
        .about("Print who fills a conntrack table: entries by state, top sources (with their pods) and destinations")
        .disable_version_flag(true)
        .arg(
            Arg::new("netns")
                .long("netns")
                .value_name("INODE|host|PID|NAME|PATH")
                .help("The table of this network namespace: its netns label (an inode, or host), a PID, an `ip netns` name, or a path such as /proc/PID/ns/net (default: this process's namespace)"),
        )
        .arg(
            Arg::new("top")
                .long("top")
                .value_name("N")
                .default_value("10")
                .value_parser(clap::value_parser!(usize))
                .help("Sources and destinations listed"),
        )
        .args(crate::doctor::node_paths())
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .value_name("DURATION")
                .default_value("30s")
                .value_parser(|s: &str| crate::config::parse_duration(s))
                .help("Longest the dump may run; a longer one is cut and says so"),
        )
        .arg(Arg::new("help-flag").short('h').long("help").action(ArgAction::Help).help("Print help"))
        .disable_help_flag(true)
}

impl Args {
    /// Parses the arguments after `conntrack-top`.
    ///
    /// # Errors
    /// clap's error (usage or `--help`), to print and exit with.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, clap::Error> {
        let m = command().try_get_matches_from(std::iter::once(OsString::from("conntrack-top")).chain(args))?;
        Ok(Self {
            netns: m.get_one::<String>("netns").cloned(),
            top: m.get_one::<usize>("top").copied().unwrap_or(10),
            procfs: m
                .get_one::<String>("path.procfs")
                .map_or_else(|| "/proc".into(), PathBuf::from),
            pod_logs: m
                .get_one::<String>("path.pod-logs")
                .map_or_else(|| "/var/log/pods".into(), PathBuf::from),
            timeout: m
                .get_one::<Duration>("timeout")
                .copied()
                .unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// The highest PID Linux hands out (`PID_MAX_LIMIT`); namespace inodes are far above it.
const PID_MAX_LIMIT: u64 = 4_194_304;

/// Where `--netns` points: a path; `host`; a namespace inode (the exporter's `netns`
/// label), found among the node's namespaces; a PID; or an `ip netns` name (under
/// `/run/netns`, or PID 1's when this runs in a container).
fn target_path(procfs: &Path, netns: &str) -> Result<PathBuf, String> {
    if netns.contains('/') {
        return Ok(PathBuf::from(netns));
    }
    if netns == "host" {
        // kthreadd lives in the initial namespace; PID 1 where it is not visible.
        let kthreadd = procfs.join("2/ns/net");
        return Ok(if kthreadd.exists() {
            kthreadd
        } else {
            procfs.join("1/ns/net")
        });
    }
    if let Ok(n) = netns.parse::<u64>() {
        if n <= PID_MAX_LIMIT {
            return Ok(procfs.join(netns).join("ns/net"));
        }
        let mut found = std::collections::HashMap::new();
        netns::discover(procfs, &mut found).map_err(|e| format!("--netns {netns}: listing namespaces: {e}"))?;
        return found
            .into_iter()
            .find(|(key, _)| key.1 == n)
            .map(|(_, f)| f.path)
            .ok_or_else(|| format!("--netns {netns}: no network namespace with this inode on the node"));
    }
    let here = Path::new("/run/netns").join(netns);
    let host = procfs.join("1/root/run/netns").join(netns);
    Ok(if here.exists() || !host.exists() { here } else { host })
}

/// What one run found.
#[derive(Debug)]
pub struct Report {
    pub netns: String,
    pub pod: Option<(String, String)>,
    pub entries: Option<u64>,
    pub limit: Option<u64>,
    pub tally: Tally,
    pub end: DumpEnd,
    pub took: Duration,
    pub owners: Arc<Owners>,
}

/// Gathers the addresses of every namespace on the node, then dumps and counts the
/// chosen table.
///
/// # Errors
/// The namespace cannot be opened or entered, or the dump is refused (CAP_NET_ADMIN).
pub fn run(args: &Args) -> Result<Report, String> {
    let own_path = Path::new("/proc/thread-self/ns/net");
    let own_key = netns::key_of(own_path).map_err(|e| format!("{}: {e}", own_path.display()))?;
    let own_file = File::open(own_path).map_err(|e| format!("{}: {e}", own_path.display()))?;
    let init = netns::init_key(&args.procfs);
    let mut home = Home::new(own_file, Arc::new(Entries::default()));

    let (key, path) = match &args.netns {
        None => (own_key, None),
        Some(n) => {
            let p = target_path(&args.procfs, n)?;
            let key = netns::key_of(&p).map_err(|e| format!("--netns {n}: {}: {e}", p.display()))?;
            (key, Some(p))
        }
    };

    // Every namespace's addresses, to name the owner of each source. The slow lane
    // builds the same map (`SlowLane::refresh_owners`) from address sockets it keeps
    // open in each namespace across rounds; this runs once, without a sampler, so it
    // enters each namespace found by the same discovery and reads its addresses there.
    let mut all: Vec<(IpAddr, Arc<Owner>)> = Vec::new();
    let mut buf = Vec::new();
    let own_owner = Arc::new(Owner {
        netns: netns_value(own_key, init),
        pod: None,
    });
    if Addresses::open().and_then(|mut a| a.read(&mut buf)).is_ok() {
        all.extend(buf.drain(..).map(|a| (a, Arc::clone(&own_owner))));
    }
    let mut this_pod = None;
    let mut discovery = Discovery::new(
        args.procfs.clone(),
        args.pod_logs.clone(),
        own_key,
        usize::MAX,
        u64::MAX,
    );
    let targets = discovery
        .run(&std::collections::BTreeMap::<NsKey, ()>::new())
        .unwrap_or_default();
    for t in targets {
        if t.key == key {
            this_pod.clone_from(&t.owner.pod);
        }
        let Ok(file) = netns::open(
            &netns::Found {
                pid: None,
                path: t.path.clone(),
            },
            t.key,
        ) else {
            continue;
        };
        let owner = Arc::new(t.owner);
        let read = home.visit(&file, t.key, || Addresses::open().and_then(|mut a| a.read(&mut buf)));
        if let Some(Ok(())) = read {
            all.extend(buf.drain(..).map(|a| (a, Arc::clone(&owner))));
        }
    }
    let owners = Arc::new(Owners::default());
    owners.replace(all);

    type Dumped = (Option<u64>, Option<u64>, Tally, DumpEnd, Duration);
    let dump = || -> Result<Dumped, String> {
        let stats = Ctnetlink::open().and_then(|mut c| c.stats()).ok();
        let mut dump = CtDump::open().map_err(|e| e.to_string())?;
        let mut tally = Tally::default();
        let started = Instant::now();
        let end = dump.run(started + args.timeout, |e| tally.add(e)).map_err(|e| {
            if e.is_permission_denied() {
                format!("{e}: the dump needs CAP_NET_ADMIN (run as root)")
            } else {
                e.to_string()
            }
        })?;
        Ok((
            stats.and_then(|s| s.entries),
            stats.and_then(|s| s.max_entries),
            tally,
            end,
            started.elapsed(),
        ))
    };
    let (entries, limit, tally, end, took) = match &path {
        None => dump()?,
        Some(p) => {
            let file = netns::open(
                &netns::Found {
                    pid: None,
                    path: p.clone(),
                },
                key,
            )
            .map_err(|e| format!("{}: {e}", p.display()))?;
            home.try_visit(&file, key, dump)
                .map_err(|e| format!("cannot enter {}: {e}", p.display()))??
        }
    };
    Ok(Report {
        netns: netns_value(key, init),
        pod: this_pod,
        entries,
        limit,
        tally,
        end,
        took,
        owners,
    })
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match (addr, port) {
        (a, 0) => a.to_string(),
        (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
        (a, p) => format!("{a}:{p}"),
    }
}

/// The report as a terminal table.
pub fn render(r: &Report, top: usize) -> String {
    let mut out = String::new();
    let pod = r
        .pod
        .as_ref()
        .map_or(String::new(), |(ns, p)| format!(" (pod {ns}/{p})"));
    let fill = match (r.entries, r.limit) {
        (Some(e), Some(l)) if l > 0 => format!("{e} entries of {l} ({:.0}%)", e as f64 * 100.0 / l as f64),
        (Some(e), _) => format!("{e} entries"),
        _ => "entries unknown".into(),
    };
    let _ = writeln!(
        out,
        "conntrack table of netns {}{pod}: {fill}; dumped {} in {:.1} ms{}",
        r.netns,
        r.tally.total,
        r.took.as_secs_f64() * 1000.0,
        if r.end == DumpEnd::Cut {
            " (CUT at --timeout: a part of the table)"
        } else {
            ""
        }
    );
    let ranked = r.tally.rank(top);
    let _ = writeln!(out, "\nBY STATE\n{:>9}  {:<9} STATE", "ENTRIES", "PROTOCOL");
    let mut states = ranked.states.clone();
    states.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for ((protocol, state), n) in states {
        let _ = writeln!(out, "{n:>9}  {protocol:<9} {state}");
    }
    let width = ranked
        .sources
        .iter()
        .map(|(a, _)| a.to_string().len())
        .max()
        .unwrap_or(0)
        .max(15);
    let _ = writeln!(out, "\nTOP SOURCES\n{:>9}  {:<width$} OWNER", "ENTRIES", "SOURCE");
    for (addr, n) in &ranked.sources {
        let owner = r.owners.get(addr).map_or_else(
            || "-".to_string(),
            |o| match &o.pod {
                Some((ns, p)) => format!("pod {ns}/{p} (netns {})", o.netns),
                None => format!("netns {}", o.netns),
            },
        );
        let _ = writeln!(out, "{n:>9}  {:<width$} {owner}", addr.to_string());
    }
    if ranked.other_sources > 0 {
        let _ = writeln!(out, "{:>9}  other", ranked.other_sources);
    }
    let _ = writeln!(
        out,
        "\nTOP DESTINATIONS\n{:>9}  {:<9} DESTINATION",
        "ENTRIES", "PROTOCOL"
    );
    for ((p, addr, port), n) in &ranked.destinations {
        let _ = writeln!(out, "{n:>9}  {:<9} {}", protocol_label(*p), endpoint(*addr, *port));
    }
    if ranked.other_destinations > 0 {
        let _ = writeln!(out, "{:>9}  other", ranked.other_destinations);
    }
    out
}
