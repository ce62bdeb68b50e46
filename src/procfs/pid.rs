//! Parsers for the per-process files under `/proc/PID/`. Pure functions over bytes.

use super::parse::{fields, parse_dec};

/// The open descriptors of a process, from its `/proc/PID/fd` directory: Linux ≥ 6.2
/// reports the count as the directory's size (one `stat`, and readable without
/// CAP_SYS_PTRACE); older kernels report 0, and the entries are counted instead. Pass
/// `size_is_count` when the size is known to be the count (see [`size_is_count`]).
///
/// # Errors
/// The `stat` or the listing fails (the process exited, or may not be read).
pub fn open_fds(fd_dir: &std::path::Path, size_is_count: bool) -> std::io::Result<u64> {
    if size_is_count {
        return std::fs::metadata(fd_dir).map(|m| m.len());
    }
    std::fs::read_dir(fd_dir).map(|d| d.count() as u64)
}

/// Whether this kernel reports a process's descriptor count as the size of its
/// `/proc/PID/fd` (Linux ≥ 6.2): the calling process always has descriptors open, so a
/// size of 0 for its own means "not supported".
pub fn size_is_count(procfs: &std::path::Path) -> bool {
    std::fs::metadata(procfs.join("self/fd")).is_ok_and(|m| m.len() > 0)
}

/// The fields of `/proc/PID/stat` the exporter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
    pub vsize: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(bytes: &[u8]) -> Option<ProcStat> {
    let close = bytes.iter().rposition(|b| *b == b')')?;
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let mut f = fields(&bytes[close + 1..]);
    let mut nth = |skip: usize| f.nth(skip).and_then(parse_dec);
    let utime = nth(11)?; // field 14
    let stime = nth(0)?; // 15
    let starttime = nth(6)?; // 22
    let vsize = nth(0)?; // 23
    let rss_pages = nth(0)?; // 24
    Some(ProcStat {
        utime,
        stime,
        starttime,
        vsize,
        rss_pages,
    })
}

/// The soft "Max open files" limit from `/proc/PID/limits`; `None` for "unlimited".
pub fn parse_max_open_files(bytes: &[u8]) -> Option<u64> {
    let line = bytes
        .split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"Max open files"))?;
    fields(&line[b"Max open files".len()..]).next().and_then(parse_dec)
}

/// `btime` (boot time, Unix seconds) from `/proc/stat`.
pub fn parse_btime(bytes: &[u8]) -> Option<u64> {
    let line = bytes.split(|b| *b == b'\n').find(|l| l.starts_with(b"btime "))?;
    fields(&line[6..]).next().and_then(parse_dec)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with `cat /proc/self/stat` on Linux 6.18.44 (a command name with a space
    // and a parenthesis substituted to exercise the rposition).
    const STAT: &[u8] = b"4242 (we ird) name) S 1 4242 4242 0 -1 4194560 109 0 0 0 7 3 0 0 20 0 1 0 123456 8613888 214 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields() {
        let st = parse_stat(STAT).unwrap();
        assert_eq!(
            st,
            ProcStat {
                utime: 7,
                stime: 3,
                starttime: 123_456,
                vsize: 8_613_888,
                rss_pages: 214
            }
        );
        assert_eq!(parse_stat(b"1 (x) S 1 2"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn limits() {
        let l = b"Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(l), Some(1024));
        assert_eq!(
            parse_max_open_files(b"Max open files            unlimited            unlimited            files\n"),
            None
        );
    }
}
