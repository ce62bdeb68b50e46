//! HTTP: `/metrics` (or `--web.telemetry-path`), a landing page at `/`, `/-/healthy`,
//! `/-/ready`, and 404 elsewhere. Handlers only read the published snapshot.

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

    #[tokio::test]
    async fn healthy_fails_when_the_first_sample_is_overdue() {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let mut state = AppState {
            snapshots: rx,
            telemetry_path: "/metrics".into(),
            stale_after: Duration::from_secs(10),
            sources: vec![],
            started: std::time::Instant::now(),
            first_sample_deadline: Duration::from_secs(10),
        };
        assert_eq!(healthy(State(state.clone())).await.0, StatusCode::OK);
        state.started -= Duration::from_secs(11);
        assert_eq!(healthy(State(state.clone())).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready(State(state)).await.0, StatusCode::SERVICE_UNAVAILABLE);
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
