//! Basic auth against bcrypt hashes, and the request rate limit.
//!
//! bcrypt costs tens of milliseconds by design (cost 10: 58 ms here), more than a
//! whole scrape, so a verified (user, password) pair is remembered and later requests
//! cost a map lookup. Refusals are remembered too, so a client retrying a wrong
//! password costs nothing either. The memory is per loaded configuration (a reload
//! starts afresh) and bounded: at [`CACHE_MAX`] entries it is emptied. Verifications
//! run one at a time off the HTTP thread (see `server`), so a client spraying new
//! passwords uses at most one core and never delays a scrape whose credentials are
//! known.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::RateLimit;

/// The most (user, password) results remembered.
pub const CACHE_MAX: usize = 1024;

#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(String, String)>,
    cache: Mutex<HashMap<(String, String), bool>>,
}

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

impl BasicAuth {
    /// `None` when there are no users: no authentication.
    pub fn new(users: &[(String, String)]) -> Option<Self> {
        (!users.is_empty()).then(|| Self {
            users: users.to_vec(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), bool>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The remembered answer for these credentials, if any.
    pub fn cached(&self, c: &Credentials) -> Option<bool> {
        self.cache().get(&(c.user.clone(), c.password.clone())).copied()
    }

    /// Checks the credentials with bcrypt (slow: call off the async thread) and
    /// remembers the answer. An unknown user is checked against a configured user's
    /// hash all the same, so the time taken does not tell which user names exist.
    pub fn verify(&self, c: &Credentials) -> bool {
        let known = self.users.iter().find(|(u, _)| *u == c.user);
        let hash = known.or(self.users.first()).map_or("", |(_, h)| h.as_str());
        // non_truncating: a password longer than bcrypt's 72 bytes is refused, not
        // cut to a prefix that would also match.
        let matches = bcrypt::non_truncating_verify(&c.password, hash).unwrap_or(false);
        let ok = known.is_some() && matches;
        let mut cache = self.cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert((c.user.clone(), c.password.clone()), ok);
        ok
    }
}

/// `rate_limit`: a token bucket, one token per interval, `burst` at most.
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
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

    #[test]
    fn htpasswd_hashes_verify_and_answers_are_remembered() {
        let auth = BasicAuth::new(&[("alice".into(), SECRET.into()), ("bob".into(), OTHER.into())]).unwrap();
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
        assert!(BasicAuth::new(&[]).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let auth = BasicAuth::new(&[("alice".into(), SECRET.into())]).unwrap();
        for i in 0..CACHE_MAX + 10 {
            auth.cache().insert(("alice".into(), i.to_string()), false);
            if auth.cache().len() >= CACHE_MAX {
                break;
            }
        }
        assert!(auth.verify(&creds("alice", "secret")));
        assert!(auth.cache().len() <= CACHE_MAX);
        assert_eq!(auth.cached(&creds("alice", "secret")), Some(true));
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
