//! The routes: `/metrics` (or `--web.telemetry-path`), a landing page at `/`,
//! `/-/healthy`, `/-/ready`, and 404 elsewhere. Handlers only read the published
//! snapshot; a scrape's body is encoded once per snapshot ([`Bodies`]), off the HTTP
//! thread.

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
        crate::sync::lock(&self.0)
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
