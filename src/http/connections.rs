//! The connections the endpoint holds and which one is closed at the cap
//! ([`Connections::victim`]), from what each connection's task notes of its activity:
//! requests in flight ([`InFlight`]), response bodies taken ([`Tracked`]) and writes
//! waiting for the client ([`Watched`]).

use std::sync::Arc;

use axum::body::Body;

use super::STALLED;

/// What the accept loop knows of a held connection.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Milliseconds since the server started at the last sign of life: accepted, a
    /// request begun, a chunk of a response taken by the client, a response done.
    last: std::sync::atomic::AtomicU64,
    /// Requests begun whose response bodies hyper has not yet finished with.
    busy: std::sync::atomic::AtomicU32,
    /// The last write found the socket full: a response is waiting for its client.
    writing: std::sync::atomic::AtomicBool,
    /// A request on it passed basic auth: its client proved who it is, and is the
    /// last idle connection closed for a stranger's.
    trusted: std::sync::atomic::AtomicBool,
    /// Its task has begun to read from it: what the client sent by then is being
    /// served. Until then it is never closed for another.
    served: std::sync::atomic::AtomicBool,
    /// Requests in flight whose client has not shown a password known to be right: from
    /// their start (while the configuration is checked) unless it has, while they wait
    /// for a verification, and once the gate refused them.
    doubted: std::sync::atomic::AtomicU32,
}

impl Activity {
    fn new(now: u64) -> Self {
        Self {
            last: now.into(),
            ..Self::default()
        }
    }

    /// Its task begins to read from it.
    pub(super) fn serving(&self) {
        self.served.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn in_flight(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.busy.load(Relaxed) > 0 || self.writing.load(Relaxed)
    }

    /// Every request in flight on it is doubted ([`Activity::doubted`]).
    fn only_doubted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let busy = self.busy.load(Relaxed);
        busy > 0 && self.doubted.load(Relaxed) >= busy
    }
}

/// Where a connection came from and to: the listener that accepted it and the
/// client's address. At the cap, the crowd holding most connections gives one up
/// first ([`Connections::victim`]).
pub(super) type Crowd = (usize, std::net::IpAddr);

/// One held connection: its activity, its crowd, and how to close it.
struct Held {
    activity: Arc<Activity>,
    crowd: Crowd,
    close: Arc<tokio::sync::Notify>,
}

/// The connections being served, by accept order, and how many each crowd holds.
#[derive(Default)]
pub(super) struct Connections {
    next: u64,
    held: std::collections::BTreeMap<u64, Held>,
    crowds: std::collections::HashMap<Crowd, u32>,
}

impl Connections {
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Holds a connection accepted at `now`: its id, activity, and how to close it.
    pub(super) fn admit(&mut self, now: u64, crowd: Crowd) -> (u64, Arc<Activity>, Arc<tokio::sync::Notify>) {
        let id = self.next;
        self.next += 1;
        let held = Held {
            activity: Arc::new(Activity::new(now)),
            crowd,
            close: Arc::new(tokio::sync::Notify::new()),
        };
        let handles = (Arc::clone(&held.activity), Arc::clone(&held.close));
        self.held.insert(id, held);
        *self.crowds.entry(crowd).or_default() += 1;
        (id, handles.0, handles.1)
    }

    /// Its task is done with it.
    pub(super) fn remove(&mut self, id: u64) {
        self.take(id);
    }

    fn take(&mut self, id: u64) -> Option<Held> {
        let h = self.held.remove(&id)?;
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.crowds.entry(h.crowd) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Some(h)
    }

    /// Closes the [`victim`](Self::victim), if there is one yet.
    pub(super) fn evict(&mut self, now: u64) -> bool {
        match self.victim(now).and_then(|id| self.take(id)) {
            Some(h) => {
                h.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// The connection to close for a new one, among those whose task has begun to
    /// serve them, in the first of these that has one, the one quiet longest of the
    /// [`Crowd`] that holds most connections (a flood from one client, or on one
    /// listen address, closes its own connections before a request that comes from
    /// elsewhere while the flood's are still being accepted):
    /// 1. doubted requests: refused at the gate, waiting for a verification, or not yet
    ///    past the gate with a password not known to be right (worth nothing to keep,
    ///    or a stranger's guess: a client that sent a password known right is never
    ///    among them);
    /// 2. strangers' idle connections (between requests, a handshake or headers not
    ///    sent: a new client's request may be a round trip away, and goes after 1);
    /// 3. idle connections that passed basic auth (Prometheus's kept-alive scrape
    ///    connection outlasts a password spray), unless one not yet served will soon
    ///    be closable;
    /// 4. responses whose client has stopped reading for [`STALLED`], strangers' first.
    ///
    /// Never a response that is being read.
    fn victim(&self, now: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let quietest = |pick: &dyn Fn(&Activity) -> bool| {
            self.held
                .iter()
                .filter(|(_, h)| h.activity.served.load(Relaxed) && pick(&h.activity))
                .map(|(id, h)| {
                    let crowd = self.crowds.get(&h.crowd).copied().unwrap_or(0);
                    (std::cmp::Reverse(crowd), h.activity.last.load(Relaxed), *id)
                })
                .min()
                .map(|(_, last, id)| (last, id))
        };
        let trusted = |a: &Activity| a.trusted.load(Relaxed);
        let stalled_ms = u64::try_from(STALLED.as_millis()).unwrap_or(u64::MAX);
        let stalled = |(last, _): &(u64, u64)| now.saturating_sub(*last) >= stalled_ms;
        let unserved = self.held.values().any(|h| !h.activity.served.load(Relaxed));
        quietest(&|a| !trusted(a) && a.only_doubted())
            .or_else(|| quietest(&|a| !a.in_flight() && !trusted(a)))
            .or_else(|| {
                if unserved {
                    None
                } else {
                    quietest(&|a| !a.in_flight() && trusted(a))
                }
            })
            .or_else(|| quietest(&|a| a.in_flight() && !trusted(a)).filter(stalled))
            .or_else(|| quietest(&|a| a.in_flight() && trusted(a)).filter(stalled))
            .map(|(_, id)| id)
    }
}

/// Milliseconds since `origin`, for activity stamps.
pub(super) fn stamp(origin: std::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Marks a request in flight on its connection until dropped, with the response body
/// it travels in.
pub(super) struct InFlight {
    activity: Arc<Activity>,
    origin: std::time::Instant,
    /// Counted in [`Activity::doubted`].
    doubted: bool,
}

impl InFlight {
    pub(super) fn begin(activity: &Arc<Activity>, origin: std::time::Instant) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        activity.busy.fetch_add(1, Relaxed);
        activity.last.store(stamp(origin), Relaxed);
        Self {
            activity: Arc::clone(activity),
            origin,
            doubted: false,
        }
    }

    pub(super) fn doubt(&mut self, doubted: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if doubted && !self.doubted {
            self.activity.doubted.fetch_add(1, Relaxed);
        } else if !doubted && self.doubted {
            self.activity.doubted.fetch_sub(1, Relaxed);
        }
        self.doubted = doubted;
    }

    /// It passed basic auth: its client proved who it is.
    pub(super) fn passed(&mut self) {
        self.doubt(false);
        self.activity.trusted.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.activity.last.store(stamp(self.origin), Relaxed);
        self.doubt(false);
        self.activity.busy.fetch_sub(1, Relaxed);
    }
}

/// A response body that stamps its connection's activity as hyper takes it, and ends
/// the request's [`InFlight`] when hyper is done with it.
pub(super) struct Tracked {
    pub(super) inner: Body,
    pub(super) in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            let f = &self.in_flight;
            f.activity
                .last
                .store(stamp(f.origin), std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, noting in its [`Activity`] each write that goes through and
/// whether the last one is waiting for the client to read. A response is in flight
/// until hyper has written all of it, not only until its body ends.
pub(super) struct Watched<I> {
    pub(super) io: I,
    pub(super) activity: Arc<Activity>,
    pub(super) origin: std::time::Instant,
}

impl<I> Watched<I> {
    fn note<T>(&self, polled: &std::task::Poll<std::io::Result<T>>) {
        use std::sync::atomic::Ordering::Relaxed;
        match polled {
            std::task::Poll::Pending => self.activity.writing.store(true, Relaxed),
            std::task::Poll::Ready(_) => {
                self.activity.writing.store(false, Relaxed);
                self.activity.last.store(stamp(self.origin), Relaxed);
            }
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
