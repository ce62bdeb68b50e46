//! Flags -> config, logging, runtime; spawn the sampler and the HTTP server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use netpressure_exporter::config::{CliExit, Config};
use netpressure_exporter::http::{app, AppState};
use netpressure_exporter::sampler::Sampler;
use netpressure_exporter::webconfig::live::Web;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    netpressure_exporter::sys::fix_mmap_threshold();
    let mut args = std::env::args_os();
    match std::env::args_os().nth(1) {
        Some(a) if a == "conntrack-top" => return conntrack_top(args.by_ref().skip(2).collect()),
        Some(a) if a == "doctor" => return doctor(args.by_ref().skip(2).collect()),
        _ => {}
    }
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        // print! and eprintln! panic when the stream cannot be written (`--help
        // >/dev/full`); a failed write is reported (where stderr still works) and exits 1.
        Err(CliExit::Print(text)) => {
            return if print(&text) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        Err(CliExit::Usage(line)) => {
            let _ = writeln!(std::io::stderr(), "{line}");
            return ExitCode::from(2);
        }
    };
    netpressure_exporter::logging::init(cfg.log_level, cfg.log_format);
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Writes `text` to standard output and flushes it. print! panics when the stream
/// cannot be written (`--help >/dev/full`); here a failed write is reported (where
/// stderr still works) and the caller exits 1.
fn print(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "netpressure_exporter: cannot write to standard output: {e}"
            );
            false
        }
    }
}

/// A subcommand's arguments parsed, or how to exit: clap's text printed, 0 for
/// `--help`, 2 for a usage error.
fn subcommand_args<A>(parsed: Result<A, clap::Error>) -> Result<A, ExitCode> {
    parsed.map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    })
}

/// `netpressure_exporter conntrack-top`: prints one table's breakdown and exits.
fn conntrack_top(args: Vec<std::ffi::OsString>) -> ExitCode {
    use netpressure_exporter::top;
    let args = match subcommand_args(top::Args::parse(args)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    netpressure_exporter::logging::init(log::LevelFilter::Warn, netpressure_exporter::config::LogFormat::Logfmt);
    match top::run(&args) {
        Ok(report) => {
            if print(&top::render(&report, args.top)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "netpressure_exporter conntrack-top: {e}");
            ExitCode::from(1)
        }
    }
}

/// `netpressure_exporter doctor`: findings, exit 1 when one is critical.
fn doctor(args: Vec<std::ffi::OsString>) -> ExitCode {
    use netpressure_exporter::doctor;
    let args = match subcommand_args(doctor::Args::parse(args)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    netpressure_exporter::logging::init(log::LevelFilter::Error, netpressure_exporter::config::LogFormat::Logfmt);
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match doctor::run(&args, colour) {
        Ok((text, critical)) => {
            if !print(&text) {
                return ExitCode::from(1);
            }
            ExitCode::from(u8::from(critical))
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "netpressure_exporter doctor: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    // systemd's sockets are taken while this is the only thread: taking them removes
    // their environment variables (see `systemd_listeners`).
    let passed = if cfg.systemd_socket {
        Some(netpressure_exporter::sys::systemd_listeners().map_err(|e| anyhow::anyhow!("--web.systemd-socket: {e}"))?)
    } else {
        None
    };
    // Blocking threads encode scrapes (http::routes::metrics): two at most, as the machine
    // rarely has cores to spare for more; --web.max-requests bounds those waiting.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()?;
    let http_stats = std::sync::Arc::new(netpressure_exporter::metrics::HttpStats::default());
    let web = match &cfg.web_config_file {
        None => Web::plain(std::sync::Arc::clone(&http_stats)),
        Some(path) => Web::load(path, std::sync::Arc::clone(&http_stats))
            .map_err(|e| anyhow::anyhow!("--web.config.file {}: {e}", path.display()))?,
    };
    let web = std::sync::Arc::new(web);
    rt.block_on(async {
        let listeners = listeners(&cfg, passed).await?;
        let local = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<Vec<_>>>()?
            .join(", ");

        match netpressure_exporter::sys::raise_nofile_limit() {
            Ok((old, new)) if old != new => log::debug!("raised the soft RLIMIT_NOFILE from {old} to {new}"),
            Ok(_) => {}
            Err(e) => log::warn!("cannot raise the soft RLIMIT_NOFILE to the hard limit: {e}"),
        }
        let (sampler, snapshots) = Sampler::from_config(&cfg);
        let sampler = sampler.with_http_stats(std::sync::Arc::clone(&http_stats));
        let (stop_tx, stop_rx) = netpressure_exporter::sampler::stop_pair();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            sampler.run(stop_rx);
            let _ = done_tx.send(());
        })?;

        let stale_after = (cfg.sample_interval * 20).max(Duration::from_secs(10));
        let state = AppState {
            snapshots,
            telemetry_path: cfg.telemetry_path.clone(),
            stale_after,
            slow_stale_after: netpressure_exporter::sampler::slow_round_deadline(&cfg),
            sources: cfg.sources.clone(),
            started: std::time::Instant::now(),
            first_sample_deadline: stale_after,
            requests: std::sync::Arc::new(tokio::sync::Semaphore::new(cfg.max_requests)),
            stats: std::sync::Arc::clone(&http_stats),
            bodies: std::sync::Arc::default(),
        };
        // Installed before "listening on": a SIGTERM sent when that line appears ends
        // the process (see `signals`).
        let signals = signals(std::sync::Arc::clone(&web));
        log::info!(
            "listening on {local} ({}), metrics at {}; sampling {} every {:?}, peaks over {:?}",
            if web.tls() { "HTTPS" } else { "HTTP" },
            cfg.telemetry_path,
            state.sources.join(","),
            cfg.sample_interval,
            cfg.peak_window
        );
        netpressure_exporter::http::serve(listeners, app(state), cfg.max_connections, http_stats, web, signals).await?;
        drop(stop_tx);
        // A sample stuck in the kernel must not keep the process from exiting.
        if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            log::warn!("the sampler did not stop within 5 s; exiting without it");
        }
        log::info!("stopped");
        Ok(())
    })
}

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4), as Go's servers do. tokio's own `bind` asks for 1024: a
/// burst of connections beyond it while the HTTP thread is busy would be dropped by
/// the kernel, Prometheus's among them.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on one address with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The sockets to serve on: systemd's (`--web.systemd-socket`), or one bound for each
/// `--web.listen-address`.
async fn listeners(cfg: &Config, passed: Option<Vec<std::net::TcpListener>>) -> anyhow::Result<Vec<TcpListener>> {
    if let Some(passed) = passed {
        return passed
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Into::into);
    }
    let mut out = Vec::new();
    for addr in &cfg.listen_addresses {
        out.push(bind(addr).await?);
    }
    Ok(out)
}

/// Binds one `--web.listen-address`. `:PORT` means every address: IPv6 and IPv4 where the
/// host has IPv6, IPv4 only where it does not.
async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().context("--web.listen-address: bad port")?;
        match listen(SocketAddr::from(([0u16; 8], port))) {
            Ok(l) => return Ok(l),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) || e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} (--web.listen-address)")),
        }
        return listen(SocketAddr::from(([0u8; 4], port)))
            .with_context(|| format!("cannot listen on {addr} (--web.listen-address)"));
    }
    let mut last = None;
    for a in tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--web.listen-address)"))?
    {
        match listen(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("the name resolves to no address"));
    Err(e).with_context(|| format!("cannot listen on {addr} (--web.listen-address)"))
}

/// Completes on SIGTERM or SIGINT. SIGHUP (which would otherwise end the process with
/// status 129 and no word) re-reads `--web.config.file`, as Prometheus users expect.
///
///
/// The handlers are installed when this is called, not when the future is first
/// polled: call it before announcing that the exporter listens. Installed at the first
/// poll, a SIGTERM sent as "listening on" appeared found no handler yet and killed the
/// process without its shutdown (8 of 8 tries); once in CI such a SIGTERM did not end
/// the process within 10 s, a cause not found, in the same window.
fn signals(web: std::sync::Arc<Web>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
            log::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return log::info!("SIGTERM received, shutting down"),
                _ = int.recv() => return log::info!("SIGINT received, shutting down"),
                _ = hup.recv() => web.reload("SIGHUP"),
            }
        }
    }
}
