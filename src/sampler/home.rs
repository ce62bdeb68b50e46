//! Entering another network namespace and coming back (`setns`), for one lane's thread.
//!
//! A thread only enters a namespace to open handles there (sockets and files stay
//! bound to the namespace they were opened in) or to read what cannot stay open (its
//! sysctls). A failed entry leaves the thread where it was. A failed return would leave
//! it in the other namespace: the lane is then "displaced" and runs nothing that
//! depends on the thread's namespace, its own namespace's sources included, until a
//! return succeeds, so that no series is ever served under the wrong `netns`.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::netns::NsKey;

/// Why the own namespace's namespaced sources are down while a lane is displaced.
pub const DISPLACED: &str =
    "the sampler thread could not return to the exporter's own network namespace; not sampled until it does";

/// Stands in for `setns` in the unit tests, which inject failures through it (the
/// binary calls `setns` directly).
#[cfg(test)]
pub type Switch = Box<dyn FnMut(&File) -> io::Result<()> + Send>;

/// Entries into other namespaces, shared by the lanes (one series each).
#[derive(Debug, Default)]
pub struct Entries {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Home {
    own_file: File,
    #[cfg(test)]
    pub switch: Switch,
    displaced: bool,
    entries: Arc<Entries>,
    denied_logged: bool,
}

impl Home {
    pub fn new(own_file: File, entries: Arc<Entries>) -> Self {
        Self {
            own_file,
            #[cfg(test)]
            switch: Box::new(|f: &File| crate::sys::setns_net(f)),
            displaced: false,
            entries,
            denied_logged: false,
        }
    }

    /// Whether the thread is in its own namespace; a displaced thread tries to return.
    pub fn at_home(&mut self) -> bool {
        !self.displaced || self.go_home()
    }

    fn go_home(&mut self) -> bool {
        #[cfg(test)]
        let moved = (self.switch)(&self.own_file);
        #[cfg(not(test))]
        let moved = crate::sys::setns_net(&self.own_file);
        match moved {
            Ok(()) => {
                if self.displaced {
                    log::info!("the sampler thread is back in the exporter's own network namespace");
                }
                self.displaced = false;
                true
            }
            Err(e) => {
                if !self.displaced {
                    log::error!(
                        "cannot return to the exporter's own network namespace: {e}; its namespaced sources and other namespaces are not sampled until a return succeeds"
                    );
                }
                self.displaced = true;
                false
            }
        }
    }

    /// Runs `f` inside the namespace `ns` (whose key is `key`, for the log) and returns.
    /// `None` when the thread is displaced or cannot enter; `f`'s work is kept even when
    /// the return fails (it was done in the right namespace), and the lane is then
    /// displaced.
    pub fn visit<R>(&mut self, ns: &File, key: NsKey, f: impl FnOnce() -> R) -> Option<R> {
        self.try_visit(ns, key, f).ok()
    }

    /// As [`Home::visit`], with why the visit did not happen. If `f` panics, the thread
    /// goes home before the panic goes on, so the lane that catches it is not left in
    /// another namespace.
    ///
    /// # Errors
    /// [`Refused::Displaced`], or [`Refused::Enter`] with `setns`'s error.
    pub fn try_visit<R>(&mut self, ns: &File, key: NsKey, f: impl FnOnce() -> R) -> Result<R, Refused> {
        if !self.at_home() {
            return Err(Refused::Displaced);
        }
        #[cfg(test)]
        let moved = (self.switch)(ns);
        #[cfg(not(test))]
        let moved = crate::sys::setns_net(ns);
        if let Err(e) = moved {
            self.entries.failed.fetch_add(1, Ordering::Relaxed);
            if e.raw_os_error() == Some(libc::EPERM) && !self.denied_logged {
                log::warn!(
                    "cannot enter network namespace {} ({e}): CAP_SYS_ADMIN is needed to sample other namespaces",
                    key.1
                );
                self.denied_logged = true;
            } else {
                log::debug!("namespace {}: setns: {e}", key.1);
            }
            return Err(Refused::Enter(e));
        }
        self.entries.done.fetch_add(1, Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        self.go_home();
        match r {
            Ok(r) => Ok(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Why [`Home::try_visit`] did not run its work.
#[derive(Debug)]
pub enum Refused {
    /// The thread is not in its own namespace and could not return.
    Displaced,
    /// `setns` into the namespace failed.
    Enter(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Displaced => f.write_str("this thread could not return to its own network namespace"),
            Self::Enter(e) if e.raw_os_error() == Some(libc::EPERM) => {
                write!(f, "{e}: CAP_SYS_ADMIN is needed to enter another network namespace")
            }
            Self::Enter(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                write!(f, "{e}: not a network namespace")
            }
            Self::Enter(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn a_panic_inside_a_visit_goes_home_before_it_goes_on() {
        // Two files stand for the namespaces; the switch records where it was sent.
        let own = File::open("/dev/null").unwrap();
        let other = File::open("/proc/self/stat").unwrap();
        let (own_ino, other_ino) = (own.metadata().unwrap().ino(), other.metadata().unwrap().ino());
        let went = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut home = Home::new(own, Arc::default());
        let log = Arc::clone(&went);
        home.switch = Box::new(move |f: &File| {
            log.lock().unwrap().push(f.metadata()?.ino());
            Ok(())
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            home.try_visit(&other, (0, 0), || panic!("a bug in the visit"))
        }));
        assert!(r.is_err(), "the panic goes on to the lane that catches it");
        assert_eq!(*went.lock().unwrap(), [other_ino, own_ino]);
        assert!(home.at_home());
    }
}
