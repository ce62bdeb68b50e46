//! HTTP: `/metrics` (or `--web.telemetry-path`), a landing page at `/`, `/-/healthy`,
//! `/-/ready`, and 404 elsewhere. Handlers only read the published snapshot.
//!
//! The endpoint cannot be starved ([`serve`]): at most `--web.max-connections`
//! connections are held. At the cap, one is closed to make room, the quietest first
//! ([`Connections::victim`]): a request basic auth refused or has yet to verify, then an
//! idle connection or one that has not finished its TLS handshake or request headers,
//! strangers before clients that passed basic auth; a response whose client has
//! read nothing for [`STALLED`] goes after those; a response being read, or a
//! connection not yet read at all, is never cut (new connections then wait in the
//! kernel's accept queue until one ends). Request
//! headers must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`]; at
//! most `--web.max-requests` scrapes are encoded at once, off the HTTP thread (503
//! beyond, as node_exporter); and a shutdown lets in-flight requests finish for
//! [`SHUTDOWN_GRACE`], then closes whatever is left.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::sampler::Published;
use crate::snapshot::Snapshot;
use crate::webconfig::live::{Active, Web};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub snapshots: Published,
    pub telemetry_path: String,
    /// A snapshot older than this means the sampler is stuck: `/-/healthy` fails.
    pub stale_after: Duration,
    /// A slow lane that has not finished a round for this long has stopped (its series
    /// are frozen): `/-/healthy` fails.
    pub slow_stale_after: Duration,
    pub sources: Vec<&'static str>,
    /// When the server started, and how long the first sample may take before
    /// `/-/healthy` fails (a sampler stuck before its first sample is not healthy).
    pub started: std::time::Instant,
    pub first_sample_deadline: Duration,
    /// Scrapes being encoded at once (`--web.max-requests`).
    pub requests: Arc<tokio::sync::Semaphore>,
    pub stats: Arc<crate::metrics::HttpStats>,
    /// The bodies encoded for the latest snapshot.
    pub bodies: Arc<Bodies>,
}

/// The exposition of one snapshot, plain and gzipped, encoded once: every scrape of
/// the same sample (HA Prometheus pairs, `doctor --from`, repeats) shares it. Keyed by
/// the sample's monotonic time; the gzip body is made when first asked for.
#[derive(Debug, Default)]
pub struct Bodies(std::sync::Mutex<Option<Encoded>>);

#[derive(Debug)]
struct Encoded {
    taken: std::time::Instant,
    plain: bytes::Bytes,
    gzip: Option<bytes::Bytes>,
}

impl Bodies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Encoded>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The body for the sample taken at `taken`, if encoded already.
    fn get(&self, taken: Option<std::time::Instant>, gzip: bool) -> Option<bytes::Bytes> {
        let e = self.lock();
        let e = e.as_ref().filter(|e| Some(e.taken) == taken)?;
        if gzip {
            e.gzip.clone()
        } else {
            Some(e.plain.clone())
        }
    }

    /// The body of `snap`, encoding (and gzipping) what is not there yet. Slow: call
    /// it off the HTTP thread.
    fn encode(&self, snap: &Snapshot, gzip: bool) -> std::io::Result<bytes::Bytes> {
        let taken = snap.taken;
        let plain = match self.get(taken, false) {
            Some(p) => p,
            None => {
                let mut text = String::with_capacity(snap.encoded_len_hint());
                snap.encode(&mut text);
                bytes::Bytes::from(text.into_bytes())
            }
        };
        let body = if gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(plain.len() / 4), Compression::fast());
            enc.write_all(&plain)?;
            bytes::Bytes::from(enc.finish()?)
        } else {
            plain.clone()
        };
        if let Some(taken) = taken {
            let mut e = self.lock();
            match e.as_mut().filter(|e| e.taken == taken) {
                Some(e) if gzip => e.gzip = Some(body.clone()),
                Some(_) => {}
                None => {
                    *e = Some(Encoded {
                        taken,
                        plain,
                        gzip: gzip.then(|| body.clone()),
                    });
                }
            }
        }
        Ok(body)
    }
}

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection may buffer of a request (its headers; requests have no body).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long in-flight requests may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// A response whose client has read nothing for this long counts as stalled: it may
/// be evicted, after every idle connection.
pub const STALLED: Duration = Duration::from_secs(5);

/// What the accept loop knows of a held connection.
#[derive(Debug, Default)]
struct Activity {
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
    /// Requests in flight that basic auth refused or that wait for a verification.
    doubted: std::sync::atomic::AtomicU32,
}

impl Activity {
    fn new(now: u64) -> Self {
        Self {
            last: now.into(),
            ..Self::default()
        }
    }

    fn in_flight(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.busy.load(Relaxed) > 0 || self.writing.load(Relaxed)
    }

    /// Every request in flight on it was refused by basic auth or waits for a
    /// verification.
    fn only_doubted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let busy = self.busy.load(Relaxed);
        busy > 0 && self.doubted.load(Relaxed) >= busy
    }
}

/// One held connection: its activity, and how to close it.
struct Held {
    activity: Arc<Activity>,
    close: Arc<tokio::sync::Notify>,
}

/// The connections being served, by accept order.
#[derive(Default)]
struct Connections {
    next: u64,
    held: std::collections::BTreeMap<u64, Held>,
}

impl Connections {
    /// The connection to close for a new one, among those whose task has begun to
    /// serve them, the one quiet longest in the first of these that has one:
    /// 1. requests that basic auth refused or that wait for a verification (worth
    ///    nothing to keep, or a stranger's guess: a client that sent a password known
    ///    to be right is never among them);
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
                .map(|(id, h)| (h.activity.last.load(Relaxed), *id))
                .min()
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

fn lock(m: &std::sync::Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since `origin`, for activity stamps.
fn stamp(origin: std::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Marks a request in flight on its connection until dropped, with the response body
/// it travels in.
struct InFlight {
    activity: Arc<Activity>,
    origin: std::time::Instant,
    /// Refused by basic auth, or waiting for a verification ([`Activity::doubted`]).
    doubted: bool,
}

impl InFlight {
    fn begin(activity: &Arc<Activity>, origin: std::time::Instant) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        activity.busy.fetch_add(1, Relaxed);
        activity.last.store(stamp(origin), Relaxed);
        Self {
            activity: Arc::clone(activity),
            origin,
            doubted: false,
        }
    }

    fn doubt(&mut self, doubted: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if doubted && !self.doubted {
            self.activity.doubted.fetch_add(1, Relaxed);
        } else if !doubted && self.doubted {
            self.activity.doubted.fetch_sub(1, Relaxed);
        }
        self.doubted = doubted;
    }

    /// It passed basic auth: its client proved who it is.
    fn passed(&mut self) {
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
struct Tracked {
    inner: Body,
    in_flight: InFlight,
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
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    origin: std::time::Instant,
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

/// The next connection on any of `listeners`, asking them in turn from `*next`.
async fn accept_any(listeners: &[tokio::net::TcpListener], next: &mut usize) -> std::io::Result<tokio::net::TcpStream> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let at = (*next + i) % n;
            if let std::task::Poll::Ready(r) = listeners[at].poll_accept(cx) {
                *next = (at + 1) % n;
                return std::task::Poll::Ready(r.map(|(stream, _)| stream));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Serves `app` on `listeners` until `shutdown` completes, with the limits of this
/// module and the TLS, basic auth, headers and rate limit of `web`; returns when every
/// connection has ended or the grace period has passed.
///
/// # Errors
/// Never in practice: a failed `accept` (EMFILE, ECONNABORTED) is logged and retried.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    app: Router,
    max_connections: usize,
    stats: Arc<crate::metrics::HttpStats>,
    web: Arc<Web>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let origin = std::time::Instant::now();
    let conns = Arc::new(std::sync::Mutex::new(Connections::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One bcrypt verification at a time, on its own thread (see webconfig::auth).
    let verifier = Arc::new(crate::webconfig::auth::Verifier::new(Arc::clone(&stats)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    tokio::pin!(shutdown);
    let mut accept_errors = crate::logging::Repeats::default();
    let freed = Arc::new(tokio::sync::Notify::new());
    // The listener asked first for the next connection: each in turn, so that a flood
    // on one address does not starve the others.
    let mut next = 0usize;
    'serve: loop {
        let stream = tokio::select! {
            r = accept_any(&listeners, &mut next) => match r {
                Ok(stream) => stream,
                Err(e) => {
                    let msg = format!("accepting a connection: {e}; retrying");
                    match accept_errors.allow(&msg, std::time::Instant::now()) {
                        Some(0) => log::warn!("{msg}"),
                        Some(n) => log::warn!("{msg} ({n} more like it since the last warning)"),
                        None => log::debug!("{msg}"),
                    }
                    // EMFILE and the like: give the descriptors a moment to come back.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At the cap, make room for it: close the quietest connection that may be
        // closed (see Connections::victim). If none may yet (every one is new, or
        // writing a response being read), wait until one ends or has been served far
        // enough; it waits in hand, and the connections after it in the kernel's accept
        // queue, so a flood of clients never costs a connection its place before its
        // request has been read.
        let mut yielded = false;
        loop {
            // At the cap, first let the connection tasks run once: those whose clients
            // have closed leave the table (a burst of connect-and-close below the cap
            // must cost nobody their place).
            if !yielded && lock(&conns).held.len() >= max_connections {
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            let room = {
                let mut c = lock(&conns);
                if c.held.len() < max_connections {
                    true
                } else if let Some(h) = c.victim(stamp(origin)).and_then(|id| c.held.remove(&id)) {
                    h.close.notify_one();
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    stats.connections.store(c.held.len() as u64, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            };
            if room {
                break;
            }
            tokio::select! {
                () = freed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
                () = &mut shutdown => break 'serve,
            }
        }
        let now = stamp(origin);
        let (id, activity, close) = {
            let mut c = lock(&conns);
            let id = c.next;
            c.next += 1;
            let held = Held {
                activity: Arc::new(Activity::new(now)),
                close: Arc::new(tokio::sync::Notify::new()),
            };
            let pair = (Arc::clone(&held.activity), Arc::clone(&held.close));
            c.held.insert(id, held);
            stats.connections.store(c.held.len() as u64, Ordering::Relaxed);
            (id, pair.0, pair.1)
        };
        let (app, conns, builder, stop) = (app.clone(), Arc::clone(&conns), builder.clone(), stop_rx.clone());
        let (stats, web, verifier, freed) = (
            Arc::clone(&stats),
            Arc::clone(&web),
            Arc::clone(&verifier),
            Arc::clone(&freed),
        );
        let req_stats = Arc::clone(&stats);
        tokio::spawn(async move {
            // The certificate in force when the connection comes: a rotated one is
            // presented from the next handshake on.
            let tls = if web.tls() {
                web.refresh().await.tls.clone().map(tokio_rustls::TlsAcceptor::from)
            } else {
                None
            };
            let req_web = Arc::clone(&web);
            let conn_activity = Arc::clone(&activity);
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut in_flight = InFlight::begin(&activity, origin);
                let current = req_web.current();
                let gated = current.auth.is_some() && !is_probe(req.uri().path());
                // Doubted from the start, unless its password is known to be right: it
                // waits below for the configuration check, and a stranger's guess
                // waiting there must not outrank a new client's connection.
                in_flight.doubt(gated && !known(&current, &req));
                // Counted from now on, even if the client leaves before the gate.
                let attempt = crate::webconfig::auth::Attempt::arm(gated, &req_stats);
                let mut app = app.clone();
                let (web, verifier, stats) = (Arc::clone(&req_web), Arc::clone(&verifier), Arc::clone(&req_stats));
                async move {
                    // Per request, as the toolkit: a changed password or header applies
                    // to a kept-alive connection too.
                    let active = web.refresh().await;
                    let mut resp = match gate(&active, &req, &verifier, &stats, attempt, &mut in_flight).await {
                        Some(refused) => {
                            in_flight.doubt(true);
                            refused
                        }
                        None => {
                            if active.auth.is_some() && !is_probe(req.uri().path()) {
                                in_flight.passed();
                            }
                            tower_service::Service::call(&mut app, req).await?
                        }
                    };
                    for (name, value) in &active.headers {
                        resp.headers_mut().insert(name.clone(), value.clone());
                    }
                    Ok::<_, std::convert::Infallible>(resp.map(|inner| Body::new(Tracked { inner, in_flight })))
                }
            });
            let watched = |io| Watched {
                io,
                activity: Arc::clone(&conn_activity),
                origin,
            };
            conn_activity.served.store(true, Ordering::Relaxed);
            match tls {
                None => drive(watched(stream), &builder, svc, &close, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, handshake(stream, acceptor, watched));
                    let mut stop_early = stop.clone();
                    let outcome = tokio::select! {
                        r = handshake => r.unwrap_or(Handshake::Failed),
                        // Evicted (counted there) or shut down: no handshake failure.
                        () = close.notified() => Handshake::Closed,
                        () = async { drop(stop_early.wait_for(|s| *s).await) } => Handshake::Closed,
                    };
                    match outcome {
                        Handshake::Done(tls) => drive(*tls, &builder, svc, &close, stop).await,
                        Handshake::Failed => {
                            stats.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Handshake::Plaintext => {
                            stats.tls_plaintext.fetch_add(1, Ordering::Relaxed);
                        }
                        Handshake::Closed => {}
                    }
                }
            }
            let mut c = lock(&conns);
            c.held.remove(&id);
            stats.connections.store(c.held.len() as u64, Ordering::Relaxed);
            drop(c);
            freed.notify_one();
        });
    }
    // In-flight requests finish within the grace period; idle connections close now.
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_millis(200);
    while !lock(&conns).held.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it ends, is evicted (`close`), or the
/// server stops (in-flight requests then get [`SHUTDOWN_GRACE`]).
async fn drive<I, S>(
    io: I,
    builder: &hyper::server::conn::http1::Builder,
    svc: S,
    close: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
{
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = close.notified() => {}
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// How a TLS connection's start went.
enum Handshake {
    Done(Box<tokio_rustls::server::TlsStream<Watched<tokio::net::TcpStream>>>),
    /// The handshake failed or did not finish within [`HEADER_TIMEOUT`].
    Failed,
    /// Plain HTTP to the TLS port (answered 400).
    Plaintext,
    /// Closed before a byte was sent, evicted, or the server is stopping.
    Closed,
}

/// The TLS handshake; a client that speaks plain HTTP to the TLS port gets a 400 that
/// says so (as from Go's servers) instead of a bare reset.
async fn handshake(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    watched: impl FnOnce(tokio::net::TcpStream) -> Watched<tokio::net::TcpStream>,
) -> Handshake {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => return Handshake::Closed,
        Ok(_) => {}
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // Drop what the client sent (closing with it unread would reset the
        // connection before the client reads the answer), then answer. A hundred
        // bytes fit any socket buffer: one try, no waiting on the client.
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = stream.try_write(
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
              Client sent an HTTP request to an HTTPS server.\n",
        );
        return Handshake::Plaintext;
    }
    match acceptor.accept(watched(stream)).await {
        Ok(tls) => Handshake::Done(Box::new(tls)),
        Err(e) => {
            log::debug!("TLS handshake failed: {e}");
            Handshake::Failed
        }
    }
}

/// The checks before a request reaches the routes: the rate limit (429) and basic
/// auth (401). `/-/healthy` and `/-/ready` pass without either: they say only
/// whether the sampler runs, and a kubelet probe has no credentials.
async fn gate(
    active: &Arc<Active>,
    req: &hyper::Request<hyper::body::Incoming>,
    verifier: &crate::webconfig::auth::Verifier,
    stats: &crate::metrics::HttpStats,
    mut attempt: crate::webconfig::auth::Attempt,
    in_flight: &mut InFlight,
) -> Option<Response> {
    // Every way out below counts the request's fate itself (or hands it to the
    // verifier, which does): the attempt is disarmed, except if this future is
    // dropped at the await, when it counts itself as abandoned.
    if is_probe(req.uri().path()) {
        attempt.disarm();
        return None;
    }
    let decided = gate_inner(active, req, verifier, stats, &mut attempt, in_flight).await;
    attempt.disarm();
    decided
}

/// The request's credentials are ones basic auth has verified right.
fn known(active: &Active, req: &hyper::Request<hyper::body::Incoming>) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| crate::webconfig::auth::credentials(h.as_bytes()));
    matches!((&active.auth, given), (Some(auth), Some(c)) if auth.cached(&c) == Some(true))
}

/// `/-/healthy` and `/-/ready`: no credentials, no rate limit.
fn is_probe(path: &str) -> bool {
    path == "/-/healthy" || path == "/-/ready"
}

async fn gate_inner(
    active: &Arc<Active>,
    req: &hyper::Request<hyper::body::Incoming>,
    verifier: &crate::webconfig::auth::Verifier,
    stats: &crate::metrics::HttpStats,
    attempt: &mut crate::webconfig::auth::Attempt,
    in_flight: &mut InFlight,
) -> Option<Response> {
    let limited = || {
        Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests (rate_limit in --web.config.file)\n",
            )
                .into_response(),
        )
    };
    // Spends a token of one of the two buckets (`RateLimits`): true when none was left.
    let spent = |bucket: fn(&crate::webconfig::auth::RateLimits) -> &crate::webconfig::auth::RateLimiter| {
        active.limits.as_ref().is_some_and(|l| !bucket(l).allow())
    };
    let Some(auth) = active.auth.as_ref() else {
        return if spent(|l| &l.authenticated) { limited() } else { None };
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| crate::webconfig::auth::credentials(h.as_bytes()));
    // Refusals answered from memory are counted here; the verifier counts its own
    // (also those of clients that left before the answer).
    let refused = |stats: &crate::metrics::HttpStats| {
        stats.unauthorized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unauthorized()
    };
    let cached = given.as_ref().and_then(|c| auth.cached(c));
    // Credentials known to be right spend the bucket of those who passed; anything else
    // (none, wrong, not yet checked) the other one, before any work is done for it.
    if cached == Some(true) {
        return if spent(|l| &l.authenticated) { limited() } else { None };
    }
    if spent(|l| &l.others) {
        return limited();
    }
    let Some(c) = given else {
        return Some(refused(stats));
    };
    if cached == Some(false) {
        return Some(refused(stats));
    }
    match verifier.submit(Arc::clone(auth), c) {
        Ok(answer) => {
            // The verifier counts a refusal, or the job of a client gone by then.
            attempt.disarm();
            in_flight.doubt(true);
            match answer.await {
                Ok(true) if spent(|l| &l.authenticated) => limited(),
                Ok(true) => None,
                _ => Some(unauthorized()),
            }
        }
        Err(busy) => {
            stats.unauthorized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::debug!("basic auth: no verification ({busy:?})");
            Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "too many new credentials being checked; try again\n",
                )
                    .into_response(),
            )
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic")],
        "Unauthorized\n",
    )
        .into_response()
}

impl AppState {
    fn latest(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }
}

/// The routes. `--web.telemetry-path` is matched byte for byte in the fallback, never
/// as a router pattern: a path such as `/m{x}` or `/*` must mean itself.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .fallback(telemetry_or_not_found)
        .with_state(state)
}

async fn telemetry_or_not_found(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if uri.path() != state.telemetry_path {
        return not_found().await.into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")]).into_response();
    }
    metrics(State(state), headers).await
}

/// Whether the client accepts gzip (`Accept-Encoding: gzip` or `*`, without `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            // A weight of 0, or one outside RFC 9110's grammar (`q=NaN`, `q=2`), is no.
            let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| qvalue(q).is_none_or(|q| q == 0)));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// An RFC 9110 `qvalue` in thousandths: `0` to `1`, at most three decimals.
fn qvalue(q: &str) -> Option<u16> {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Ok(permit) = state.requests.clone().try_acquire_owned() else {
        state.stats.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent scrapes (--web.max-requests)\n",
        )
            .into_response();
    };
    let Some(snap) = state.latest() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no sample taken yet\n").into_response();
    };
    let gzip = accepts_gzip(&headers);
    let body = match state.bodies.get(snap.taken, gzip) {
        Some(body) => body,
        None => {
            // Encoding and compressing take milliseconds: off the HTTP thread, so probes
            // and accepts never wait behind them. The permit goes with the work, so a
            // client that hangs up does not free its place while its encode still runs.
            let bodies = Arc::clone(&state.bodies);
            let encoded = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                bodies.encode(&snap, gzip)
            })
            .await;
            match encoded {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("gzip: {e}\n")).into_response(),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding failed: {e}\n")).into_response()
                }
            }
        }
    };
    let mut resp = Response::new(Body::from(body));
    if gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = html_escape(&state.telemetry_path);
    let sources = state.sources.join(", ");
    Html(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>netpressure_exporter</title></head>
<body>
<h1>netpressure_exporter</h1>
<p>Conntrack, socket and file-descriptor pressure of this node, sampled every few hundred
milliseconds, with the peaks a scrape would miss.</p>
<p>Version {version} ({revision}). Collectors: {sources}.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> and <a href="/-/ready">readiness</a></li>
</ul>
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("NETPRESSURE_REVISION"),
    ))
}

async fn healthy(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let Some(snap) = state.latest() else {
        if state.started.elapsed() > state.first_sample_deadline {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unhealthy: no sample taken since start\n",
            );
        }
        return (StatusCode::OK, "Healthy (starting)\n");
    };
    // Monotonic: a wall clock stepped by NTP must neither fail nor pass the check.
    let age = snap.taken.map_or(Duration::MAX, |t| t.elapsed());
    if snap.slow_round.is_some_and(|r| r.elapsed() > state.slow_stale_after) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Unhealthy: the slow lane (namespaces, scans, settings) has stopped finishing rounds\n",
        );
    }
    if age > state.stale_after {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Unhealthy: the sampler has stopped publishing\n",
        )
    } else {
        (StatusCode::OK, "Healthy\n")
    }
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.latest().is_some() {
        (StatusCode::OK, "Ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Not ready: no sample taken yet\n")
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        m
    }

    /// A server state publishing `snapshot` (kept alive by the returned sender), with
    /// one scrape allowed at a time.
    fn state(snapshot: Option<Arc<Snapshot>>) -> (tokio::sync::watch::Sender<Option<Arc<Snapshot>>>, AppState) {
        let (tx, rx) = tokio::sync::watch::channel(snapshot);
        let state = AppState {
            snapshots: rx,
            telemetry_path: "/metrics".into(),
            stale_after: Duration::from_secs(10),
            slow_stale_after: Duration::from_secs(8),
            sources: vec![],
            started: std::time::Instant::now(),
            first_sample_deadline: Duration::from_secs(10),
            requests: Arc::new(tokio::sync::Semaphore::new(1)),
            stats: Arc::default(),
            bodies: Arc::default(),
        };
        (tx, state)
    }

    #[tokio::test]
    async fn healthy_fails_when_the_first_sample_is_overdue() {
        let (_tx, mut state) = state(None);
        assert_eq!(healthy(State(state.clone())).await.0, StatusCode::OK);
        state.started -= Duration::from_secs(11);
        assert_eq!(healthy(State(state.clone())).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready(State(state)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_sample_is_encoded_once_and_gzipped_once_whoever_scrapes_it() {
        let mut snap = Snapshot::new();
        snap.taken = Some(std::time::Instant::now());
        snap.push(&crate::metrics::SAMPLER_OVERRUNS, &[], 3.0);
        snap.finish();
        let (tx, state) = state(Some(Arc::new(snap)));
        let body = |r: Response| async move { axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap() };
        let first = body(metrics(State(state.clone()), HeaderMap::new()).await).await;
        let cached = state.bodies.lock().as_ref().map(|e| e.plain.clone()).unwrap();
        assert_eq!(first, cached);
        // The same bytes again, from the same buffer (no second encode).
        let again = body(metrics(State(state.clone()), HeaderMap::new()).await).await;
        assert_eq!(again.as_ptr(), cached.as_ptr());
        // gzip is made once, on first demand, beside the plain body.
        let gz = body(metrics(State(state.clone()), h("gzip")).await).await;
        let stored = state.bodies.lock().as_ref().and_then(|e| e.gzip.clone()).unwrap();
        assert_eq!(gz, stored);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
        assert_eq!(text.as_bytes(), &first[..]);
        // A new sample is encoded afresh.
        let mut next = Snapshot::new();
        next.taken = Some(std::time::Instant::now());
        next.push(&crate::metrics::SAMPLER_OVERRUNS, &[], 4.0);
        next.finish();
        tx.send_replace(Some(Arc::new(next)));
        let fresh = body(metrics(State(state.clone()), HeaderMap::new()).await).await;
        assert!(String::from_utf8_lossy(&fresh).contains("netpressure_sampler_overruns_total 4"));
        assert!(state.bodies.lock().as_ref().unwrap().gzip.is_none());
    }

    #[tokio::test]
    async fn healthy_fails_when_the_slow_lane_stops_finishing_rounds() {
        let mut snap = Snapshot::new();
        snap.taken = Some(std::time::Instant::now());
        snap.slow_round = Some(std::time::Instant::now());
        let (_tx, fresh) = state(Some(Arc::new(snap)));
        assert_eq!(healthy(State(fresh)).await.0, StatusCode::OK);
        let mut snap = Snapshot::new();
        snap.taken = Some(std::time::Instant::now());
        snap.slow_round = std::time::Instant::now().checked_sub(Duration::from_secs(9));
        let (_tx, stale) = state(Some(Arc::new(snap)));
        let (code, why) = healthy(State(stale)).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("slow lane"), "{why}");
    }

    #[tokio::test]
    async fn scrapes_beyond_max_requests_get_503() {
        let (_tx, state) = state(Some(Arc::new(Snapshot::new())));
        // One scrape in progress holds the only permit.
        let held = Arc::clone(&state.requests).try_acquire_owned().unwrap();
        let r = metrics(State(state.clone()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(state.stats.rejected.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(held);
        let r = metrics(State(state), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, gzip;q=1.0, *;q=0.5")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(accepts_gzip(&h("gzip;q=0.001")));
        assert!(!accepts_gzip(&h("gzip;q=0.000")));
        // Weights outside the grammar are refusals, not gzip (q=NaN was served gzipped).
        for q in [
            "NaN", "nan", "inf", "-1", "1.5", "2", "0.0001", "", ".5", "1.001", "0x1",
        ] {
            assert!(!accepts_gzip(&h(&format!("gzip;q={q}"))), "q={q}");
        }
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
