//! Small parsers shared by the procfs readers. Pure functions over bytes.

/// Parses a file holding a single decimal unsigned integer, ignoring surrounding
/// whitespace (sysctl files end in a newline).
pub fn single_u64(bytes: &[u8]) -> Option<u64> {
    parse_dec(bytes.trim_ascii())
}

/// Parses ASCII decimal digits. `None` for an empty string, any other byte, or overflow.
pub fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Parses ASCII hex digits (no `0x` prefix), as `/proc/net/stat/*` prints them.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Splits on ASCII whitespace without allocating.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty())
}

/// Parses a kernel CPU list such as `/sys/devices/system/cpu/possible` (`0-3`,
/// `0,2-5,8`) into the CPU numbers, in order. `None` for anything else, or for a list of
/// more than `max` CPUs.
pub fn cpu_list(bytes: &[u8], max: usize) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for item in bytes.trim_ascii().split(|b| *b == b',') {
        let (lo, hi) = match item.iter().position(|b| *b == b'-') {
            Some(i) => (parse_dec(&item[..i])?, parse_dec(&item[i + 1..])?),
            None => {
                let v = parse_dec(item)?;
                (v, v)
            }
        };
        if lo > hi || (hi - lo) as usize >= max.saturating_sub(out.len()) {
            return None;
        }
        for cpu in lo..=hi {
            out.push(u16::try_from(cpu).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        // /sys/devices/system/cpu/possible on the development machine (Linux 6.18.44).
        assert_eq!(cpu_list(b"0-1\n", 8192), Some(vec![0, 1]));
        assert_eq!(cpu_list(b"0,2-4,7", 8192), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(cpu_list(b"0-9", 4), None);
        for bad in [&b""[..], b"x", b"3-1", b"1-", b"0,,1", b"0-99999999"] {
            assert_eq!(cpu_list(bad, 8192), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal() {
        assert_eq!(single_u64(b"262144\n"), Some(262_144));
        assert_eq!(single_u64(b"  7 "), Some(7));
        assert_eq!(single_u64(b""), None);
        assert_eq!(single_u64(b"12a"), None);
        assert_eq!(single_u64(b"-1"), None);
        assert_eq!(single_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex(b"0000035d9"), Some(0x35d9));
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"1ffffffffffffffff"), None);
        assert_eq!(parse_hex(b"xyz"), None);
        assert_eq!(parse_hex(b""), None);
    }
}
