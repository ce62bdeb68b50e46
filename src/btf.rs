//! The names of the kernel's drop reasons, read from its BTF (`/sys/kernel/btf/vmlinux`):
//! the numbers of `enum skb_drop_reason` move between kernels (5.17 had a few dozen,
//! 6.18 has 128), the names do not.
//!
//! A reader of BTF enums only, hand-written: aya parses BTF for its relocations but keeps
//! the types and strings to itself, and a full parser of a 6 MB file would hold every
//! type of the kernel in memory to find two enums. This one walks the type section once,
//! skipping each record by its kind's size, and copies out only the enums asked for.
//! Fuzzed (`fuzz/fuzz_targets/btf.rs`).

/// BTF's magic, in the byte order of the kernel that wrote it.
const MAGIC: u16 = 0xeb9f;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF (no magic 0xeb9f in either byte order)")]
    Magic,
    #[error("BTF truncated: {0}")]
    Truncated(&'static str),
    #[error("BTF type kind {0} is unknown to this reader")]
    UnknownKind(u32),
}

/// One enum's members: name and value.
pub type Members = Vec<(String, i64)>;

struct Reader<'a> {
    data: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

/// The members of each enum in `data` (a whole BTF blob: header, types, strings) whose
/// name is in `names`, in the order of `names` (`None` where there is no such enum).
/// Signed and unsigned, 32- and 64-bit enums alike.
///
/// # Errors
/// The bytes are not BTF, or a section or record runs past its end.
pub fn enums(data: &[u8], names: &[&str]) -> Result<Vec<Option<Members>>, BtfError> {
    let big = match data.get(0..2) {
        Some([a, b]) if u16::from_le_bytes([*a, *b]) == MAGIC => false,
        Some([a, b]) if u16::from_be_bytes([*a, *b]) == MAGIC => true,
        _ => return Err(BtfError::Magic),
    };
    let r = Reader { data, big };
    let hdr_len = r.u32_at(4).ok_or(BtfError::Truncated("header"))? as usize;
    let field = |i: usize| r.u32_at(8 + 4 * i).ok_or(BtfError::Truncated("header"));
    let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let section = |off: u32, len: u32, what| {
        let start = hdr_len.checked_add(off as usize).ok_or(BtfError::Truncated(what))?;
        let end = start.checked_add(len as usize).ok_or(BtfError::Truncated(what))?;
        data.get(start..end).ok_or(BtfError::Truncated(what))
    };
    let types = Reader {
        data: section(type_off, type_len, "type section")?,
        big,
    };
    let strings = section(str_off, str_len, "string section")?;
    let name_at = |off: u32| -> &[u8] {
        let rest = strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    };

    let mut found: Vec<Option<Members>> = vec![None; names.len()];
    let mut at = 0usize;
    while at < types.data.len() {
        let head = |i: usize| types.u32_at(at + 4 * i).ok_or(BtfError::Truncated("type record"));
        let (name_off, info) = (head(0)?, head(1)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let signed = info >> 31 == 1;
        let tail = match kind {
            // INT, VAR, DECL_TAG: one u32.
            1 | 14 | 17 => 4,
            // ARRAY: element type, index type, count.
            3 => 12,
            // STRUCT, UNION, DATASEC: vlen members of three u32.
            4 | 5 | 15 => 12 * vlen,
            // ENUM, FUNC_PROTO: vlen pairs of u32.
            6 | 13 => 8 * vlen,
            // ENUM64: name, low and high halves.
            19 => 12 * vlen,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
            2 | 7..=12 | 16 | 18 => 0,
            k => return Err(BtfError::UnknownKind(k)),
        };
        let body = at + 12;
        let next = body.checked_add(tail).ok_or(BtfError::Truncated("type record"))?;
        if next > types.data.len() {
            return Err(BtfError::Truncated("type record"));
        }
        if kind == 6 || kind == 19 {
            let name = name_at(name_off);
            if let Some(i) = names.iter().position(|n| n.as_bytes() == name) {
                let stride = if kind == 6 { 8 } else { 12 };
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let p = body + m * stride;
                    let word = |k: usize| types.u32_at(p + 4 * k).ok_or(BtfError::Truncated("enum member"));
                    let value = if kind == 6 {
                        let v = word(1)?;
                        if signed {
                            i64::from(v as i32)
                        } else {
                            i64::from(v)
                        }
                    } else {
                        ((u64::from(word(2)?) << 32) | u64::from(word(1)?)) as i64
                    };
                    members.push((String::from_utf8_lossy(name_at(word(0)?)).into_owned(), value));
                }
                found[i] = Some(members);
            }
        }
        at = next;
    }
    Ok(found)
}

/// The label value of each drop reason the kernel names: `SKB_DROP_REASON_NETFILTER_DROP`
/// becomes `netfilter_drop`. Subsystem reasons (the high 16 bits,
/// `SKB_DROP_REASON_SUBSYS_MASK`: openvswitch, mac80211) are kept apart as
/// `subsys_<subsystem>_<code>`, the subsystem named from `enum skb_drop_reason_subsys`
/// (its own reasons' names live in the module's BTF, not read here), else by number.
#[derive(Debug, Default, Clone)]
pub struct DropReasons {
    core: Vec<Option<String>>,
    subsystems: Vec<Option<String>>,
}

/// The enums of the core reasons and of the subsystems.
pub const REASON_ENUM: &str = "skb_drop_reason";
pub const SUBSYS_ENUM: &str = "skb_drop_reason_subsys";

impl DropReasons {
    /// From the members of `enum skb_drop_reason` and `enum skb_drop_reason_subsys`.
    pub fn new(reasons: &[(String, i64)], subsystems: &[(String, i64)]) -> Self {
        let mut core = Vec::new();
        for (name, value) in reasons {
            let Some(short) = name.strip_prefix("SKB_DROP_REASON_") else {
                continue;
            };
            // MAX and SUBSYS_MASK are bounds, not reasons; an empty name would be an
            // empty label value, which Prometheus reads as no label.
            if short.is_empty() || short == "MAX" || short == "SUBSYS_MASK" {
                continue;
            }
            let Ok(v) = usize::try_from(*value) else { continue };
            if v > 0xffff {
                continue;
            }
            if core.len() <= v {
                core.resize(v + 1, None);
            }
            core[v] = Some(short.to_ascii_lowercase());
        }
        let mut subs = Vec::new();
        for (name, value) in subsystems {
            let Some(short) = name.strip_prefix("SKB_DROP_REASON_SUBSYS_") else {
                continue;
            };
            let Ok(v) = usize::try_from(*value) else { continue };
            if short.is_empty() || short == "NUM" || v > 0xffff {
                continue;
            }
            if subs.len() <= v {
                subs.resize(v + 1, None);
            }
            subs[v] = Some(short.to_ascii_lowercase());
        }
        Self { core, subsystems: subs }
    }

    /// How many core reasons the kernel names.
    pub fn core_len(&self) -> usize {
        self.core.iter().flatten().count()
    }

    /// The label value of `reason`.
    pub fn name(&self, reason: u32) -> String {
        let (subsys, code) = (reason >> 16, reason & 0xffff);
        if subsys == 0 {
            return match self.core.get(code as usize) {
                Some(Some(n)) => n.clone(),
                _ => format!("unknown_{code}"),
            };
        }
        match self.subsystems.get(subsys as usize) {
            Some(Some(s)) => format!("subsys_{s}_{code}"),
            _ => format!("subsys_{subsys}_{code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A BTF blob with the given type records and strings (little-endian).
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]); // version, flags
        b.extend_from_slice(&24u32.to_le_bytes()); // hdr_len
        let tl = (types.len() * 4) as u32;
        for v in [0, tl, tl, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for t in types {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn an_enum_after_other_kinds_is_found_with_signed_values() {
        // "\0x\0e\0A\0B\0"
        let strings = b"\0x\0e\0A\0B\0";
        let types = [
            // INT "x": name 1, kind 1, size 4, one u32 of encoding
            1,
            1 << 24,
            4,
            0,
            // STRUCT anon, 1 member
            0,
            (4 << 24) | 1,
            4,
            1,
            1,
            0,
            // signed ENUM "e" with A=-1, B=7
            3,
            (1 << 31) | (6 << 24) | 2,
            4,
            5,
            u32::MAX,
            7,
            7,
        ];
        let got = enums(&blob(&types, strings), &["nope", "e"]).unwrap();
        assert_eq!(got[0], None);
        assert_eq!(got[1], Some(vec![("A".to_string(), -1), ("B".to_string(), 7)]));
    }

    #[test]
    fn truncated_and_foreign_bytes_are_errors() {
        assert_eq!(enums(b"\x7fELF", &["e"]), Err(BtfError::Magic));
        let strings = b"\0e\0";
        let full = blob(&[1, (6 << 24) | 3, 4, 0, 0], strings);
        assert!(matches!(enums(&full, &["e"]), Err(BtfError::Truncated(_))));
        assert!(matches!(enums(&full[..10], &["e"]), Err(BtfError::Truncated(_))));
        let unknown = blob(&[0, 31 << 24, 0], b"\0");
        assert_eq!(enums(&unknown, &["e"]), Err(BtfError::UnknownKind(31)));
    }

    #[test]
    fn reasons_are_lowercased_without_prefix_and_subsystems_kept_apart() {
        let reasons = [
            ("SKB_NOT_DROPPED_YET".to_string(), 0),
            ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
            ("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12),
            // What the fuzzer found: a member named by the prefix alone.
            ("SKB_DROP_REASON_".to_string(), 3),
            ("SKB_DROP_REASON_MAX".to_string(), 13),
            ("SKB_DROP_REASON_SUBSYS_MASK".to_string(), 0xffff_0000),
        ];
        let subs = [
            ("SKB_DROP_REASON_SUBSYS_CORE".to_string(), 0),
            ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH".to_string(), 2),
            ("SKB_DROP_REASON_SUBSYS_NUM".to_string(), 3),
        ];
        let r = DropReasons::new(&reasons, &subs);
        assert_eq!(r.core_len(), 2);
        assert_eq!(r.name(12), "netfilter_drop");
        assert_eq!(r.name(2), "not_specified");
        assert_eq!(r.name(13), "unknown_13");
        assert_eq!(r.name(3), "unknown_3");
        assert_eq!(r.name(0x2_0003), "subsys_openvswitch_3");
        assert_eq!(r.name(0x5_0001), "subsys_5_1");
    }
}
