//! The flags' values: each parser says what is accepted when it refuses.

use std::path::PathBuf;
use std::time::Duration;

use super::LogFormat;

/// Parses a Prometheus-style duration: `250ms`, `5s`, `1m`, `1h`, or a sum such as `1m30s`.
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const ACCEPTED: &str = "expected a duration such as 250ms, 5s, 1m or 1h30m";
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(ACCEPTED.into());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(ACCEPTED.into());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| ACCEPTED.to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(ACCEPTED.into()),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| ACCEPTED.to_string())?;
        total = total.checked_add(part).ok_or_else(|| ACCEPTED.to_string())?;
    }
    Ok(total)
}

/// Parses a duration flag that must lie in `[min, max]`; `accepted` says so.
pub(super) fn bounded(s: &str, min: Duration, max: Duration, accepted: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|_| accepted.to_string())?;
    if d < min || d > max {
        return Err(accepted.into());
    }
    Ok(d)
}

pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn parse_fraction(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| "expected a fraction from 0 to 1, such as 0.75".into())
}

pub(super) fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 10000".into()),
    }
}

/// Parses a port list such as `80,443,8000-8100`.
pub fn parse_ports(s: &str) -> Result<Vec<(u16, u16)>, String> {
    const ACCEPTED: &str = "expected ports and ranges such as 80,443,8000-8100";
    s.split(',')
        .map(|item| {
            let item = item.trim();
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let lo: u16 = lo.trim().parse().map_err(|_| ACCEPTED.to_string())?;
            let hi: u16 = hi.trim().parse().map_err(|_| ACCEPTED.to_string())?;
            if lo == 0 || lo > hi {
                return Err(ACCEPTED.to_string());
            }
            Ok((lo, hi))
        })
        .collect()
}

/// The characters a URL path may hold as they are (RFC 3986 `pchar` and `/`); anything
/// else must be percent-encoded. The path is matched against the request's path as it
/// arrives, byte for byte, never through a router pattern, so `*`, `:` or `{` mean
/// nothing special.
pub(super) fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

pub(super) fn parse_telemetry_path(s: &str) -> Result<String, String> {
    const ACCEPTED: &str = "expected an absolute URL path other than / and /-/..., such as /metrics, of letters, digits and -._~!$&'()*+,;=:@/ (other characters percent-encoded as %HH)";
    let b = s.as_bytes();
    let escapes_ok = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !s.starts_with('/') || s == "/" || s.starts_with("/-/") || !s.chars().all(is_path_char) || !escapes_ok {
        return Err(ACCEPTED.into());
    }
    Ok(s.to_string())
}

/// Accepts `:PORT`, `HOST:PORT` and `[IPv6]:PORT` as Go exporters do. HOST is an IPv4
/// address, a bracketed IPv6 address, or a DNS name; something that looks like an IPv4
/// address but is not one (`1.2.3.4.5`) is refused here rather than at bind time.
pub(super) fn parse_listen_address(s: &str) -> Result<String, String> {
    const ACCEPTED: &str = "expected [HOST]:PORT, such as :9861, 127.0.0.1:9861, [::1]:9861 or localhost:9861";
    let (host, port) = s.rsplit_once(':').ok_or_else(|| ACCEPTED.to_string())?;
    port.parse::<u16>().map_err(|_| ACCEPTED.to_string())?;
    let valid = if host.is_empty() {
        true
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        host.parse::<std::net::Ipv4Addr>().is_ok()
    } else {
        host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            })
    };
    if !valid {
        return Err(ACCEPTED.into());
    }
    Ok(s.to_string())
}

/// `--netns.families`: `None` for all.
#[derive(Debug, Clone)]
pub(super) struct Families(pub(super) Option<Vec<String>>);

pub(super) fn parse_families(s: &str) -> Result<Families, String> {
    if s == "all" {
        return Ok(Families(None));
    }
    let known = crate::metrics::namespaced_families();
    let mut names: Vec<String> = Vec::new();
    for name in s.split(',').map(str::trim) {
        if name == "default" {
            names.extend(crate::metrics::default_netns_families().into_iter().map(str::to_string));
        } else if known.contains(&name) {
            names.push(name.to_string());
        } else {
            return Err(format!(
                "expected default, all, or a comma-separated list of namespaced families and default, such as default,netpressure_tcp_active_opens_total; {name:?} is not one"
            ));
        }
    }
    names.sort_unstable();
    names.dedup();
    Ok(Families(Some(names)))
}

/// A directory flag (`--path.*`): any non-empty path. Whether it holds what it should is
/// checked once every flag is known ([`Config::validate`]).
pub(super) fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("expected a directory path, such as /proc or /host/proc".into());
    }
    Ok(PathBuf::from(s))
}

pub(super) fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    match s {
        "debug" => Ok(log::LevelFilter::Debug),
        "info" => Ok(log::LevelFilter::Info),
        "warn" => Ok(log::LevelFilter::Warn),
        "error" => Ok(log::LevelFilter::Error),
        _ => Err("expected one of debug, info, warn, error".into()),
    }
}

pub(super) fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "logfmt" => Ok(LogFormat::Logfmt),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected logfmt or json".into()),
    }
}
