//! `/proc/net/stat/nf_conntrack`: the procfs view of the per-CPU conntrack statistics,
//! used when ctnetlink is refused. One header line, then one hex row per possible CPU.
//!
//! Columns are matched by header name, never by position: the layout changed in ≈5.9
//! (`searched` became `clashres`) and ≈5.15 (`delete_list` became `chainlength`), and
//! many kernels since no longer build the file at all.

use super::parse::{fields, parse_hex};
use crate::model::{CtCounter, CtCpuStats};

/// Why a `/proc/net/stat/nf_conntrack` body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct StatParseError {
    pub line: usize,
    pub what: &'static str,
}

const MAX_COLUMNS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Ignored,
    Entries,
    Counter(CtCounter),
}

fn column(name: &[u8]) -> Column {
    match name {
        b"entries" => Column::Entries,
        b"found" => Column::Counter(CtCounter::Found),
        b"invalid" => Column::Counter(CtCounter::Invalid),
        b"insert" => Column::Counter(CtCounter::Insert),
        b"insert_failed" => Column::Counter(CtCounter::InsertFailed),
        b"drop" => Column::Counter(CtCounter::Drop),
        b"early_drop" => Column::Counter(CtCounter::EarlyDrop),
        b"icmp_error" => Column::Counter(CtCounter::Error),
        b"search_restart" => Column::Counter(CtCounter::SearchRestart),
        b"clashres" => Column::Counter(CtCounter::ClashResolve),
        b"chainlength" => Column::Counter(CtCounter::ChainTooLong),
        // `searched`, `new`, `ignore`, `delete`, `delete_list` and the expectation
        // columns are either hard-coded to 0 or mean something else on newer kernels.
        _ => Column::Ignored,
    }
}

/// Parses the file into one [`CtCpuStats`] per row and returns
/// this namespace's entry count, which the kernel repeats on every row.
///
/// Rows are numbered 0, 1, ...: row N is the Nth *possible* CPU, which is CPU N only
/// where the possible CPUs are contiguous (the caller renumbers them).
/// `cpus` is cleared and refilled, so its allocation is reused between samples.
///
/// # Errors
/// A missing header, a header without any known column, a row whose field count differs
/// from the header's, or a field that is not hex.
pub fn parse_stat(bytes: &[u8], cpus: &mut Vec<CtCpuStats>) -> Result<Option<u64>, StatParseError> {
    cpus.clear();
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty());
    let header = lines.next().ok_or(StatParseError {
        line: 1,
        what: "empty file",
    })?;
    let mut cols = [Column::Ignored; MAX_COLUMNS];
    let mut ncols = 0usize;
    for name in fields(header) {
        if ncols == MAX_COLUMNS {
            return Err(StatParseError {
                line: 1,
                what: "too many columns",
            });
        }
        cols[ncols] = column(name);
        ncols += 1;
    }
    if !cols[..ncols].iter().any(|c| *c != Column::Ignored) {
        return Err(StatParseError {
            line: 1,
            what: "no known column in header",
        });
    }
    let mut entries = None;
    for (i, line) in lines.enumerate() {
        let lineno = i + 2;
        let cpu = u16::try_from(i).map_err(|_| StatParseError {
            line: lineno,
            what: "too many rows",
        })?;
        let mut row = CtCpuStats {
            cpu,
            ..CtCpuStats::default()
        };
        let mut n = 0usize;
        for field in fields(line) {
            if n == ncols {
                return Err(StatParseError {
                    line: lineno,
                    what: "more fields than the header",
                });
            }
            let v = parse_hex(field).ok_or(StatParseError {
                line: lineno,
                what: "field is not hex",
            })?;
            match cols[n] {
                Column::Entries => entries = Some(v),
                Column::Counter(c) => row.set(c, v),
                Column::Ignored => {}
            }
            n += 1;
        }
        if n != ncols {
            return Err(StatParseError {
                line: lineno,
                what: "fewer fields than the header",
            });
        }
        cpus.push(row);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        let mut cpus = Vec::new();
        assert!(parse_stat(b"", &mut cpus).is_err());
        assert!(parse_stat(b"foo bar\n1 2\n", &mut cpus).is_err());
        assert!(parse_stat(b"entries drop\n1\n", &mut cpus).is_err());
        assert!(parse_stat(b"entries drop\n1 2 3\n", &mut cpus).is_err());
        assert!(parse_stat(b"entries drop\n1 zz\n", &mut cpus).is_err());
        assert_eq!(parse_stat(b"entries drop\n", &mut cpus), Ok(None));
        assert!(cpus.is_empty());
    }
}
