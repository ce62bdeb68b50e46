//! Reading `--from`: one GET of a running exporter's metrics over HTTP or HTTPS, with
//! hyper's HTTP/1.1 client, as a careful client of a server it does not control.
//!
//! Bounded in time (connecting within [`CONNECT_TIMEOUT`], the answer's head within
//! [`HEADER_TIMEOUT`], the whole read within `--from.timeout`), in bytes
//! ([`MAX_BODY_BYTES`]) and in lines ([`MAX_LINES`]); no redirect is followed. A body
//! shorter than its `Content-Length`, a chunked body without its last chunk, and a TLS
//! stream closed without `close_notify` before the body's end are errors, never a
//! truncated exposition read as whole: a cut exposition would turn findings into "ok".

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body::Body as _;

use super::Args;

/// How long connecting (and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to start its answer (status and headers).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a body read: an exporter's exposition of a crowded node is a few MiB.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// The most lines (samples, help and type lines) read.
pub const MAX_LINES: usize = 1_000_000;

/// How `--from` is read: TLS settings for `https://`, basic-auth credentials, and the
/// deadline of one read.
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    authorization: Option<String>,
    timeout: Duration,
}

fn pem_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    crate::procfs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

impl Client {
    /// Builds the client from the `--from.*` flags.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable PEM.
    pub fn new(args: &Args) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = match &args.from_ca_file {
            None => None,
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let pem = pem_file(ca, "--from.ca-file")?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--from.ca-file {}: {e}", ca.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("--from.ca-file {}: no usable CA certificate", ca.display()));
                }
                let builder =
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())?
                        .with_root_certificates(roots);
                let mut config = match (&args.from_cert_file, &args.from_key_file) {
                    (Some(cert), Some(key)) => {
                        let chain = CertificateDer::pem_slice_iter(&pem_file(cert, "--from.cert-file")?)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("--from.cert-file {}: {e}", cert.display()))?;
                        let key = PrivateKeyDer::from_pem_slice(&pem_file(key, "--from.key-file")?)
                            .map_err(|e| format!("--from.key-file {}: {e}", key.display()))?;
                        builder
                            .with_client_auth_cert(chain, key)
                            .map_err(|e| format!("--from.cert-file and --from.key-file: {e}"))?
                    }
                    _ => builder.with_no_client_auth(),
                };
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
        };
        let authorization = match (&args.from_user, &args.from_password_file) {
            (Some(user), Some(file)) => {
                use base64::Engine as _;
                let password = pem_file(file, "--from.password-file")?;
                let password = String::from_utf8(password)
                    .map_err(|_| format!("--from.password-file {}: not UTF-8 text", file.display()))?;
                let pair = format!("{user}:{}", password.trim_end_matches(['\r', '\n']));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        };
        Ok(Self {
            tls,
            authorization,
            timeout: args.from_timeout,
        })
    }

    /// One GET of `url` (`http://` or `https://`, `HOST:PORT/PATH`; `/metrics` when no
    /// path is given).
    ///
    /// # Errors
    /// An unsupported URL; no connection, answer or whole body within the deadlines; a
    /// TLS or protocol failure; a body cut short, too large or too long; a status
    /// other than 200 (a redirect included: not followed).
    pub fn get(&self, url: &str) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("--from {url}: {e}"))?;
        rt.block_on(async {
            let started = Instant::now();
            // The deadlines are checked step by step inside, each with its own words;
            // this one only guards against a step that forgot to.
            let guard = self.timeout + Duration::from_secs(1);
            match tokio::time::timeout(guard, self.fetch(url, started)).await {
                Ok(r) => r,
                Err(_) => Err(self.too_slow()),
            }
        })
        .map_err(|e| format!("--from {url}: {e}"))
    }

    fn too_slow(&self) -> String {
        format!(
            "the whole answer did not come within {} s (--from.timeout)",
            self.timeout.as_secs_f64()
        )
    }

    async fn fetch(&self, url: &str, started: Instant) -> Result<String, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT/PATH or https://..."))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("expected an http:// or https:// URL".into()),
        };
        let host = uri.host().ok_or("the URL names no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = uri.authority().map_or(host.clone(), ToString::to_string);
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("" | "/") => "/metrics",
            Some(p) => p,
        }
        .to_string();
        let name = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let connect = async {
            let stream = tokio::net::TcpStream::connect((name.as_str(), port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            Ok::<_, String>(stream)
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        let mut request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "text/plain");
        if let Some(a) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        if tls {
            let config = self
                .tls
                .clone()
                .ok_or("https needs --from.ca-file (the CA that signed the exporter's certificate)")?;
            let server = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(server, stream);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                .await
                .map_err(|_| format!("no TLS handshake within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, request, started, self.timeout).await
        } else {
            exchange(stream, request, started, self.timeout).await
        }
    }
}

/// Sends `request` on `io` and reads the answer's body, within the bounds: the head
/// within [`HEADER_TIMEOUT`] (or the total, if shorter), all of it within `total` of
/// `started`.
async fn exchange<I>(
    io: I,
    request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    started: Instant,
    total: Duration,
) -> Result<String, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven beside the request; it ends with the body.
    let driver = tokio::spawn(conn);
    let head_within = HEADER_TIMEOUT.min(total);
    let response = tokio::time::timeout(
        head_within.saturating_sub(started.elapsed()),
        sender.send_request(request),
    )
    .await
    .map_err(|_| format!("no answer within {} s", head_within.as_secs_f64()))?
    .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Err(format!(
            "HTTP status {} redirecting to {to}: not followed",
            status.as_u16()
        ));
    }
    if status != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", status.as_u16()));
    }
    let mut body = response.into_body();
    let mut raw: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    let deadline = tokio::time::Instant::from_std(started + total);
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
        let Ok(frame) = tokio::time::timeout_at(deadline, next).await else {
            return Err(format!(
                "the whole answer did not come within {} s (--from.timeout); {} bytes had",
                total.as_secs_f64(),
                raw.len()
            ));
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| format!("the body was cut short after {} bytes: {}", raw.len(), chain(&e)))?;
        let Ok(data) = frame.into_data() else { continue };
        if raw.len() + data.len() > MAX_BODY_BYTES {
            return Err(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes: not an exporter's exposition"
            ));
        }
        lines += data.iter().filter(|b| **b == b'\n').count();
        if lines > MAX_LINES {
            return Err(format!(
                "the body has more than {MAX_LINES} lines: not an exporter's exposition"
            ));
        }
        raw.extend_from_slice(&data);
    }
    driver.abort();
    String::from_utf8(raw).map_err(|_| "the body is not UTF-8 text".to_string())
}

/// An error with its causes, as hyper nests them ("error reading a body from
/// connection: peer closed connection without sending TLS close_notify").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
