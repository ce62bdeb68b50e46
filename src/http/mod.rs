//! HTTP: `/metrics` (or `--web.telemetry-path`), a landing page at `/`, `/-/healthy`,
//! `/-/ready`, and 404 elsewhere. Handlers only read the published snapshot.
//!
//! The endpoint cannot be starved ([`serve`]): at most `--web.max-connections`
//! connections are held. At the cap, one is closed to make room, the quietest first
//! (`Connections::victim`): a request basic auth refused or has yet to verify, then an
//! idle connection or one that has not finished its TLS handshake or request headers,
//! strangers before clients that passed basic auth; a response whose client has
//! read nothing for [`STALLED`] goes after those; a response being read, or a
//! connection not yet read at all, is never cut (new connections then wait in the
//! kernel's accept queue until one ends). Within each of these, the client or listen
//! address holding most connections gives one up first, so a flood closes its own
//! connections before a request from elsewhere that is still on its way. Request
//! headers must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`]; at
//! most `--web.max-requests` scrapes are encoded at once, off the HTTP thread (503
//! beyond, as node_exporter); and a shutdown lets in-flight requests finish for
//! [`SHUTDOWN_GRACE`], then closes whatever is left.

mod connections;
mod gate;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;

use crate::sync::lock;
use crate::webconfig::live::Web;
use connections::{stamp, Connections, InFlight, Tracked, Watched};
use gate::{credentials, gate, is_probe, known};
pub use routes::{accepts_gzip, app, AppState, Bodies, CONTENT_TYPE};

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection may buffer of a request (its headers; requests have no body).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long in-flight requests may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// A response whose client has read nothing for this long counts as stalled: it may
/// be evicted, after every idle connection.
pub const STALLED: Duration = Duration::from_secs(5);

/// The next connection on any of `listeners`, asking them in turn from `*next`.
async fn accept_any(
    listeners: &[tokio::net::TcpListener],
    next: &mut usize,
) -> std::io::Result<(tokio::net::TcpStream, connections::Crowd)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let at = (*next + i) % n;
            if let std::task::Poll::Ready(r) = listeners[at].poll_accept(cx) {
                *next = (at + 1) % n;
                return std::task::Poll::Ready(r.map(|(stream, peer)| (stream, (at, peer.ip()))));
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
        let (stream, crowd) = tokio::select! {
            r = accept_any(&listeners, &mut next) => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_errors.log(log::Level::Warn, &format!("accepting a connection: {e}; retrying"));
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
            if !yielded && lock(&conns).len() >= max_connections {
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            let room = {
                let mut c = lock(&conns);
                if c.len() < max_connections {
                    true
                } else if c.evict(stamp(origin)) {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    stats.connections.store(c.len() as u64, Ordering::Relaxed);
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
            let admitted = c.admit(now, crowd);
            stats.connections.store(c.len() as u64, Ordering::Relaxed);
            admitted
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
                let given = credentials(&req);
                in_flight.doubt(gated && !known(&current, given.as_ref()));
                // Counted from now on, even if the client leaves before the gate.
                let attempt = crate::webconfig::auth::Attempt::arm(gated, &req_stats);
                let mut app = app.clone();
                let (web, verifier, stats) = (Arc::clone(&req_web), Arc::clone(&verifier), Arc::clone(&req_stats));
                async move {
                    // Per request, as the toolkit: a changed password or header applies
                    // to a kept-alive connection too.
                    let active = web.refresh().await;
                    let mut resp = match gate(&active, &req, &verifier, &stats, given, attempt, &mut in_flight).await {
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
            conn_activity.serving();
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
            c.remove(id);
            stats.connections.store(c.len() as u64, Ordering::Relaxed);
            drop(c);
            freed.notify_one();
        });
    }
    // In-flight requests finish within the grace period; idle connections close now.
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_millis(200);
    while lock(&conns).len() > 0 && tokio::time::Instant::now() < deadline {
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
