//! HTTP: `/metrics` (or `--web.telemetry-path`), a landing page at `/`, `/-/healthy`,
//! `/-/ready`, and 404 elsewhere. Handlers only read the published snapshot.
//!
//! The endpoint cannot be starved ([`serve`]): at most `--web.max-connections`
//! connections are held, and when a new one comes at the cap the connection that has
//! been quiet longest is closed for it (a client that never sent a whole request, or
//! never reads its response, goes before one that scraped recently); request headers
//! must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`]; at most
//! `--web.max-requests` scrapes are encoded at once (503 beyond, as node_exporter);
//! and a shutdown lets in-flight requests finish for [`SHUTDOWN_GRACE`], then closes
//! whatever is left.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    pub sources: Vec<&'static str>,
    /// When the server started, and how long the first sample may take before
    /// `/-/healthy` fails (a sampler stuck before its first sample is not healthy).
    pub started: std::time::Instant,
    pub first_sample_deadline: Duration,
    /// Scrapes being encoded at once (`--web.max-requests`).
    pub requests: Arc<tokio::sync::Semaphore>,
    pub stats: Arc<crate::metrics::HttpStats>,
}

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection may buffer of a request (its headers; requests have no body).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long in-flight requests may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// One held connection: when it was last active (accepted, or a request started), and
/// how to close it.
struct Held {
    last_active: Arc<std::sync::atomic::AtomicU64>,
    close: Arc<tokio::sync::Notify>,
}

/// The connections being served, by accept order.
#[derive(Default)]
struct Connections {
    next: u64,
    held: std::collections::BTreeMap<u64, Held>,
}

fn lock(m: &std::sync::Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since `origin`, for activity stamps.
fn stamp(origin: std::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Serves `app` on `listener` until `shutdown` completes, with the limits of this
/// module and the TLS, basic auth, headers and rate limit of `web`; returns when every
/// connection has ended or the grace period has passed.
///
/// # Errors
/// Never in practice: a failed `accept` (EMFILE, ECONNABORTED) is logged and retried.
pub async fn serve(
    listener: tokio::net::TcpListener,
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
    // One bcrypt verification at a time (see webconfig::auth).
    let bcrypt = Arc::new(tokio::sync::Semaphore::new(1));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    tokio::pin!(shutdown);
    let mut accept_errors_logged = false;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !accept_errors_logged {
                        log::warn!("accepting a connection: {e}; retrying");
                        accept_errors_logged = true;
                    }
                    // EMFILE and the like: give the descriptors a moment to come back.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let now = stamp(origin);
        let (id, last_active, close) = {
            let mut c = lock(&conns);
            if c.held.len() >= max_connections {
                // Make room: the connection quiet for longest goes.
                let quietest = c
                    .held
                    .iter()
                    .min_by_key(|(_, h)| h.last_active.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                if let Some(h) = quietest.and_then(|id| c.held.remove(&id)) {
                    h.close.notify_one();
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            let id = c.next;
            c.next += 1;
            let held = Held {
                last_active: Arc::new(std::sync::atomic::AtomicU64::new(now)),
                close: Arc::new(tokio::sync::Notify::new()),
            };
            let pair = (Arc::clone(&held.last_active), Arc::clone(&held.close));
            c.held.insert(id, held);
            stats.connections.store(c.held.len() as u64, Ordering::Relaxed);
            (id, pair.0, pair.1)
        };
        // The certificate in force when the connection comes: a rotated one is
        // presented from the next handshake on.
        let tls = web.refresh().tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let (app, conns, builder, stop) = (app.clone(), Arc::clone(&conns), builder.clone(), stop_rx.clone());
        let (stats, web, bcrypt) = (Arc::clone(&stats), Arc::clone(&web), Arc::clone(&bcrypt));
        let req_stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                last_active.store(stamp(origin), Ordering::Relaxed);
                let mut app = app.clone();
                // Per request, as the toolkit: a changed password or header applies
                // to a kept-alive connection too.
                let active = web.refresh();
                let (bcrypt, stats) = (Arc::clone(&bcrypt), Arc::clone(&req_stats));
                async move {
                    let mut resp = match gate(&active, &req, &bcrypt, &stats).await {
                        Some(refused) => refused,
                        None => tower_service::Service::call(&mut app, req).await?,
                    };
                    for (name, value) in &active.headers {
                        resp.headers_mut().insert(name.clone(), value.clone());
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            match tls {
                None => drive(stream, &builder, svc, &close, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, handshake(stream, acceptor));
                    let mut stop_early = stop.clone();
                    let tls = tokio::select! {
                        r = handshake => r.ok().flatten(),
                        () = close.notified() => None,
                        () = async { drop(stop_early.wait_for(|s| *s).await) } => None,
                    };
                    match tls {
                        Some(tls) => drive(tls, &builder, svc, &close, stop).await,
                        None => {
                            stats.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            let mut c = lock(&conns);
            c.held.remove(&id);
            stats.connections.store(c.held.len() as u64, Ordering::Relaxed);
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

/// The TLS handshake; a client that speaks plain HTTP to the TLS port gets a 400 that
/// says so (as from Go's servers) instead of a bare reset.
async fn handshake(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.ok()? == 0 {
        return None;
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
        return None;
    }
    match acceptor.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            log::debug!("TLS handshake failed: {e}");
            None
        }
    }
}

/// The checks before a request reaches the routes: the rate limit (429) and basic
/// auth (401). `/-/healthy` and `/-/ready` pass without either: they say only
/// whether the sampler runs, and a kubelet probe has no credentials.
async fn gate(
    active: &Arc<Active>,
    req: &hyper::Request<hyper::body::Incoming>,
    bcrypt: &tokio::sync::Semaphore,
    stats: &crate::metrics::HttpStats,
) -> Option<Response> {
    let path = req.uri().path();
    if path == "/-/healthy" || path == "/-/ready" {
        return None;
    }
    if let Some(limiter) = &active.limiter {
        if !limiter.allow() {
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests (rate_limit in --web.config.file)\n",
                )
                    .into_response(),
            );
        }
    }
    let auth = active.auth.as_ref()?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| crate::webconfig::auth::credentials(h.as_bytes()));
    let ok = match given {
        None => false,
        Some(c) => match auth.cached(&c) {
            Some(ok) => ok,
            None => match bcrypt.acquire().await {
                // Fails closed: without the permit (never, in practice) nobody passes.
                Err(_) => false,
                Ok(_one_at_a_time) => {
                    // Another request may have checked the same credentials meanwhile.
                    match auth.cached(&c) {
                        Some(ok) => ok,
                        None => {
                            let active = Arc::clone(active);
                            tokio::task::spawn_blocking(move || active.auth.as_ref().is_some_and(|a| a.verify(&c)))
                                .await
                                .unwrap_or(false)
                        }
                    }
                }
            },
        },
    };
    if ok {
        return None;
    }
    stats.unauthorized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response(),
    )
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
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Ok(_permit) = state.requests.clone().try_acquire_owned() else {
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
    let mut text = String::with_capacity(snap.encoded_len_hint());
    snap.encode(&mut text);
    drop(snap);
    let mut resp = if accepts_gzip(&headers) {
        let mut enc = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::fast());
        let body = match enc.write_all(text.as_bytes()).and_then(|()| enc.finish()) {
            Ok(b) => b,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("gzip: {e}\n")).into_response(),
        };
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(text))
    };
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if now - snap.taken_at > state.stale_after.as_secs_f64() {
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
            sources: vec![],
            started: std::time::Instant::now(),
            first_sample_deadline: Duration::from_secs(10),
            requests: Arc::new(tokio::sync::Semaphore::new(1)),
            stats: Arc::default(),
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
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
