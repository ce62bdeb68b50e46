//! `--web.config.file`: the web configuration format of the Prometheus
//! exporter-toolkit, the file node_exporter and the other official exporters read, so
//! a file written for them works here unchanged: TLS (`tls_server_config`), response
//! headers (`http_server_config.headers`), basic auth with bcrypt hashes
//! (`basic_auth_users`) and a request rate limit (`rate_limit`).
//!
//! Parsing is as strict as the toolkit's (an unknown key is an error), and every error
//! names the key and what is accepted. Relative paths are relative to the file's
//! directory, as in the toolkit. Where rustls cannot do what Go's TLS does (TLS 1.0
//! and 1.1, CBC suites, P-521), the error says so rather than serving something else.
//!
//! [`live::Web`] holds the parsed file while the server runs and re-reads it when it
//! or a file it names changes; [`tls`] turns [`TlsSettings`] into a rustls config;
//! [`auth`] checks basic-auth credentials.
//!
//! Errors here are `String`s on purpose: each is the one line an operator reads (the
//! key's path, the value, what is accepted), printed at start or logged at a refused
//! reload, and no caller branches on its kind.

pub mod auth;
pub mod live;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use yaml_rust2::Yaml;

/// A parsed web configuration file.
#[derive(Debug, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2`: HTTP/2 is not served (ALPN offers HTTP/1.1 only);
    /// kept to say so in the log when a file asks for it explicitly.
    pub http2_requested: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name and bcrypt hash, in file order.
    pub users: Vec<(String, String)>,
    pub rate_limit: Option<RateLimit>,
    /// Accepted settings that are served differently than asked (TLS 1.0 as the
    /// minimum version): logged at each load.
    pub warnings: Vec<String>,
}

/// `rate_limit`: a token bucket refilled one token per `interval`, holding `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// PEM material, from a file or inline in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Material {
    File(PathBuf),
    Inline(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str =
        "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            // RequireClientCert: the toolkit's older name, still accepted there.
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    /// Whether a presented certificate is checked against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert)
    }

    /// Whether a client without a certificate is refused.
    pub fn mandatory(self) -> bool {
        matches!(self, Self::RequireAnyClientCert | Self::RequireAndVerifyClientCert)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug)]
pub struct TlsSettings {
    pub cert: Material,
    pub key: Material,
    pub client_ca: Option<Material>,
    pub client_auth: ClientAuth,
    /// `client_allowed_sans`: a client certificate must carry one of these as a DNS,
    /// IP, e-mail or URI subject alternative name.
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites in the file's order; empty for rustls's defaults. TLS 1.3 suites
    /// are not configurable (as in Go).
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
    pub prefer_server_cipher_suites: bool,
    /// Key-exchange groups in preference order; empty for rustls's defaults.
    pub curve_preferences: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
}

impl TlsSettings {
    /// The files this configuration reads, watched for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                Material::File(p) => Some(p.clone()),
                Material::Inline(_) => None,
            })
            .collect()
    }
}

impl WebConfig {
    /// The files this configuration reads besides itself.
    pub fn files(&self) -> Vec<PathBuf> {
        self.tls.as_ref().map(TlsSettings::files).unwrap_or_default()
    }
}

/// Reads a file the web configuration names, or the configuration itself: opened
/// without blocking and refused unless it is a regular file (a FIFO, `/dev/zero` or a
/// device is an error, not a read that hangs or fills memory), and read to at most
/// [`crate::procfs::MAX_FILE_BYTES`].
///
/// # Errors
/// The open or read fails, the file is not regular, or it is larger than the bound.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::procfs::read(path)
}

/// Reads and parses `path`.
///
/// # Errors
/// The file cannot be read, is not YAML, or a key is unknown or has a value outside
/// what is accepted; the message names the key.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let text = read_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "cannot read it: not UTF-8 text".to_string())?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, dir)
}

/// Parses the text of a web configuration file; relative paths are joined to `dir`.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    let docs = crate::yaml::load(text)?;
    let mut cfg = WebConfig::default();
    let root = match docs.as_slice() {
        [] => return Ok(cfg),
        [one] => one,
        _ => return Err("holds more than one YAML document; expected one".into()),
    };
    let top = mapping(
        root,
        "the file",
        &[
            "tls_server_config",
            "http_server_config",
            "basic_auth_users",
            "rate_limit",
        ],
    )?;
    for (key, value) in top {
        match key {
            "tls_server_config" => cfg.tls = tls_settings(value, dir, &mut cfg.warnings)?,
            "http_server_config" => http_settings(value, &mut cfg)?,
            "basic_auth_users" => cfg.users = users(value)?,
            "rate_limit" => cfg.rate_limit = rate_limit(value)?,
            _ => unreachable!("mapping() admits only the accepted keys"),
        }
    }
    Ok(cfg)
}

/// The entries of a mapping (or none for null), each key one of `accepted`.
fn mapping<'y>(value: &'y Yaml, at: &str, accepted: &[&'static str]) -> Result<Vec<(&'static str, &'y Yaml)>, String> {
    let hash = match value {
        Yaml::Null => return Ok(Vec::new()),
        Yaml::Hash(h) => h,
        _ => return Err(format!("{at}: expected a mapping of {}", accepted.join(", "))),
    };
    hash.iter()
        .map(|(k, v)| {
            let Yaml::String(k) = k else {
                return Err(format!("{at}: keys must be strings; accepted: {}", accepted.join(", ")));
            };
            match accepted.iter().find(|a| **a == k) {
                Some(a) => Ok((*a, v)),
                None => Err(format!("{at}: unknown key {k:?}; accepted: {}", accepted.join(", "))),
            }
        })
        .collect()
}

/// A string value; null means not set.
fn string(value: &Yaml, at: &str) -> Result<Option<String>, String> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::String(s) => Ok(Some(s.clone())),
        _ => Err(format!("{at}: expected a string")),
    }
}

fn boolean(value: &Yaml, at: &str) -> Result<Option<bool>, String> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::Boolean(b) => Ok(Some(*b)),
        _ => Err(format!("{at}: expected true or false")),
    }
}

fn strings(value: &Yaml, at: &str) -> Result<Option<Vec<String>>, String> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::Array(items) => items
            .iter()
            .map(|i| string(i, at)?.ok_or_else(|| format!("{at}: a list item is empty")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(format!("{at}: expected a list of strings")),
    }
}

const TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
];

/// `tls_server_config`; `None` when it sets none of the keys that turn TLS on (the
/// toolkit's rule: any of the certificate, key, client CA or client auth keys).
fn tls_settings(value: &Yaml, dir: &Path, warnings: &mut Vec<String>) -> Result<Option<TlsSettings>, String> {
    let mut s = std::collections::HashMap::new();
    for (key, v) in mapping(value, "tls_server_config", TLS_KEYS)? {
        s.insert(key, v);
    }
    let at = |k: &str| format!("tls_server_config.{k}");
    let get = |k: &str| -> Result<Option<String>, String> {
        s.get(k)
            .map_or(Ok(None), |v| string(v, &at(k)))
            .map(|o| o.filter(|v| !v.is_empty()))
    };
    let material = |inline: &str, file: &str| -> Result<Option<Material>, String> {
        match (get(inline)?, get(file)?) {
            (Some(_), Some(_)) => Err(format!("{} and {}: set one, not both", at(inline), at(file))),
            (Some(text), None) => Ok(Some(Material::Inline(text))),
            (None, Some(path)) => Ok(Some(Material::File(dir.join(path)))),
            (None, None) => Ok(None),
        }
    };
    let cert = material("cert", "cert_file")?;
    let key = material("key", "key_file")?;
    let client_ca = material("client_ca", "client_ca_file")?;
    let client_auth_name = get("client_auth_type")?;
    if cert.is_none() && key.is_none() && client_ca.is_none() && client_auth_name.is_none() {
        // Other keys alone (min_version, cipher_suites) do not turn TLS on.
        return Ok(None);
    }
    let cert = cert.ok_or_else(|| {
        format!(
            "{}: missing: TLS needs a certificate (cert_file or cert)",
            at("cert_file")
        )
    })?;
    let key = key.ok_or_else(|| format!("{}: missing: TLS needs a private key (key_file or key)", at("key_file")))?;
    let client_auth = match &client_auth_name {
        None => ClientAuth::NoClientCert,
        Some(name) => ClientAuth::parse(name).ok_or_else(|| {
            format!(
                "{}: {name:?} is not one of {}",
                at("client_auth_type"),
                ClientAuth::NAMES
            )
        })?,
    };
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(format!(
            "{}: a client CA is set but client_auth_type is NoClientCert; set client_auth_type \
             (RequireAndVerifyClientCert to require verified client certificates) or remove the CA",
            at("client_ca_file")
        ));
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(format!(
            "{}: {client_auth:?} verifies client certificates and needs client_ca_file (or client_ca)",
            at("client_auth_type")
        ));
    }
    let version = |k: &str, default: TlsVersion| -> Result<(TlsVersion, bool), String> {
        match get(k)?.as_deref() {
            None => Ok((default, false)),
            Some("TLS13") => Ok((TlsVersion::Tls13, false)),
            Some("TLS12") => Ok((TlsVersion::Tls12, false)),
            Some("TLS10" | "TLS11") => Ok((TlsVersion::Tls12, true)),
            Some(other) => Err(format!("{}: {other:?} is not one of TLS10, TLS11, TLS12, TLS13", at(k))),
        }
    };
    let (min_version, min_raised) = version("min_version", TlsVersion::Tls12)?;
    if min_raised {
        warnings.push(format!(
            "{}: TLS 1.0 and 1.1 are not implemented (rustls); the lowest version served is TLS 1.2",
            at("min_version")
        ));
    }
    let (max_version, max_too_low) = version("max_version", TlsVersion::Tls13)?;
    if max_too_low {
        return Err(format!(
            "{}: TLS 1.0 and 1.1 are not implemented (rustls); use TLS12 or TLS13",
            at("max_version")
        ));
    }
    if min_version > max_version {
        return Err(format!("{}: above max_version", at("min_version")));
    }
    let mut cipher_suites = Vec::new();
    for name in s
        .get("cipher_suites")
        .map_or(Ok(None), |v| strings(v, &at("cipher_suites")))?
        .unwrap_or_default()
    {
        match tls::cipher_suite(&name) {
            Ok(Some(suite)) => cipher_suites.push(suite),
            // A TLS 1.3 suite: always enabled, as in Go.
            Ok(None) => {}
            Err(e) => return Err(format!("{}: {e}", at("cipher_suites"))),
        }
    }
    let mut curve_preferences = Vec::new();
    for name in s
        .get("curve_preferences")
        .map_or(Ok(None), |v| strings(v, &at("curve_preferences")))?
        .unwrap_or_default()
    {
        curve_preferences.push(tls::curve(&name).map_err(|e| format!("{}: {e}", at("curve_preferences")))?);
    }
    // An empty list checks nothing, as in the toolkit.
    let client_allowed_sans = s
        .get("client_allowed_sans")
        .map_or(Ok(None), |v| strings(v, &at("client_allowed_sans")))?
        .filter(|sans| !sans.is_empty());
    // Fail closed. With a policy that lets a client in without a certificate, the SAN
    // check would never run for such a client (the toolkit refuses that too); with
    // RequireAnyClientCert, which the toolkit accepts, no CA verifies the certificate, so
    // anyone can make one that carries an allowed name and the check proves nothing.
    if client_allowed_sans.is_some() && client_auth != ClientAuth::RequireAndVerifyClientCert {
        return Err(format!(
            "{}: client_allowed_sans requires client_auth_type RequireAndVerifyClientCert with a client_ca_file (it is {client_auth:?}, \
             under which no CA verifies the certificate and anyone can make one that carries an allowed name)",
            at("client_allowed_sans")
        ));
    }
    let prefer_server_cipher_suites = s
        .get("prefer_server_cipher_suites")
        .map_or(Ok(None), |v| boolean(v, &at("prefer_server_cipher_suites")))?
        .unwrap_or(true);
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        client_allowed_sans,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites,
        curve_preferences,
    }))
}

/// The headers a web configuration may set, and the values allowed where the header
/// is an enumeration (the toolkit's list: kept the same across the ecosystem).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn http_settings(value: &Yaml, cfg: &mut WebConfig) -> Result<(), String> {
    for (key, v) in mapping(value, "http_server_config", &["http2", "headers"])? {
        match key {
            "http2" => cfg.http2_requested = boolean(v, "http_server_config.http2")?.unwrap_or(false),
            _ => {
                let names: Vec<&'static str> = HEADERS.iter().map(|(n, _)| *n).collect();
                for (name, value) in mapping(v, "http_server_config.headers", &names)? {
                    let at = format!("http_server_config.headers.{name}");
                    let Some(value) = string(value, &at)?.filter(|v| !v.is_empty()) else {
                        continue; // blank: the header is not set
                    };
                    let allowed = HEADERS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, a)| *a);
                    if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                        return Err(format!("{at}: {value:?} is not one of {}", allowed.join(", ")));
                    }
                    let value = HeaderValue::from_str(&value).map_err(|_| format!("{at}: not a valid header value"))?;
                    cfg.headers.push((HeaderName::from_static(lower(name)), value));
                }
            }
        }
    }
    Ok(())
}

/// The lower-case form of one of [`HEADERS`] (`HeaderName::from_static` wants it).
fn lower(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn users(value: &Yaml) -> Result<Vec<(String, String)>, String> {
    let hash = match value {
        Yaml::Null => return Ok(Vec::new()),
        Yaml::Hash(h) => h,
        _ => return Err("basic_auth_users: expected a mapping of user name to bcrypt hash".into()),
    };
    let mut out = Vec::new();
    for (user, hashed) in hash {
        let Yaml::String(user) = user else {
            return Err("basic_auth_users: user names must be strings".into());
        };
        let at = format!("basic_auth_users.{user}");
        let hashed = string(hashed, &at)?.unwrap_or_default();
        if hashed.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "{at}: not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost and 53 characters; \
                 make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            ));
        }
        out.push((user.clone(), hashed));
    }
    Ok(out)
}

fn rate_limit(value: &Yaml) -> Result<Option<RateLimit>, String> {
    let mut interval = Duration::ZERO;
    let mut burst = 0u32;
    for (key, v) in mapping(value, "rate_limit", &["interval", "burst"])? {
        let at = format!("rate_limit.{key}");
        match (key, v) {
            ("interval", Yaml::String(s)) => {
                interval = crate::config::parse_duration(s).map_err(|e| format!("{at}: {e}"))?;
            }
            ("interval", Yaml::Integer(0)) | (_, Yaml::Null) => {}
            ("interval", _) => return Err(format!("{at}: expected a duration such as 100ms or 1s")),
            (_, Yaml::Integer(n)) => {
                burst = u32::try_from(*n).map_err(|_| format!("{at}: expected a count from 0 to {}", u32::MAX))?;
            }
            _ => return Err(format!("{at}: expected a whole number")),
        }
    }
    if interval.is_zero() {
        return Ok(None);
    }
    if burst == 0 {
        return Err(
            "rate_limit.burst: must be at least 1 when rate_limit.interval is set (0 would refuse every request)"
                .into(),
        );
    }
    Ok(Some(RateLimit { interval, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_here(text: &str) -> Result<WebConfig, String> {
        parse(text, Path::new("/etc/netpressure"))
    }

    // A hash of "secret" made with `htpasswd -nbBC 10 "" secret`.
    const HASH: &str = "$2y$10$Hv2wxYz8hd9qA3CyiK910OZNv8txGoNmYm1qiLU3M/f02e2AJ0clS";

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        let c = parse_here("").unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty() && c.rate_limit.is_none());
        assert!(parse_here("# only a comment\n").unwrap().tls.is_none());
    }

    #[test]
    fn the_toolkits_example_file_parses() {
        let c = parse_here(&format!(
            r#"
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: /etc/ca.crt
  client_allowed_sans: [prometheus.example, 10.0.0.1]
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Content-Security-Policy: ""
basic_auth_users:
  alice: "{HASH}"
rate_limit:
  interval: 100ms
  burst: 5
"#
        ))
        .unwrap();
        let t = c.tls.unwrap();
        assert_eq!(t.cert, Material::File("/etc/netpressure/server.crt".into()));
        assert_eq!(t.client_ca, Some(Material::File("/etc/ca.crt".into())));
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(t.min_version, TlsVersion::Tls13);
        assert_eq!(
            t.cipher_suites.len(),
            1,
            "the TLS 1.3 name is accepted, not configurable"
        );
        assert_eq!(t.curve_preferences.len(), 2);
        assert_eq!(t.client_allowed_sans.unwrap(), ["prometheus.example", "10.0.0.1"]);
        assert_eq!(c.headers.len(), 1, "a blank header is not set");
        assert_eq!(c.users, [("alice".to_string(), HASH.to_string())]);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(100),
                burst: 5
            })
        );
    }

    #[test]
    fn client_allowed_sans_needs_a_verified_certificate() {
        let with = |policy: &str, sans: &str| {
            parse_here(&format!(
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n  client_auth_type: {policy}\n  client_allowed_sans: {sans}\n"
            ))
        };
        // RequireAnyClientCert too: a self-signed certificate from no CA carrying the
        // allowed name got 200 (the toolkit allows it).
        for policy in ["RequestClientCert", "VerifyClientCertIfGiven", "RequireAnyClientCert"] {
            let e = with(policy, "[prometheus.example]")
                .err()
                .unwrap_or_else(|| panic!("{policy} accepted"));
            assert!(
                e.contains(
                    "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert with a client_ca_file"
                ),
                "{policy}: {e}"
            );
            // An empty list checks nothing, so it is no error (the toolkit's rule).
            let t = with(policy, "[]").unwrap().tls.unwrap();
            assert_eq!(t.client_allowed_sans, None);
        }
        let t = with("RequireAndVerifyClientCert", "[prometheus.example]")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(t.client_allowed_sans.unwrap(), ["prometheus.example"]);
    }

    #[test]
    fn errors_name_the_key_and_what_is_accepted() {
        for (text, says) in [
            (
                "tls_server_config:\n  cert_fiel: a\n",
                "tls_server_config: unknown key \"cert_fiel\"; accepted: cert, key",
            ),
            ("basic_auth_user: {}\n", "unknown key \"basic_auth_user\""),
            (
                "tls_server_config:\n  cert_file: a\n",
                "tls_server_config.key_file: missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n",
                "\"Always\" is not one of NoClientCert, RequestClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "client CA is set but client_auth_type is NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS11\n",
                "use TLS12 or TLS13",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n",
                "not one of TLS10",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "not implemented by rustls",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                "CurveP521",
            ),
            (
                "tls_server_config:\n  cert: x\n  cert_file: a\n  key_file: b\n",
                "set one, not both",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "unknown key \"Server\"; accepted: Strict-Transport-Security",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "\"allow\" is not one of deny, sameorigin",
            ),
            (
                "basic_auth_users:\n  bob: hunter2\n",
                "basic_auth_users.bob: not a bcrypt hash",
            ),
            ("rate_limit:\n  interval: 1s\n", "rate_limit.burst: must be at least 1"),
            (
                "rate_limit:\n  interval: fast\n  burst: 1\n",
                "rate_limit.interval: expected a duration",
            ),
            ("- a\n- b\n", "the file: expected a mapping"),
            ("tls_server_config: [\n", "not valid YAML"),
            ("a: 1\na: 2\n", "not valid YAML"),
        ] {
            let e = parse_here(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(says), "{text:?} gave {e:?}, wanted {says:?}");
        }
    }

    #[test]
    fn old_tls_minimums_are_served_as_tls12_with_a_warning() {
        let c = parse_here("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n").unwrap();
        assert_eq!(c.tls.unwrap().min_version, TlsVersion::Tls12);
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn settings_without_a_certificate_do_not_turn_tls_on() {
        // The toolkit's rule: min_version alone leaves plain HTTP.
        assert!(parse_here("tls_server_config:\n  min_version: TLS13\n")
            .unwrap()
            .tls
            .is_none());
    }
}
