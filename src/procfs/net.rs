//! Parsers for the per-namespace TCP counters and socket counts in `/proc/net`, and for
//! the global `softnet_stat`. Pure functions over bytes; fields are matched by name.

use super::parse::{fields, parse_dec, parse_hex};

/// Finds `prefix: ... name ...` / `prefix: ... value ...` line pairs (the format of
/// `/proc/net/netstat` and `/proc/net/snmp`) and calls `f(name, value)` for each field.
/// A header without its value line, or a value that is not a number, is skipped:
/// the kernel adds fields over time and we only take the ones we know.
///
/// # Errors
/// A value line whose field count differs from its header's.
pub fn for_each_pair(bytes: &[u8], mut f: impl FnMut(&[u8], &[u8], u64)) -> Result<(), &'static str> {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    while let Some(header) = lines.next() {
        let Some(values) = lines.next() else {
            return Err("header line without a value line");
        };
        let mut h = fields(header);
        let mut v = fields(values);
        let (Some(hp), Some(vp)) = (h.next(), v.next()) else {
            return Err("empty line");
        };
        if hp != vp || !hp.ends_with(b":") {
            return Err("value line does not follow its header");
        }
        let prefix = &hp[..hp.len() - 1];
        loop {
            match (h.next(), v.next()) {
                (Some(name), Some(value)) => {
                    // Some snmp fields (MaxConn) may be -1: not a counter, skip.
                    if let Some(value) = parse_dec(value) {
                        f(prefix, name, value);
                    }
                }
                (None, None) => break,
                _ => return Err("value line and header differ in length"),
            }
        }
    }
    Ok(())
}

/// Counts from `/proc/net/sockstat` (TCP line) and `sockstat6` (TCP6 line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockStat {
    pub tcp_inuse: Option<u64>,
    pub tcp_orphan: Option<u64>,
    pub tcp_tw: Option<u64>,
    pub tcp6_inuse: Option<u64>,
}

/// Reads the `TCP:` and `TCP6:` lines of sockstat or sockstat6 into `out`.
pub fn parse_sockstat(bytes: &[u8], out: &mut SockStat) {
    for line in bytes.split(|b| *b == b'\n') {
        let mut f = fields(line);
        let proto = f.next();
        if proto != Some(b"TCP:") && proto != Some(b"TCP6:") {
            continue;
        }
        let v6 = proto == Some(b"TCP6:");
        while let (Some(k), Some(v)) = (f.next(), f.next()) {
            let v = parse_dec(v);
            match (v6, k) {
                (false, b"inuse") => out.tcp_inuse = v,
                (false, b"orphan") => out.tcp_orphan = v,
                (false, b"tw") => out.tcp_tw = v,
                (true, b"inuse") => out.tcp6_inuse = v,
                _ => {}
            }
        }
    }
}

/// One row of `/proc/net/softnet_stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftnetRow {
    pub cpu: u32,
    pub dropped: u64,
    pub time_squeeze: u64,
}

/// Parses `/proc/net/softnet_stat`: one hex row per online CPU; column 2 is `dropped`
/// (netdev_max_backlog exceeded), 3 `time_squeeze`, 13 (Linux ≥ 5.10) the CPU index.
/// Older kernels have no index column: the row number stands in.
///
/// # Errors
/// A row with fewer than 3 columns or a field that is not hex.
pub fn parse_softnet(bytes: &[u8], out: &mut Vec<SoftnetRow>) -> Result<(), &'static str> {
    out.clear();
    for (i, line) in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .enumerate()
    {
        let mut cols = [0u64; 16];
        let mut n = 0;
        for field in fields(line) {
            let v = parse_hex(field).ok_or("softnet_stat field is not hex")?;
            if n < cols.len() {
                cols[n] = v;
            }
            n += 1;
        }
        if n < 3 {
            return Err("softnet_stat row has fewer than 3 columns");
        }
        let cpu = if n >= 13 { cols[12] } else { i as u64 };
        out.push(SoftnetRow {
            cpu: u32::try_from(cpu).map_err(|_| "softnet_stat CPU index out of range")?,
            dropped: cols[1],
            time_squeeze: cols[2],
        });
    }
    Ok(())
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(bytes: &[u8]) -> Option<(u16, u16)> {
    let mut f = fields(bytes);
    let lo = u16::try_from(parse_dec(f.next()?)?).ok()?;
    let hi = u16::try_from(parse_dec(f.next()?)?).ok()?;
    (lo <= hi && f.next().is_none()).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_reject_mismatched_lines() {
        let mut seen = Vec::new();
        for_each_pair(b"Tcp: A B\nTcp: 1 2\n", |p, n, v| {
            seen.push((p.to_vec(), n.to_vec(), v))
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(for_each_pair(b"Tcp: A B\nTcp: 1\n", |_, _, _| {}).is_err());
        assert!(for_each_pair(b"Tcp: A B\nUdp: 1 2\n", |_, _, _| {}).is_err());
        assert!(for_each_pair(b"Tcp: A B\n", |_, _, _| {}).is_err());
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range(b"32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range(b"60999 32768"), None);
        assert_eq!(parse_port_range(b"1"), None);
        assert_eq!(parse_port_range(b"1 70000"), None);
    }
}
