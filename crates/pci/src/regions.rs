//! A group's reserved regions: the lines of `/sys/kernel/iommu_groups/N/reserved_regions`.
//!
//! The kernel prints one region per line as `0x%016llx 0x%016llx %s` (drivers/iommu/iommu.c,
//! `iommu_group_show_resv_regions`): first address, last address (inclusive), and a type from a fixed
//! table (`direct`, `direct-relaxable`, `reserved`, `msi`).

use serde::{Deserialize, Serialize};

/// One line of a group's `reserved_regions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedRegion {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// `direct`, `direct-relaxable`, `reserved` or `msi`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The type given to a line that has addresses but no type (see [`ReservedRegion::parse_line`]).
pub const UNTYPED_KIND: &str = "reserved";

impl ReservedRegion {
    /// Parses one line: `0x%016x 0x%016x <type>`; words after the type are ignored. A line whose two
    /// addresses are not `0x`-prefixed hexadecimal is `None`. The addresses are taken as written, even
    /// when the first is above the second (a consumer that needs a range checks it).
    ///
    /// A line with both addresses but no type gets the type [`UNTYPED_KIND`] (`reserved`). The kernel
    /// always prints a type, so such a line comes from a damaged or forged file; its addresses are still
    /// the safe thing to honour. `reserved` is the kernel's "no DMA here at all": keeping the range only
    /// shrinks the address space a user-space driver maps into, while dropping the line could let a
    /// mapping land on a window the platform set aside.
    pub fn parse_line(line: &str) -> Option<Self> {
        let mut it = line.split_whitespace();
        let num = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
        let start = num(it.next()?)?;
        let end = num(it.next()?)?;
        let kind = it.next().unwrap_or(UNTYPED_KIND).to_string();
        Some(Self { start, end, kind })
    }
}

/// Parses a whole `reserved_regions` file, one [`ReservedRegion::parse_line`] per line; lines that do
/// not parse are skipped.
pub fn parse_reserved_regions(text: &str) -> Vec<ReservedRegion> {
    text.lines().filter_map(ReservedRegion::parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_parse() {
        let r = parse_reserved_regions(
            "0x00000000fee00000 0x00000000feefffff msi\n0x000000007b800000 0x000000007fffffff direct\n",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ReservedRegion { start: 0xfee0_0000, end: 0xfeef_ffff, kind: "msi".into() });
        assert_eq!(r[1].kind, "direct");
    }

    #[test]
    fn junk_is_skipped_and_a_line_without_type_is_reserved() {
        assert_eq!(parse_reserved_regions("junk\n0x10\n10 0x1f msi\n0x10 0xzz msi\n\n"), vec![]);
        assert_eq!(
            ReservedRegion::parse_line("0x10 0x1f"),
            Some(ReservedRegion { start: 0x10, end: 0x1f, kind: "reserved".into() })
        );
        assert_eq!(ReservedRegion::parse_line("0x20 0x10 bad extra").map(|r| (r.start, r.end)), Some((0x20, 0x10)));
    }

    #[test]
    fn serde_shape_is_start_end_type() {
        let r = ReservedRegion { start: 1, end: 2, kind: "msi".into() };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"start":1,"end":2,"type":"msi"}"#);
        assert_eq!(serde_json::from_str::<ReservedRegion>(&j).unwrap(), r);
    }
}
