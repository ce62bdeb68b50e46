//! Basic auth against bcrypt hashes, and the request rate limit.
//!
//! bcrypt costs tens of milliseconds by design (cost 10: 58 ms here), more than a
//! whole scrape, so answers are remembered and a later request with the same
//! credentials costs a map lookup. Accepted credentials are kept apart from refused
//! ones and never make room for them: a client spraying wrong passwords can fill the
//! bounded memory of refusals ([`REFUSED_MAX`], oldest forgotten first) but never
//! push Prometheus's password out of it. The memory survives a reload that leaves the
//! users as they were.
//!
//! Verifications run on one thread of their own ([`Verifier`]), one at a time and at
//! most a third of that thread's time (after a verification it rests twice as long as
//! the verification took), so however many clients come and go, bcrypt costs the node
//! at most a third of a core. The limit holds for the work, not for the request: a client that
//! hangs up leaves its job behind in a bounded queue, where it is skipped (counted,
//! never verified) instead of running outside the limit.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::RateLimit;
use crate::metrics::HttpStats;

/// The most refused (user, password) pairs remembered; the oldest is forgotten first.
pub const REFUSED_MAX: usize = 1024;
/// The most accepted pairs remembered. Only a user's real password verifies, so this
/// is never reached with fewer users; past it the memory of successes starts afresh.
pub const ACCEPTED_MAX: usize = 256;
/// Verifications waiting for the verifier; a request that finds the queue full is
/// answered 503 at once (see `http::gate`).
pub const QUEUE: usize = 8;

/// Credentials from an `Authorization: Basic` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Decodes `Authorization: Basic base64(user:password)`; `None` for anything else.
pub fn credentials(header: &[u8]) -> Option<Credentials> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// What is remembered of past verifications. Refusals are kept as a keyed hash of
/// the pair (random keys per process), so an attacker's long passwords cost 8 bytes
/// each; a collision could only make a right password look refused, with odds of
/// 2^-64 per pair. Successes keep the pair itself: a hash collision must never let a
/// wrong password in.
#[derive(Debug, Default)]
struct Memory {
    accepted: HashSet<Credentials>,
    refused: HashSet<u64>,
    refused_order: VecDeque<u64>,
}

#[derive(Debug)]
struct Cache {
    memory: Mutex<Memory>,
    keys: std::collections::hash_map::RandomState,
}

impl Cache {
    fn new() -> Self {
        Self {
            memory: Mutex::default(),
            keys: std::collections::hash_map::RandomState::new(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        crate::sync::lock(&self.memory)
    }

    fn key(&self, c: &Credentials) -> u64 {
        self.keys.hash_one(c)
    }

    fn get(&self, c: &Credentials) -> Option<bool> {
        let key = self.key(c);
        let m = self.memory();
        if m.accepted.contains(c) {
            Some(true)
        } else if m.refused.contains(&key) {
            Some(false)
        } else {
            None
        }
    }

    fn remember(&self, c: &Credentials, ok: bool) {
        let key = self.key(c);
        let mut m = self.memory();
        if ok {
            if m.accepted.len() >= ACCEPTED_MAX {
                m.accepted.clear();
            }
            m.accepted.insert(c.clone());
        } else if m.refused.insert(key) {
            m.refused_order.push_back(key);
            while m.refused_order.len() > REFUSED_MAX {
                if let Some(old) = m.refused_order.pop_front() {
                    m.refused.remove(&old);
                }
            }
        }
    }
}

/// The users of one loaded configuration and what is remembered of their checks.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(String, String)>,
    cache: Arc<Cache>,
}

impl BasicAuth {
    /// `None` when there are no users: no authentication. With the same users as
    /// `previous` (a reload that changed something else), what was remembered is kept.
    pub fn new(users: &[(String, String)], previous: Option<&Self>) -> Option<Self> {
        if users.is_empty() {
            return None;
        }
        let cache = match previous {
            Some(p) if p.users == users => Arc::clone(&p.cache),
            _ => Arc::new(Cache::new()),
        };
        Some(Self {
            users: users.to_vec(),
            cache,
        })
    }

    /// The remembered answer for these credentials, if any.
    pub fn cached(&self, c: &Credentials) -> Option<bool> {
        self.cache.get(c)
    }

    /// Checks the credentials with bcrypt (slow: only the [`Verifier`] calls it) and
    /// remembers the answer. An unknown user is checked against a configured user's
    /// hash all the same, so the time taken does not tell which user names exist.
    pub fn verify(&self, c: &Credentials) -> bool {
        let known = self.users.iter().find(|(u, _)| *u == c.user);
        let hash = known.or(self.users.first()).map_or("", |(_, h)| h.as_str());
        // non_truncating: a password longer than bcrypt's 72 bytes is refused, not
        // cut to a prefix that would also match.
        let matches = bcrypt::non_truncating_verify(&c.password, hash).unwrap_or(false);
        let ok = known.is_some() && matches;
        self.cache.remember(c, ok);
        ok
    }
}

/// A verification waiting for the verifier thread.
struct Job {
    auth: Arc<BasicAuth>,
    credentials: Credentials,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// Why a verification gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// [`QUEUE`] verifications are waiting already.
    QueueFull,
    /// The verifier thread could not be started, or has gone.
    NoVerifier,
}

/// The one thread that runs bcrypt, started at the first verification.
#[derive(Debug)]
pub struct Verifier {
    stats: Arc<HttpStats>,
    queue: OnceLock<Option<std::sync::mpsc::SyncSender<Job>>>,
}

impl Verifier {
    pub fn new(stats: Arc<HttpStats>) -> Self {
        Self {
            stats,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> Option<&std::sync::mpsc::SyncSender<Job>> {
        self.queue
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
                let stats = Arc::clone(&self.stats);
                match std::thread::Builder::new()
                    .name("bcrypt".into())
                    .spawn(move || verify_loop(&rx, &stats))
                {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        log::error!("cannot start the basic-auth verifier thread: {e}; every new password is refused");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Queues `credentials` for the verifier thread; the answer comes on the
    /// receiver. From here on the verifier counts the attempt if it is refused
    /// (`netpressure_http_requests_unauthorized_total`), whether or not the client is
    /// still waiting, and also when it skips the job because its client left.
    ///
    /// # Errors
    /// [`Busy`] when the job could not be queued; the caller answers and counts it.
    pub fn submit(
        &self,
        auth: Arc<BasicAuth>,
        credentials: Credentials,
    ) -> Result<tokio::sync::oneshot::Receiver<bool>, Busy> {
        let (answer, wait) = tokio::sync::oneshot::channel();
        let job = Job {
            auth,
            credentials,
            answer,
        };
        let queue = self.queue().ok_or(Busy::NoVerifier)?;
        queue.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => Busy::QueueFull,
            std::sync::mpsc::TrySendError::Disconnected(_) => Busy::NoVerifier,
        })?;
        Ok(wait)
    }

    /// [`Verifier::submit`], then the answer (the gate awaits the answer itself, to
    /// hand the attempt's counting over between the two).
    ///
    /// # Errors
    /// As [`Verifier::submit`].
    #[cfg(test)]
    pub async fn verify(&self, auth: Arc<BasicAuth>, credentials: Credentials) -> Result<bool, Busy> {
        let wait = self.submit(auth, credentials)?;
        // A dropped sender means the verifier skipped or lost the job: not verified.
        Ok(wait.await.unwrap_or(false))
    }
}

/// A request that must pass basic auth, from the moment it arrives until its fate is
/// counted by the gate or handed to the verifier: if it is dropped before (its client
/// hung up while the request waited), it is counted as a refused, abandoned attempt.
#[derive(Debug)]
pub struct Attempt {
    stats: Option<Arc<HttpStats>>,
}

impl Attempt {
    /// Armed when `auth` is on (a request for a probe is disarmed by the caller).
    pub fn arm(auth: bool, stats: &Arc<HttpStats>) -> Self {
        Self {
            stats: auth.then(|| Arc::clone(stats)),
        }
    }

    /// Its fate is counted elsewhere.
    pub fn disarm(&mut self) {
        self.stats = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(stats) = self.stats.take() {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            stats.auth_abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn verify_loop(queue: &std::sync::mpsc::Receiver<Job>, stats: &HttpStats) {
    let mut rest_until = Instant::now();
    while let Ok(job) = queue.recv() {
        // A third of a core at most: rest twice as long as the last verification took.
        let now = Instant::now();
        if rest_until > now {
            std::thread::sleep(rest_until - now);
        }
        if job.answer.is_closed() {
            // The client hung up while waiting: its attempt is refused unverified.
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            stats.auth_abandoned.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Another job may have verified the same pair meanwhile.
        let ok = match job.auth.cached(&job.credentials) {
            Some(ok) => ok,
            None => {
                let started = Instant::now();
                let ok = job.auth.verify(&job.credentials);
                let took = started.elapsed();
                rest_until = Instant::now() + 2 * took.min(Duration::from_secs(1));
                stats.auth_verifications.fetch_add(1, Ordering::Relaxed);
                ok
            }
        };
        if !ok {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        let _ = job.answer.send(ok);
    }
}

/// `rate_limit`, as two token buckets of the configured size: one for requests whose
/// credentials passed basic auth (every request, without basic auth), one for the rest
/// (no credentials, wrong ones, ones still to be checked). The toolkit keeps one bucket
/// in front of basic auth, so that clients without the password can spend every token
/// and Prometheus, with it, gets 429; here they only spend their own.
#[derive(Debug)]
pub struct RateLimits {
    pub authenticated: RateLimiter,
    pub others: RateLimiter,
}

impl RateLimits {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            authenticated: RateLimiter::new(limit),
            others: RateLimiter::new(limit),
        }
    }
}

/// A token bucket, one token per interval, `burst` at most.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes a token if one is there.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut s = crate::sync::lock(&self.state);
        let elapsed = now.saturating_duration_since(s.1);
        let refill = elapsed.as_secs_f64() / self.limit.interval.max(Duration::from_nanos(1)).as_secs_f64();
        s.0 = (s.0 + refill).min(f64::from(self.limit.burst));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `htpasswd -nbBC 4 "" secret` and `... other` (cost 4: fast for a test).
    const SECRET: &str = "$2y$04$pCAb1BHZ9npAfcmNmQyNrObj/RG.4vxr4ZBjSUjhfYbRY3OUoEEcO";
    const OTHER: &str = "$2y$04$tThF4KL.D/MN/F5R/4nlf.Oy6SWTsbcCO.81eFNQ7Nyr/sGbS9C9S";

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    fn alice_and_bob() -> BasicAuth {
        BasicAuth::new(&[("alice".into(), SECRET.into()), ("bob".into(), OTHER.into())], None).unwrap()
    }

    #[test]
    fn htpasswd_hashes_verify_and_answers_are_remembered() {
        let auth = alice_and_bob();
        assert_eq!(auth.cached(&creds("alice", "secret")), None);
        assert!(auth.verify(&creds("alice", "secret")));
        assert_eq!(auth.cached(&creds("alice", "secret")), Some(true));
        assert!(auth.verify(&creds("bob", "other")));
        assert!(!auth.verify(&creds("alice", "other")), "another user's password");
        assert_eq!(auth.cached(&creds("alice", "other")), Some(false));
        // An unknown user is refused even with a password that matches the hash it
        // is checked against (alice's, for timing).
        assert!(!auth.verify(&creds("mallory", "secret")));
        assert!(
            !auth.verify(&creds("alice", &"x".repeat(80))),
            "longer than bcrypt's 72 bytes"
        );
        assert!(BasicAuth::new(&[], None).is_none());
    }

    #[test]
    fn refusals_never_push_out_a_success_and_stay_bounded() {
        let auth = alice_and_bob();
        assert!(auth.verify(&creds("alice", "secret")));
        // Twice the bound of distinct wrong passwords (remembered without bcrypt:
        // the bound is the point here, not the hash).
        for i in 0..2 * REFUSED_MAX {
            auth.cache.remember(&creds("alice", &format!("wrong{i}")), false);
        }
        assert_eq!(auth.cached(&creds("alice", "secret")), Some(true));
        let m = auth.cache.memory();
        assert_eq!((m.refused.len(), m.refused_order.len()), (REFUSED_MAX, REFUSED_MAX));
        drop(m);
        // The oldest refusals were forgotten first, the newest are remembered.
        assert_eq!(auth.cached(&creds("alice", "wrong0")), None);
        assert_eq!(
            auth.cached(&creds("alice", &format!("wrong{}", 2 * REFUSED_MAX - 1))),
            Some(false)
        );
    }

    #[test]
    fn a_reload_with_the_same_users_keeps_what_was_remembered() {
        let auth = alice_and_bob();
        assert!(auth.verify(&creds("alice", "secret")));
        let same = BasicAuth::new(&auth.users, Some(&auth)).unwrap();
        assert_eq!(same.cached(&creds("alice", "secret")), Some(true));
        let changed = BasicAuth::new(&[("alice".into(), OTHER.into())], Some(&auth)).unwrap();
        assert_eq!(changed.cached(&creds("alice", "secret")), None, "alice's hash changed");
    }

    #[tokio::test]
    async fn the_verifier_answers_and_counts_what_it_refuses() {
        let stats = Arc::new(HttpStats::default());
        let verifier = Verifier::new(Arc::clone(&stats));
        let auth = Arc::new(alice_and_bob());
        assert_eq!(
            verifier.verify(Arc::clone(&auth), creds("alice", "secret")).await,
            Ok(true)
        );
        assert_eq!(
            verifier.verify(Arc::clone(&auth), creds("alice", "nope")).await,
            Ok(false)
        );
        // Remembered on the verifier's side too: no second bcrypt run.
        assert_eq!(
            verifier.verify(Arc::clone(&auth), creds("alice", "nope")).await,
            Ok(false)
        );
        assert_eq!(stats.auth_verifications.load(Ordering::Relaxed), 2);
        assert_eq!(stats.unauthorized.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_jobs_of_clients_that_left_are_skipped_and_counted() {
        let stats = HttpStats::default();
        let auth = Arc::new(alice_and_bob());
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let mut waiting = Vec::new();
        for i in 0..QUEUE {
            let (answer, wait) = tokio::sync::oneshot::channel();
            let job = Job {
                auth: Arc::clone(&auth),
                credentials: creds("alice", &format!("gone{i}")),
                answer,
            };
            tx.try_send(job).unwrap();
            // Every other client is still there.
            if i % 2 == 0 {
                waiting.push(wait);
            }
        }
        assert!(
            tx.try_send(Job {
                auth: Arc::clone(&auth),
                credentials: creds("alice", "late"),
                answer: tokio::sync::oneshot::channel().0,
            })
            .is_err(),
            "the queue is bounded"
        );
        drop(tx);
        verify_loop(&rx, &stats);
        let half = (QUEUE / 2) as u64;
        assert_eq!(stats.auth_verifications.load(Ordering::Relaxed), half);
        assert_eq!(stats.auth_abandoned.load(Ordering::Relaxed), half);
        assert_eq!(stats.unauthorized.load(Ordering::Relaxed), 2 * half);
        for mut w in waiting {
            assert_eq!(w.try_recv(), Ok(false));
        }
    }

    #[test]
    fn basic_credentials_decode() {
        // base64("alice:pa:ss") = YWxpY2U6cGE6c3M=
        let c = credentials(b"Basic YWxpY2U6cGE6c3M=").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "pa:ss"));
        assert!(credentials(b"basic YWxpY2U6cGE6c3M=").is_some());
        assert!(credentials(b"Bearer abc").is_none());
        assert!(credentials(b"Basic !!!").is_none());
        assert!(credentials(b"Basic YWxpY2U=").is_none(), "no colon");
    }

    #[test]
    fn the_rate_limit_refills_one_token_per_interval() {
        let r = RateLimiter::new(RateLimit {
            interval: Duration::from_millis(100),
            burst: 2,
        });
        let t0 = Instant::now();
        assert!(r.allow_at(t0) && r.allow_at(t0));
        assert!(!r.allow_at(t0), "burst spent");
        assert!(!r.allow_at(t0 + Duration::from_millis(50)));
        assert!(r.allow_at(t0 + Duration::from_millis(110)));
        assert!(!r.allow_at(t0 + Duration::from_millis(120)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        assert!(r.allow_at(later) && r.allow_at(later) && !r.allow_at(later));
    }
}
