//! A small `log` backend writing logfmt or JSON lines to stderr, as Prometheus
//! exporters do (`--log.format`, `--log.level`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

struct Logger {
    format: LogFormat,
}

/// How long the same warning stays quiet after it was logged.
pub const REPEAT_QUIET: std::time::Duration = std::time::Duration::from_secs(600);

/// Keeps a warning that comes back (a source that flaps between up and down, a failure
/// that returns every second) to one line per [`REPEAT_QUIET`]; the repeats in between
/// go to debug and are counted in the next line that is logged. A warning about
/// something that holds for the life of the process (the descriptor budget, a missing
/// capability) is said once, by a flag beside it: repeating it would add nothing.
#[derive(Debug, Default, Clone)]
pub struct Repeats {
    last: Option<(String, std::time::Instant)>,
    suppressed: u64,
}

impl Repeats {
    /// Whether `msg` may be logged at its level now; `Some(n)` with the number of
    /// repeats that were kept quiet since it was last logged.
    pub fn allow(&mut self, msg: &str, now: std::time::Instant) -> Option<u64> {
        if let Some((last, at)) = &self.last {
            if last == msg && now.saturating_duration_since(*at) < REPEAT_QUIET {
                self.suppressed += 1;
                return None;
            }
        }
        self.last = Some((msg.to_string(), now));
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Logs `msg` at `level` if [`allow`](Self::allow)ed, saying how many repeats were
    /// kept quiet since; a repeat kept quiet goes to debug. Whether it went out at
    /// `level`.
    pub fn log(&mut self, level: log::Level, msg: &str) -> bool {
        match self.allow(msg, std::time::Instant::now()) {
            Some(0) => log::log!(level, "{msg}"),
            Some(n) => log::log!(level, "{msg} ({n} more like it since the last one)"),
            None => {
                log::debug!("{msg}");
                return false;
            }
        }
        true
    }
}

/// Installs the logger. Safe to call more than once (later calls only set the level).
pub fn init(level: log::LevelFilter, format: LogFormat) {
    let _ = log::set_boxed_logger(Box::new(Logger { format }));
    log::set_max_level(level);
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        let msg = record.args().to_string();
        let time = rfc3339_now();
        let target = record.target().trim_start_matches("netpressure_exporter::");
        let mut line = String::with_capacity(96 + msg.len());
        match self.format {
            LogFormat::Logfmt => {
                let _ = write!(line, "time={time} level={level} source={target} msg=");
                logfmt_value(&mut line, &msg);
            }
            LogFormat::Json => {
                let _ = write!(line, "{{\"time\":\"{time}\",\"level\":\"{level}\",\"source\":");
                json_string(&mut line, target);
                line.push_str(",\"msg\":");
                json_string(&mut line, &msg);
                line.push('}');
            }
        }
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn logfmt_value(out: &mut String, v: &str) {
    if !v.is_empty() && !v.contains(|c: char| c == ' ' || c == '=' || c == '"' || c.is_control()) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `v` as a JSON string (quoted and escaped); the doctor's JSON uses it too.
pub(crate) fn json_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Now as `2026-11-27T23:59:00.123Z`.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_quiet_period_and_counted() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut r = Repeats::default();
        assert_eq!(r.allow("down: EPERM", at(0)), Some(0));
        assert_eq!(r.allow("down: EPERM", at(1)), None);
        assert_eq!(r.allow("down: EPERM", at(2)), None);
        // Another message is logged at once; the first one's repeats stay counted.
        assert_eq!(r.allow("down: ENOBUFS", at(3)), Some(2));
        assert_eq!(r.allow("down: EPERM", at(4)), Some(0));
        assert_eq!(r.allow("down: EPERM", at(4 + REPEAT_QUIET.as_secs())), Some(0));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn quoting() {
        let mut s = String::new();
        logfmt_value(&mut s, "source conntrack is down: \"x\"");
        assert_eq!(s, r#""source conntrack is down: \"x\"""#);
        let mut s = String::new();
        json_string(&mut s, "a\"b\n\u{1}");
        assert_eq!(s, r#""a\"b\n\u0001""#);
    }
}
