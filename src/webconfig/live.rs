//! The web configuration while the server runs.
//!
//! The toolkit re-reads its file on every request so that a rotated certificate is
//! served at once. Here each accepted connection `stat`s the file and the files it
//! names (certificate, key, client CA: a few microseconds) and re-reads only when one
//! changed, which also catches Kubernetes' atomic symlink swap of a mounted Secret.
//! SIGHUP re-reads unconditionally. A change that does not load (a typo, a key that
//! does not match its certificate half-way through a rotation) is logged and the last
//! good configuration stays in force; the same broken files are not re-read at every
//! connection, only when they change again.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, HeaderValue};

use super::auth::{BasicAuth, RateLimiter};
use super::WebConfig;
use crate::metrics::HttpStats;

/// What the server applies to a connection and its requests.
#[derive(Debug, Default)]
pub struct Active {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: Option<BasicAuth>,
    pub limiter: Option<RateLimiter>,
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
}

fn build(cfg: &WebConfig) -> Result<Active, String> {
    let tls = match &cfg.tls {
        Some(t) => Some(super::tls::server_config(t)?),
        None => None,
    };
    Ok(Active {
        tls,
        headers: cfg.headers.clone(),
        auth: BasicAuth::new(&cfg.users),
        limiter: cfg.rate_limit.map(RateLimiter::new),
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
        format!(", at most {} requests per {:?} burst", r.burst, r.interval)
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
        }
    }

    /// Loads `path` at start.
    ///
    /// # Errors
    /// The message names the key at fault and what is accepted.
    pub fn load(path: &Path, stats: Arc<HttpStats>) -> Result<Self, String> {
        let stamp = Stamp::of(path);
        let cfg = super::load(path)?;
        let active = build(&cfg)?;
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
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Active> {
        Arc::clone(&self.inner().active)
    }

    /// Whether TLS is on (fixed at start).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Re-reads the configuration if the file or a file it names changed since it
    /// was last read; returns the configuration then in force.
    pub fn refresh(&self) -> Arc<Active> {
        let Some(path) = &self.path else {
            return self.current();
        };
        let mut inner = self.inner();
        if inner.seen.iter().all(|(p, s)| Stamp::of(p) == *s) {
            return Arc::clone(&inner.active);
        }
        self.reload_locked(path, &mut inner, "it changed");
        Arc::clone(&inner.active)
    }

    /// Re-reads the configuration now (SIGHUP).
    pub fn reload(&self, why: &str) {
        match &self.path {
            Some(path) => self.reload_locked(path, &mut self.inner(), why),
            None => log::info!("{why}: no --web.config.file to re-read"),
        }
    }

    fn reload_locked(&self, path: &Path, inner: &mut Inner, why: &str) {
        let stamp = Stamp::of(path);
        let parsed = super::load(path);
        // Remember what was read, loaded or not, so the same broken files are not
        // re-read at every connection; a change to any of them is tried again.
        inner.seen = match &parsed {
            Ok(cfg) => seen(path, stamp, cfg),
            Err(_) => std::iter::once((path.to_path_buf(), stamp))
                .chain(inner.seen.iter().skip(1).map(|(p, _)| (p.clone(), Stamp::of(p))))
                .collect(),
        };
        let loaded = parsed.and_then(|cfg| {
            if cfg.tls.is_some() != self.tls {
                let now = if self.tls { "off" } else { "on" };
                return Err(format!("tls_server_config: turning TLS {now} needs a restart"));
            }
            build(&cfg).map(|active| (cfg, active))
        });
        match loaded {
            Ok((cfg, active)) => {
                for w in &cfg.warnings {
                    log::warn!("--web.config.file {}: {w}", path.display());
                }
                log::info!(
                    "--web.config.file {} re-read ({why}): {}",
                    path.display(),
                    describe(&cfg)
                );
                inner.active = Arc::new(active);
                self.stats.web_config_ok.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                log::warn!(
                    "--web.config.file {} re-read ({why}) failed, keeping the last good configuration: {e}",
                    path.display()
                );
                self.stats.web_config_ok.store(false, Ordering::Relaxed);
            }
        }
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
