//! The checks before a request reaches the routes: the rate limit (429) and basic
//! auth (401).

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::connections::InFlight;
use crate::webconfig::auth::Credentials;
use crate::webconfig::live::Active;

/// The checks before a request reaches the routes: the rate limit (429) and basic
/// auth (401). `/-/healthy` and `/-/ready` pass without either: they say only
/// whether the sampler runs, and a kubelet probe has no credentials.
pub(super) async fn gate(
    active: &Arc<Active>,
    req: &hyper::Request<hyper::body::Incoming>,
    verifier: &crate::webconfig::auth::Verifier,
    stats: &crate::metrics::HttpStats,
    given: Option<Credentials>,
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
    let decided = gate_inner(active, given, verifier, stats, &mut attempt, in_flight).await;
    attempt.disarm();
    decided
}

/// The request's `Authorization: Basic` credentials, decoded once for the request.
pub(super) fn credentials(req: &hyper::Request<hyper::body::Incoming>) -> Option<Credentials> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| crate::webconfig::auth::credentials(h.as_bytes()))
}

/// `given` are credentials basic auth has verified right.
pub(super) fn known(active: &Active, given: Option<&Credentials>) -> bool {
    matches!((&active.auth, given), (Some(auth), Some(c)) if auth.cached(c) == Some(true))
}

/// `/-/healthy` and `/-/ready`: no credentials, no rate limit.
pub(super) fn is_probe(path: &str) -> bool {
    path == "/-/healthy" || path == "/-/ready"
}

async fn gate_inner(
    active: &Arc<Active>,
    given: Option<Credentials>,
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
