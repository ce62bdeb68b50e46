//! The web configuration while the server runs.
//!
//! The toolkit re-reads its file on every request so that a rotated certificate is
//! served at once. Here the file and the files it names (certificate, key, client CA)
//! are `stat`ed for each accepted connection and each request, and re-read only when
//! one changed, which also catches Kubernetes' atomic symlink swap of a mounted Secret.
//! SIGHUP re-reads unconditionally. A change that does not load (a typo, a key that
//! does not match its certificate half-way through a rotation) is logged and the last
//! good configuration stays in force; the same broken files are not re-read at every
//! connection, only when they change again.
//!
//! None of this runs on the HTTP thread: one thread of its own does the `stat`s, the
//! bounded non-blocking reads ([`super::read_file`]) and the building of the rustls
//! configuration. A request asks it for a check and waits at most [`CHECK_WAIT`] for
//! the answer; if the thread is slow (a file system that hangs), the request is served
//! with the configuration in force. Requests that arrive together share one check,
//! and a check younger than [`CHECK_FRESH`] answers the requests that follow it, so a
//! flood of requests costs the checker at most one round per [`CHECK_FRESH`].

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};

use super::auth::{BasicAuth, RateLimits};
use super::WebConfig;
use crate::metrics::HttpStats;

/// What the server applies to a connection and its requests.
#[derive(Debug, Default)]
pub struct Active {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: Option<Arc<BasicAuth>>,
    pub limits: Option<RateLimits>,
}

/// A file's identity and last change, to notice a rewrite or a swapped symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, u64, u64, i64, i64, i64, i64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        Self(std::fs::metadata(path).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        }))
    }
}

#[derive(Debug)]
struct Inner {
    active: Arc<Active>,
    /// The configuration file and the files it names, with their stamps when last
    /// read (whether that read loaded or not).
    seen: Vec<(PathBuf, Stamp)>,
}

#[derive(Debug)]
pub struct Web {
    path: Option<PathBuf>,
    /// Where the last re-read's outcome is served (`netpressure_web_config_last_reload_successful`).
    stats: Arc<HttpStats>,
    /// Whether TLS was on at start: fixed for the process's life, as in the toolkit
    /// (a typo must not turn a TLS endpoint into a plain one).
    tls: bool,
    inner: Mutex<Inner>,
    checks: Checks,
}

/// How long a request waits for the checker before it is served with the
/// configuration in force.
pub const CHECK_WAIT: Duration = Duration::from_secs(2);
/// How old a finished check may be and still answer a new request: a change is seen
/// by the requests that arrive this long after it.
pub const CHECK_FRESH: Duration = Duration::from_millis(2);

/// Requests for checks, and the checker's progress, in tickets: a request takes the
/// next ticket and is answered when the checker has finished a check it started after
/// the ticket was taken.
#[derive(Debug)]
struct Checks {
    state: Mutex<CheckState>,
    wake: Condvar,
    done: tokio::sync::watch::Sender<u64>,
    started: std::sync::OnceLock<bool>,
}

#[derive(Debug, Default)]
struct CheckState {
    requested: u64,
    /// A SIGHUP asked to re-read whether or not anything changed.
    forced: Option<String>,
    /// When the last finished check started, and the ticket it answered.
    last: Option<(Instant, u64)>,
}

impl Checks {
    fn new() -> Self {
        Self {
            state: Mutex::default(),
            wake: Condvar::new(),
            done: tokio::sync::watch::channel(0).0,
            started: std::sync::OnceLock::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CheckState> {
        crate::sync::lock(&self.state)
    }
}

/// Builds what `cfg` asks for; `previous` lends what it remembered of basic-auth checks
/// when the users are unchanged.
fn build(cfg: &WebConfig, previous: Option<&Active>) -> Result<Active, String> {
    let tls = match &cfg.tls {
        Some(t) => Some(super::tls::server_config(t)?),
        None => None,
    };
    Ok(Active {
        tls,
        headers: cfg.headers.clone(),
        auth: BasicAuth::new(&cfg.users, previous.and_then(|p| p.auth.as_deref())).map(Arc::new),
        limits: cfg.rate_limit.map(RateLimits::new),
    })
}

fn describe(cfg: &WebConfig) -> String {
    let tls = match &cfg.tls {
        Some(t) => format!("TLS on (client certificates: {:?})", t.client_auth),
        None => "TLS off".into(),
    };
    let auth = match cfg.users.len() {
        0 => "no basic auth".to_string(),
        n => format!("basic auth for {n} user(s)"),
    };
    let rate = cfg.rate_limit.map_or(String::new(), |r| {
        format!(
            ", at most a burst of {} requests and one per {:?} (for clients that passed basic auth and for the others apart)",
            r.burst, r.interval
        )
    });
    format!("{tls}, {auth}{rate}")
}

impl Web {
    /// No `--web.config.file`: plain HTTP, no authentication.
    pub fn plain(stats: Arc<HttpStats>) -> Self {
        Self {
            path: None,
            stats,
            tls: false,
            inner: Mutex::new(Inner {
                active: Arc::default(),
                seen: Vec::new(),
            }),
            checks: Checks::new(),
        }
    }

    /// Loads `path` at start.
    ///
    /// # Errors
    /// The message names the key at fault and what is accepted.
    pub fn load(path: &Path, stats: Arc<HttpStats>) -> Result<Self, String> {
        let stamp = Stamp::of(path);
        let cfg = super::load(path)?;
        let active = build(&cfg, None)?;
        for w in &cfg.warnings {
            log::warn!("--web.config.file {}: {w}", path.display());
        }
        if cfg.http2_requested {
            log::info!(
                "--web.config.file {}: http2 asked for; served over HTTP/1.1 only",
                path.display()
            );
        }
        log::info!("--web.config.file {}: {}", path.display(), describe(&cfg));
        Ok(Self {
            path: Some(path.to_path_buf()),
            stats,
            tls: cfg.tls.is_some(),
            inner: Mutex::new(Inner {
                active: Arc::new(active),
                seen: seen(path, stamp, &cfg),
            }),
            checks: Checks::new(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Active> {
        Arc::clone(&self.inner().active)
    }

    /// Whether TLS is on (fixed at start).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The configuration in force once the checker has looked for changes made
    /// before this call (re-reading what changed), or after [`CHECK_WAIT`] without it.
    pub async fn refresh(self: &Arc<Self>) -> Arc<Active> {
        if self.path.is_none() || !self.start_checker() {
            return self.current();
        }
        let ticket = {
            let mut st = self.checks.state();
            match st.last {
                Some((at, answered)) if at.elapsed() < CHECK_FRESH && answered == st.requested => {
                    drop(st);
                    return self.current();
                }
                _ => {}
            }
            st.requested += 1;
            st.requested
        };
        self.checks.wake.notify_one();
        let mut done = self.checks.done.subscribe();
        let _ = tokio::time::timeout(CHECK_WAIT, done.wait_for(|d| *d >= ticket)).await;
        self.current()
    }

    /// Asks the checker to re-read the configuration now, changed or not (SIGHUP);
    /// does not wait for it.
    pub fn reload(self: &Arc<Self>, why: &str) {
        if self.path.is_none() {
            return log::info!("{why}: no --web.config.file to re-read");
        }
        if !self.start_checker() {
            return;
        }
        let mut st = self.checks.state();
        st.requested += 1;
        st.forced = Some(why.to_string());
        drop(st);
        self.checks.wake.notify_one();
    }

    /// Starts the checker thread once; false if it cannot be started (logged).
    fn start_checker(self: &Arc<Self>) -> bool {
        *self.checks.started.get_or_init(|| {
            let web = Arc::downgrade(self);
            match std::thread::Builder::new()
                .name("web-config".into())
                .spawn(move || check_loop(&web))
            {
                Ok(_) => true,
                Err(e) => {
                    log::error!("cannot start the --web.config.file checker: {e}; changes to the file are not applied");
                    false
                }
            }
        })
    }

    /// One check: re-reads the configuration if a file changed since it was last
    /// read, or unconditionally for `forced`.
    fn check(&self, forced: Option<&str>) {
        let Some(path) = &self.path else { return };
        // The stats and reads happen before the lock is taken: a request never waits
        // on the mutex for a file system.
        let seen = self.inner().seen.clone();
        let changed = seen.iter().any(|(p, s)| Stamp::of(p) != *s);
        match (forced, changed) {
            (Some(why), _) => self.reload_from(path, why),
            (None, true) => self.reload_from(path, "it changed"),
            (None, false) => {}
        }
    }

    fn reload_from(&self, path: &Path, why: &str) {
        let stamp = Stamp::of(path);
        let parsed = super::load(path);
        let previous = self.current();
        // Remember what was read, loaded or not, so the same broken files are not
        // re-read at every connection; a change to any of them is tried again.
        let seen_now = match &parsed {
            Ok(cfg) => seen(path, stamp, cfg),
            Err(_) => {
                // The files named by the last good configuration, stat'ed outside the
                // lock (requests take it for the configuration in force).
                let named: Vec<PathBuf> = self.inner().seen.iter().skip(1).map(|(p, _)| p.clone()).collect();
                std::iter::once((path.to_path_buf(), stamp))
                    .chain(named.into_iter().map(|p| {
                        let s = Stamp::of(&p);
                        (p, s)
                    }))
                    .collect()
            }
        };
        let loaded = parsed.and_then(|cfg| {
            if cfg.tls.is_some() != self.tls {
                let now = if self.tls { "off" } else { "on" };
                return Err(format!("tls_server_config: turning TLS {now} needs a restart"));
            }
            build(&cfg, Some(&previous)).map(|active| (cfg, active))
        });
        let mut inner = self.inner();
        inner.seen = seen_now;
        match loaded {
            Ok((cfg, active)) => {
                inner.active = Arc::new(active);
                drop(inner);
                for w in &cfg.warnings {
                    log::warn!("--web.config.file {}: {w}", path.display());
                }
                log::info!(
                    "--web.config.file {} re-read ({why}): {}",
                    path.display(),
                    describe(&cfg)
                );
                self.stats.web_config_ok.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                drop(inner);
                log::warn!(
                    "--web.config.file {} re-read ({why}) failed, keeping the last good configuration: {e}",
                    path.display()
                );
                self.stats.web_config_ok.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The checker thread: waits for tickets, checks once for all that are waiting, and
/// answers them. Ends when the server's [`Web`] is gone.
fn check_loop(web: &std::sync::Weak<Web>) {
    loop {
        let Some(w) = web.upgrade() else { return };
        let (ticket, forced) = {
            let mut st = w.checks.state();
            while st.requested == st.last.map_or(0, |(_, t)| t) {
                // Wake now and then to notice that the server has gone.
                let (next, _) = w
                    .checks
                    .wake
                    .wait_timeout(st, Duration::from_secs(1))
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st = next;
                if std::sync::Weak::strong_count(web) <= 1 {
                    return;
                }
            }
            (st.requested, st.forced.take())
        };
        let started = Instant::now();
        w.check(forced.as_deref());
        w.checks.state().last = Some((started, ticket));
        w.checks.done.send_replace(ticket);
    }
}

fn seen(path: &Path, stamp: Stamp, cfg: &WebConfig) -> Vec<(PathBuf, Stamp)> {
    std::iter::once((path.to_path_buf(), stamp))
        .chain(cfg.files().into_iter().map(|p| {
            let s = Stamp::of(&p);
            (p, s)
        }))
        .collect()
}
