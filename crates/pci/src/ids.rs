//! Vendor, device, subsystem and class names from the `pci.ids` database.
//!
//! The database is loaded on every `iommuctl list`, so parsing is lazy: [`PciIds::parse`] keeps the text
//! and builds only a sorted index of the top-level entries (vendor ID or base class → byte range of its
//! block). A vendor's block is scanned the first time one of its devices is looked up, and an index of its
//! device lines is kept for later look-ups; subsystem and class look-ups scan the (short) block directly.
//!
//! # Format
//!
//! ```text
//! # comment
//! vvvv  Vendor name
//! <TAB>dddd  Device name
//! <TAB><TAB>ssss ssss  Subsystem name (subvendor subdevice)
//! C cc  Base class name
//! <TAB>ss  Subclass name
//! <TAB><TAB>pp  Programming interface name
//! ```
//!
//! IDs are hexadecimal (either case). Lines that do not fit are skipped; a top-level line that is neither
//! a vendor nor a class ends the previous block, so indented lines after it are ignored. When an ID occurs
//! twice, the first occurrence wins.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

/// Where the database is looked for, relative to the root given to [`PciIds::load_system`], in order.
const SYSTEM_PATHS: [&str; 3] = ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids", "usr/share/pci.ids"];

/// A vendor's device lines as (device ID, byte offset of the line), sorted by ID, unique.
type DeviceIndex = Box<[(u16, usize)]>;

/// One top-level entry: a vendor or a base class.
#[derive(Clone)]
struct Entry {
    /// Vendor ID, or base class in the low byte.
    id: u16,
    /// Byte range of the name in the text.
    name: (usize, usize),
    /// Byte range of the block of indented lines that follows the entry line.
    block: (usize, usize),
}

/// The pci.ids database: vendor, device, subsystem and class names.
///
/// Cheap to build (see the module documentation); look-ups borrow names from the stored text.
///
/// ```
/// use iommu_pci::PciIds;
/// let ids = PciIds::parse("8086  Intel Corporation\n\t10d3  82574L Gigabit Network Connection\n\
///                          C 02  Network controller\n\t00  Ethernet controller\n");
/// assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
/// assert_eq!(ids.describe(0x8086, 0x10d3), "Intel Corporation 82574L Gigabit Network Connection [8086:10d3]");
/// assert_eq!(ids.describe_class(0x020000), "Ethernet controller [0200]");
/// ```
#[derive(Clone, Default)]
pub struct PciIds {
    text: String,
    /// Vendors sorted by ID, unique.
    vendors: Vec<Entry>,
    /// Base classes sorted by ID, unique.
    classes: Vec<Entry>,
    /// Per vendor (same order as `vendors`): its device index, built on the first device look-up for that
    /// vendor.
    devices: Vec<OnceLock<DeviceIndex>>,
}

impl fmt::Debug for PciIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciIds")
            .field("bytes", &self.text.len())
            .field("vendors", &self.vendors.len())
            .field("classes", &self.classes.len())
            .finish()
    }
}

/// Parses exactly `N` hexadecimal digits at the start of `s`, returning the value and the rest.
fn hex_prefix<const N: usize>(s: &str) -> Option<(u16, &str)> {
    let digits = s.get(..N)?;
    if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((u16::from_str_radix(digits, 16).ok()?, &s[N..]))
}

/// The name after an ID: at least one blank, then non-empty text (trailing blanks and `\r` trimmed).
fn name_after(rest: &str) -> Option<&str> {
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let name = rest.trim();
    (!name.is_empty()).then_some(name)
}

/// Parses `vvvv  Name` (vendor) or `C cc  Name` (class) into (is class, ID, name).
fn top_level(line: &str) -> Option<(bool, u16, &str)> {
    if let Some(rest) = line.strip_prefix("C ") {
        let (id, rest) = hex_prefix::<2>(rest)?;
        return Some((true, id, name_after(rest)?));
    }
    let (id, rest) = hex_prefix::<4>(line)?;
    Some((false, id, name_after(rest)?))
}

/// Byte offset of `sub` (a slice of `text`) within `text`.
fn offset_in(text: &str, sub: &str) -> usize {
    sub.as_ptr() as usize - text.as_ptr() as usize
}

/// Lines of `text[start..end]` with their absolute start offsets.
fn lines_from(text: &str, start: usize, end: usize) -> impl Iterator<Item = (usize, &str)> {
    let block = text.get(start..end).unwrap_or("");
    block.split('\n').scan(start, |pos, line| {
        let at = *pos;
        *pos += line.len() + 1;
        Some((at, line))
    })
}

/// Sorts entries by ID, keeping the first of duplicates (they are nearly always sorted already).
fn sort_unique<T>(v: &mut Vec<T>, key: impl Fn(&T) -> u16) {
    if !v.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        v.sort_by_key(&key); // Stable: the first occurrence stays first.
        v.dedup_by(|b, a| key(a) == key(b));
    }
}

impl PciIds {
    /// A database with no entries: every look-up misses and descriptions show IDs only.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses pci.ids text. Never fails: malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        Self::from_string(text.to_owned())
    }

    /// Parses pci.ids text, taking ownership of it (no copy).
    fn from_string(text: String) -> Self {
        let mut vendors = Vec::new();
        let mut classes = Vec::new();
        // The entry whose block is open: (is class, index).
        let mut open: Option<(bool, usize)> = None;
        for (start, line) in lines_from(&text, 0, text.len()) {
            match line.as_bytes().first() {
                None | Some(b'\t' | b' ' | b'\r' | b'#') => continue,
                Some(_) => {}
            }
            if let Some((is_class, idx)) = open.take() {
                let list: &mut Vec<Entry> = if is_class { &mut classes } else { &mut vendors };
                list[idx].block.1 = start;
            }
            if let Some((is_class, id, name)) = top_level(line) {
                let name_start = offset_in(&text, name);
                let block_start = (start + line.len() + 1).min(text.len());
                let entry = Entry { id, name: (name_start, name_start + name.len()), block: (block_start, text.len()) };
                let list = if is_class { &mut classes } else { &mut vendors };
                list.push(entry);
                open = Some((is_class, list.len() - 1));
            }
        }
        sort_unique(&mut vendors, |e| e.id);
        sort_unique(&mut classes, |e| e.id);
        let devices = vendors.iter().map(|_| OnceLock::new()).collect();
        Self { text, vendors, classes, devices }
    }

    /// Loads the system database below `root` (`/` for the running system), trying
    /// `usr/share/misc/pci.ids`, `usr/share/hwdata/pci.ids` and `usr/share/pci.ids` in that order.
    ///
    /// The first readable file with at least one entry wins; if the readable files are all empty (or
    /// garbage), the first readable one is returned. `None` when no file can be read. Invalid UTF-8 is
    /// replaced, not rejected.
    pub fn load_system(root: &Path) -> Option<Self> {
        let mut fallback = None;
        for rel in SYSTEM_PATHS {
            let Ok(bytes) = iommu_fsio::read(&root.join(rel), iommu_fsio::Limit::PCI_IDS) else { continue };
            let text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            let ids = Self::from_string(text);
            if !ids.vendors.is_empty() || !ids.classes.is_empty() {
                return Some(ids);
            }
            fallback.get_or_insert(ids);
        }
        fallback
    }

    /// Number of vendors in the database.
    pub fn vendor_count(&self) -> usize {
        self.vendors.len()
    }

    /// Whether the database has no vendor and no class entries.
    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty() && self.classes.is_empty()
    }

    fn name(&self, range: (usize, usize)) -> &str {
        self.text.get(range.0..range.1).unwrap_or("")
    }

    fn vendor_index(&self, v: u16) -> Option<usize> {
        self.vendors.binary_search_by_key(&v, |e| e.id).ok()
    }

    fn class_entry(&self, base: u8) -> Option<&Entry> {
        let i = self.classes.binary_search_by_key(&u16::from(base), |e| e.id).ok()?;
        Some(&self.classes[i])
    }

    /// The device lines of vendor `vi`, built on first use.
    fn device_index(&self, vi: usize) -> &[(u16, usize)] {
        self.devices[vi].get_or_init(|| {
            let (start, end) = self.vendors[vi].block;
            let mut v: Vec<(u16, usize)> = lines_from(&self.text, start, end)
                .filter_map(|(at, line)| {
                    let rest = line.strip_prefix('\t')?;
                    let (id, _) = hex_prefix::<4>(rest)?;
                    name_after(rest.get(4..)?)?;
                    Some((id, at))
                })
                .collect();
            sort_unique(&mut v, |e| e.0);
            v.into_boxed_slice()
        })
    }

    /// The line start of device `d` of vendor `v`.
    fn device_line(&self, v: u16, d: u16) -> Option<usize> {
        let devs = self.device_index(self.vendor_index(v)?);
        let i = devs.binary_search_by_key(&d, |e| e.0).ok()?;
        Some(devs[i].1)
    }

    /// The name on the line starting at `at`, after its first `skip` bytes (indentation and ID).
    fn line_name(&self, at: usize, skip: usize) -> Option<&str> {
        let rest = self.text.get(at..)?;
        let line = rest.split('\n').next()?;
        name_after(line.get(skip..)?)
    }

    /// The vendor's name.
    pub fn vendor(&self, v: u16) -> Option<&str> {
        Some(self.name(self.vendors[self.vendor_index(v)?].name))
    }

    /// The device's name (without the vendor's).
    pub fn device(&self, v: u16, d: u16) -> Option<&str> {
        self.line_name(self.device_line(v, d)?, 1 + 4)
    }

    /// The name of subsystem `sv:sd` of device `v:d` (without vendor or device names).
    pub fn subsystem(&self, v: u16, d: u16, sv: u16, sd: u16) -> Option<&str> {
        let at = self.device_line(v, d)?;
        let end = self.vendors[self.vendor_index(v)?].block.1;
        for (_, line) in lines_from(&self.text, at, end).skip(1) {
            let Some(rest) = line.strip_prefix('\t') else { continue };
            let Some(rest) = rest.strip_prefix('\t') else {
                if hex_prefix::<4>(rest).is_some() {
                    break; // The next device.
                }
                continue;
            };
            let Some((sub_v, tail)) = hex_prefix::<4>(rest) else { continue };
            let Some((sub_d, tail)) = tail.strip_prefix(' ').and_then(hex_prefix::<4>) else { continue };
            if (sub_v, sub_d) == (sv, sd) {
                if let Some(name) = name_after(tail) {
                    return Some(name);
                }
            }
        }
        None
    }

    /// Names of the base class, subclass and programming interface of `class`
    /// (`base << 16 | sub << 8 | prog_if`), as far as the database knows them.
    fn class_names(&self, class: u32) -> (Option<&str>, Option<&str>, Option<&str>) {
        let [_, base, sub, prog_if] = class.to_be_bytes();
        let Some(entry) = self.class_entry(base) else { return (None, None, None) };
        let base_name = Some(self.name(entry.name));
        let (mut sub_name, mut prog_name) = (None, None);
        let mut in_sub = false;
        for (_, line) in lines_from(&self.text, entry.block.0, entry.block.1) {
            let Some(rest) = line.strip_prefix('\t') else { continue };
            if let Some(rest) = rest.strip_prefix('\t') {
                if in_sub {
                    if let Some((id, tail)) = hex_prefix::<2>(rest) {
                        if id == u16::from(prog_if) {
                            if let Some(name) = name_after(tail) {
                                prog_name = Some(name);
                                break;
                            }
                        }
                    }
                }
                continue;
            }
            let Some((id, tail)) = hex_prefix::<2>(rest) else { continue };
            if in_sub {
                break; // The next subclass: no such programming interface.
            }
            if id == u16::from(sub) {
                if let Some(name) = name_after(tail) {
                    sub_name = Some(name);
                    in_sub = true;
                }
            }
        }
        (base_name, sub_name, prog_name)
    }

    /// The most specific name known for `class` (`base << 16 | sub << 8 | prog_if`, as in
    /// [`ConfigInfo::class`](crate::ConfigInfo::class)): the programming interface's, else the subclass's,
    /// else the base class's.
    pub fn class(&self, class: u32) -> Option<&str> {
        let (base, sub, prog) = self.class_names(class);
        prog.or(sub).or(base)
    }

    /// The subclass name for `class` (else the base class's), ignoring the programming interface, as
    /// lspci prints it (`PCI bridge`, not `Normal decode`).
    pub fn subclass(&self, class: u32) -> Option<&str> {
        let (base, sub, _) = self.class_names(class);
        sub.or(base)
    }

    /// The (vendor, device) IDs whose names, joined as lspci prints them without `-n` (`Vendor Device`),
    /// equal `text`; also `Vendor Device dddd` (a known vendor's unknown device) and `Device vvvv:dddd`.
    /// Several pairs can share one name: the caller decides what an ambiguous answer means.
    ///
    /// ```
    /// let ids = iommu_pci::PciIds::parse("8086  Intel Corporation\n\t10d3  82574L Gigabit Network Connection\n");
    /// assert_eq!(ids.ids_for_name("Intel Corporation 82574L Gigabit Network Connection"), [(0x8086, 0x10d3)]);
    /// assert_eq!(ids.ids_for_name("Intel Corporation Device 1234"), [(0x8086, 0x1234)]);
    /// assert!(ids.ids_for_name("Intel Corporation Something Else").is_empty());
    /// ```
    pub fn ids_for_name(&self, text: &str) -> Vec<(u16, u16)> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("Device ") {
            if let Some((v, tail)) = hex_prefix::<4>(rest) {
                if let Some((d, "")) = tail.strip_prefix(':').and_then(hex_prefix::<4>) {
                    return vec![(v, d)];
                }
            }
        }
        let mut out = Vec::new();
        for (vi, entry) in self.vendors.iter().enumerate() {
            let Some(device_name) = text.strip_prefix(self.name(entry.name)).and_then(|r| r.strip_prefix(' ')) else {
                continue;
            };
            if let Some((d, "")) = device_name.strip_prefix("Device ").and_then(hex_prefix::<4>) {
                out.push((entry.id, d));
                continue;
            }
            for &(d, at) in self.device_index(vi) {
                if self.line_name(at, 1 + 4) == Some(device_name) {
                    out.push((entry.id, d));
                }
            }
        }
        out
    }

    /// The class codes (`base << 16 | sub << 8`, programming interface 0) whose subclass name is `name`,
    /// or whose base class name is (lspci prints the base class name when the subclass has none).
    ///
    /// ```
    /// let ids = iommu_pci::PciIds::parse("C 06  Bridge\n\t04  PCI bridge\n");
    /// assert_eq!(ids.classes_for_name("PCI bridge"), [0x060400]);
    /// assert_eq!(ids.classes_for_name("Bridge"), [0x060000]);
    /// ```
    pub fn classes_for_name(&self, name: &str) -> Vec<u32> {
        let name = name.trim();
        let mut out = Vec::new();
        for entry in &self.classes {
            let base = u32::from(entry.id) << 16;
            if self.name(entry.name) == name {
                out.push(base);
            }
            for (_, line) in lines_from(&self.text, entry.block.0, entry.block.1) {
                let Some(rest) = line.strip_prefix('\t') else { continue };
                if rest.starts_with('\t') {
                    continue;
                }
                let Some((sub, tail)) = hex_prefix::<2>(rest) else { continue };
                if name_after(tail) == Some(name) {
                    out.push(base | u32::from(sub) << 8);
                }
            }
        }
        out
    }

    /// `Vendor Device [vvvv:dddd]`, e.g. `Intel Corporation 82574L Gigabit Network Connection [8086:10d3]`.
    ///
    /// An unknown device of a known vendor gives `Intel Corporation Device [8086:ffff]`; an unknown
    /// vendor gives `Device [1234:5678]`.
    pub fn describe(&self, v: u16, d: u16) -> String {
        match (self.vendor(v), self.device(v, d)) {
            (Some(vn), Some(dn)) => format!("{vn} {dn} [{v:04x}:{d:04x}]"),
            (Some(vn), None) => format!("{vn} Device [{v:04x}:{d:04x}]"),
            (None, _) => format!("Device [{v:04x}:{d:04x}]"),
        }
    }

    /// `Name [bbss]`, e.g. `Ethernet controller [0200]` for class `0x020000`: the subclass name (else the
    /// base class name, else `Class`) and the base class and subclass in hex. When the programming
    /// interface has a name, ` (prog-if pp [Name])` follows, e.g.
    /// `USB controller [0c03] (prog-if 30 [XHCI])`.
    pub fn describe_class(&self, class: u32) -> String {
        let [_, base, sub, prog_if] = class.to_be_bytes();
        let (base_name, sub_name, prog_name) = self.class_names(class);
        let name = sub_name.or(base_name).unwrap_or("Class");
        match prog_name {
            Some(p) => format!("{name} [{base:02x}{sub:02x}] (prog-if {prog_if:02x} [{p}])"),
            None => format!("{name} [{base:02x}{sub:02x}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# header comment

0001  SafeNet (wrong ID)
0010  Allied Telesis, Inc (Wrong ID)
# This is a relabelled RTL-8139
\t8139  AT-2500TX V3 Ethernet
8086  Intel Corporation
\t1000  82542 Gigabit Ethernet Controller (Fiber)
\t\t0e11 b0df  NC6132 Gigabit Ethernet Adapter (1000-SX)
\t\t8086 1000  PRO/1000 Gigabit Server Adapter
\t10d3  82574L Gigabit Network Connection
\t\t103c 1785  NC112i 1-port Ethernet Server Adapter
\t\t8086 0001  Gigabit CT2 Desktop Adapter
\t\t8086 a01f  Gigabit CT Desktop Adapter

\t1502  82579LM Gigabit Network Connection (Lewisville)
10de  NVIDIA Corporation
\t1db6  GV100GL [Tesla V100 PCIe 32GB]
C 00  Unclassified device
\t00  Non-VGA unclassified device
C 02  Network controller
\t00  Ethernet controller
\t80  Network controller
C 0c  Serial bus controller
\t03  USB controller
\t\t00  UHCI
\t\t30  XHCI
\t\tfe  USB Device
\t05  SMBus
";

    #[test]
    fn vendor_names_are_found_and_unknown_vendors_miss() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(ids.vendor(0x0001), Some("SafeNet (wrong ID)"));
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(ids.vendor(0x1234), None);
        assert_eq!(ids.vendor_count(), 4);
    }

    #[test]
    fn device_names_are_scoped_to_their_vendor() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.device(0x8086, 0x10d3), Some("82574L Gigabit Network Connection"));
        assert_eq!(ids.device(0x8086, 0x1502), Some("82579LM Gigabit Network Connection (Lewisville)"));
        assert_eq!(ids.device(0x0010, 0x8139), Some("AT-2500TX V3 Ethernet"));
        assert_eq!(ids.device(0x10de, 0x10d3), None);
        assert_eq!(ids.device(0x8086, 0x8139), None);
        assert_eq!(ids.device(0x1234, 0x10d3), None);
    }

    #[test]
    fn subsystem_names_are_scoped_to_their_device() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.subsystem(0x8086, 0x10d3, 0x8086, 0xa01f), Some("Gigabit CT Desktop Adapter"));
        assert_eq!(ids.subsystem(0x8086, 0x1000, 0x8086, 0x1000), Some("PRO/1000 Gigabit Server Adapter"));
        assert_eq!(ids.subsystem(0x8086, 0x1000, 0x8086, 0xa01f), None);
        assert_eq!(ids.subsystem(0x8086, 0x1502, 0x8086, 0xa01f), None);
        assert_eq!(ids.subsystem(0x1234, 0x1502, 0x8086, 0xa01f), None);
    }

    #[test]
    fn class_gives_the_most_specific_name() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.class(0x0c0330), Some("XHCI"));
        assert_eq!(ids.class(0x0c0310), Some("USB controller"));
        assert_eq!(ids.class(0x0c0500), Some("SMBus"));
        assert_eq!(ids.class(0x020000), Some("Ethernet controller"));
        assert_eq!(ids.class(0x027700), Some("Network controller"));
        assert_eq!(ids.class(0x0c0530), Some("SMBus"), "prog-ifs belong to their own subclass");
        assert_eq!(ids.class(0x030000), None);
    }

    #[test]
    fn describe_names_vendor_and_device_with_hex_ids() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.describe(0x8086, 0x10d3), "Intel Corporation 82574L Gigabit Network Connection [8086:10d3]");
        assert_eq!(ids.describe(0x8086, 0xffff), "Intel Corporation Device [8086:ffff]");
        assert_eq!(ids.describe(0x1234, 0xabcd), "Device [1234:abcd]");
        assert_eq!(PciIds::empty().describe(0x8086, 0x10d3), "Device [8086:10d3]");
    }

    #[test]
    fn describe_class_shows_subclass_name_and_prog_if() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.describe_class(0x020000), "Ethernet controller [0200]");
        assert_eq!(ids.describe_class(0x0c0330), "USB controller [0c03] (prog-if 30 [XHCI])");
        assert_eq!(ids.describe_class(0x027700), "Network controller [0277]");
        assert_eq!(ids.describe_class(0xff0000), "Class [ff00]");
    }

    #[test]
    fn empty_database_misses_everything() {
        let ids = PciIds::empty();
        assert!(ids.is_empty());
        assert_eq!(ids.vendor(0x8086), None);
        assert_eq!(ids.device(0x8086, 0x10d3), None);
        assert_eq!(ids.subsystem(0x8086, 0x10d3, 0x8086, 0xa01f), None);
        assert_eq!(ids.class(0x020000), None);
        assert_eq!(ids.describe_class(0x020000), "Class [0200]");
    }

    #[test]
    fn crlf_line_endings_and_uppercase_hex_are_accepted() {
        let ids = PciIds::parse("8086  Intel Corporation\r\n\t10D3  82574L\r\nC 02  Network\r\n\t00  Ethernet\r\n");
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(ids.device(0x8086, 0x10d3), Some("82574L"));
        assert_eq!(ids.class(0x020000), Some("Ethernet"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "\
80861  Too many digits
808  Too few
zzzz  Not hex
8086
abcd  Good vendor
\tzz12  bad device
\t1234
\t1234  Good device
\t\t1111 222  bad subsystem
\t\t1111 2222  Good subsystem
C 0  short class
C 02
C 03  Display
\t0  short subclass
\t00  VGA
";
        let ids = PciIds::parse(text);
        assert_eq!(ids.vendor_count(), 1);
        assert_eq!(ids.vendor(0x8086), None);
        assert_eq!(ids.device(0xabcd, 0x1234), Some("Good device"));
        assert_eq!(ids.subsystem(0xabcd, 0x1234, 0x1111, 0x2222), Some("Good subsystem"));
        assert_eq!(ids.class(0x020000), None);
        assert_eq!(ids.class(0x030000), Some("VGA"));
    }

    #[test]
    fn unrecognised_top_level_line_ends_the_block() {
        let ids = PciIds::parse("abcd  Vendor\n\t0001  One\nX 12  Something else\n\t0002  Two\n");
        assert_eq!(ids.device(0xabcd, 0x0001), Some("One"));
        assert_eq!(ids.device(0xabcd, 0x0002), None);
    }

    #[test]
    fn duplicates_and_unsorted_entries_keep_the_first_occurrence() {
        let ids = PciIds::parse("beef  Second\n\t0002  B\n\t0001  A\n\t0001  A again\nabcd  First\nbeef  Again\n");
        assert_eq!(ids.vendor(0xbeef), Some("Second"));
        assert_eq!(ids.vendor(0xabcd), Some("First"));
        assert_eq!(ids.device(0xbeef, 0x0001), Some("A"));
        assert_eq!(ids.device(0xbeef, 0x0002), Some("B"));
    }

    #[test]
    fn text_without_trailing_newline_parses() {
        let ids = PciIds::parse("abcd  Vendor\n\t0001  One");
        assert_eq!(ids.device(0xabcd, 0x0001), Some("One"));
        let ids = PciIds::parse("abcd  Vendor");
        assert_eq!(ids.vendor(0xabcd), Some("Vendor"));
        assert_eq!(ids.device(0xabcd, 0x0001), None);
    }

    #[test]
    fn non_ascii_names_survive() {
        let ids = PciIds::parse("1234  Ünïcødé GmbH\n\tabcd  Gerät ✓\n");
        assert_eq!(ids.vendor(0x1234), Some("Ünïcødé GmbH"));
        assert_eq!(ids.device(0x1234, 0xabcd), Some("Gerät ✓"));
    }

    #[test]
    fn load_system_tries_the_paths_in_order() {
        let dir = std::env::temp_dir().join(format!("iommu-pci-ids-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(PciIds::load_system(&dir).is_none());
        std::fs::create_dir_all(dir.join("usr/share/hwdata")).unwrap();
        std::fs::write(dir.join("usr/share/hwdata/pci.ids"), "abcd  Hwdata\n").unwrap();
        std::fs::write(dir.join("usr/share/pci.ids"), "abcd  Plain\n").unwrap();
        assert_eq!(PciIds::load_system(&dir).unwrap().vendor(0xabcd), Some("Hwdata"));
        std::fs::create_dir_all(dir.join("usr/share/misc")).unwrap();
        std::fs::write(dir.join("usr/share/misc/pci.ids"), "# empty\n").unwrap();
        assert_eq!(PciIds::load_system(&dir).unwrap().vendor(0xabcd), Some("Hwdata"), "empty file skipped");
        std::fs::write(dir.join("usr/share/misc/pci.ids"), b"abcd  Misc \xff\n").unwrap();
        assert_eq!(PciIds::load_system(&dir).unwrap().vendor(0xabcd), Some("Misc \u{fffd}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
