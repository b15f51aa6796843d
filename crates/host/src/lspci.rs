//! Reading `lspci` output into a [`Snapshot`], so the read-only commands, `predict` above all, run on
//! output saved on another machine: the hex dump (`lspci -x`, `-xxx` or `-xxxx`, with or without `-D`)
//! and the decoded text (`lspci -v`, `-vv` or `-vvv`, with or without `-nn`, `-D`, `-k`, `-q`).
//!
//! Output is a sequence of blocks: an address line `[DDDD:]BB:DD.F <text>`, then hex lines
//! `off: xx xx ... xx` (16 bytes each, offsets 0, 0x10, ... in order) and/or `-v` detail lines. Other
//! lines (a shell prompt, `lspci: Unable to load libkmod resources`) are skipped. CRLF line ends and a
//! byte-order mark are accepted. Malformed hex lines are errors that name the line.
//!
//! Which kind a block is, is decided per function: with hex lines its config space is the dump's (the
//! hex bytes win over the text); with text only, a config space is rebuilt from the decoded facts (IDs,
//! class, bridge buses, PCIe port type, ACS capability and control, ARI, SR-IOV; see `text.rs`) and
//! nothing else. What the text does not say stays unknown: without `-vv` lines, or with `Capabilities:
//! <access denied>` (lspci run without root), the rebuilt config space is the 64-byte header only, which
//! makes ACS unknown and the function uncertain, with the reason in [`LspciDump::incomplete`] and the
//! warnings.
//!
//! What the dump does not say is derived or inferred:
//! - **Tree.** A function's parent is the bridge (type-1 or CardBus header) in the same domain whose
//!   secondary bus number equals the function's bus, counted only when the secondary bus is above the
//!   bridge's own bus (Linux renumbers bridges that break this, so a running kernel never shows one).
//!   Functions on a bus no bridge claims sit on a root bus.
//! - **SR-IOV virtual functions.** A physical function with a full (4096-byte) dump, VF Enable set and
//!   NumVFs > 0 has VFs at routing IDs `PF + First VF Offset + i * VF Stride`; those present in the dump
//!   are marked as virtual functions of it, placed under the PF's parent bridge (as the kernel does),
//!   and, when their vendor ID reads as all ones, given the PF's vendor and the VF device ID.
//!   With 64 or 256 bytes the SR-IOV capability is not in the dump and VFs look like ordinary functions.
//! - **Platform.** An AMD IOMMU PCI function (vendor 0x1022, class 0x0806) means AMD-Vi, so `IVRS` is
//!   put into [`Snapshot::acpi_tables`]. That is an inference: the ACPI table is not in the dump.
//!   The kernel command line (`pci=disable_acs_redir=`, `pci=config_acs=`) is unknown.
//! - **Groups.** The `IOMMU group: N` lines of `lspci -v` (pciutils 3.6 and later; `IOMMU group N` in the
//!   `Flags:` line of older output) are the groups the kernel of that machine formed: they become
//!   [`Snapshot::groups`] and each function's group ([`LspciDump::has_kernel_groups`]). A hex-only dump
//!   has none, and [`Snapshot::groups`] is empty.
//!
//! ```
//! let dump = "00:1f.0 ISA bridge: Intel Corporation 82801IB (ICH9) LPC Interface Controller (rev 02)\n\
//! 00: 86 80 18 29 03 01 00 00 02 00 01 06 00 00 80 00\n\
//! 10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n\
//! 20: 00 00 00 00 00 00 00 00 00 00 00 00 f4 1a 00 11\n\
//! 30: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n";
//! let d = iommu_host::LspciDump::parse(dump).unwrap();
//! assert_eq!(d.snapshot.devices.len(), 1);
//! assert_eq!(d.short_header, 1); // only 64 bytes: ACS unknown
//! ```
//!
//! The same from `sudo lspci -vvnn` text, with the kernel's group:
//!
//! ```
//! let text = "00:1c.0 PCI bridge [0604]: Intel Corporation Device [8086:a0b8] (rev 20) (prog-if 00 [Normal decode])\n\
//! \tIOMMU group: 14\n\
//! \tBus: primary=00, secondary=72, subordinate=72, sec-latency=0\n\
//! \tCapabilities: [40] Express (v2) Root Port (Slot+), MSI 00\n\
//! \tCapabilities: [220 v1] Access Control Services\n\
//! \t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-\n\
//! \t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-\n\
//! \tKernel driver in use: pcieport\n\
//! \n";
//! let d = iommu_host::LspciDump::parse(text).unwrap();
//! assert_eq!(d.from_text, 1);
//! assert!(d.incomplete.is_empty()); // everything grouping needs was in the text
//! assert!(d.has_kernel_groups());
//! assert_eq!(d.snapshot.devices[0].iommu_group, Some(14));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use iommu_groups::quirks::{acs_quirks_for, AcsQuirkKind};
use iommu_pci::{AcsState, ConfigInfo, PciAddress, PciIds};

use crate::snapshot::{HostDevice, KernelGroup, KernelInfo, Snapshot, FORMAT, VERSION};

mod text;

/// Config-space lengths lspci prints: `-x` (64; 128 for a CardBus bridge), `-xxx` (256) and `-xxxx`
/// (4096 where the kernel lets it read extended space, else 256).
pub const DUMP_LENGTHS: [usize; 4] = [64, 128, 256, 4096];

/// The longest line text quoted in an error.
const QUOTE_MAX: usize = 100;

/// Why an lspci dump could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LspciError {
    /// The file could not be read (missing, not a regular file, over the size limit).
    #[error("cannot read lspci dump {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: iommu_fsio::FsError,
    },
    /// A line that starts like config bytes (`off:`) is malformed, or is not where it should be.
    #[error("line {line}: {reason}: {text:?}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
        /// The line (cut to 100 characters).
        text: String,
    },
    /// A function's block ended with a byte count lspci does not print.
    #[error(
        "line {line}: {address} has {len} bytes of config space; lspci prints 64, 128, 256 or 4096 \
         (is the dump cut short?)"
    )]
    Length {
        /// Line of the function's address.
        line: usize,
        /// The function.
        address: PciAddress,
        /// Bytes found.
        len: usize,
    },
    /// A function's address line is followed by no config bytes, and no function has `-v` detail.
    #[error(
        "line {line}: {address} has no config bytes and the input no `-v` detail (run `sudo lspci -vvnn` or \
         `sudo lspci -xxxx`): {text:?}"
    )]
    NoBytes {
        /// Line of the function's address.
        line: usize,
        /// The function.
        address: PciAddress,
        /// The address line (cut to 100 characters).
        text: String,
    },
    /// The same address appears twice.
    #[error("line {line}: {address} appears twice (first on line {first}): {text:?}")]
    Duplicate {
        /// The second occurrence.
        line: usize,
        /// The first occurrence.
        first: usize,
        /// The function.
        address: PciAddress,
        /// The second address line (cut to 100 characters).
        text: String,
    },
    /// Nothing in the input looked like a PCI function.
    #[error(
        "no PCI functions found; expected `lspci -xxxx` output: an address line such as \
         `00:1f.0 ISA bridge: ...` followed by lines such as `00: 86 80 18 29 ...`"
    )]
    NoDevices,
}

/// A parsed dump: the snapshot and what the parser had to say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LspciDump {
    /// Functions with their config bytes and derived tree; no groups, drivers or kernel facts.
    pub snapshot: Snapshot,
    /// Functions with only the 64-byte header (128 for CardBus): `lspci -x`, or not run as root. Their
    /// capabilities, PCIe type and ACS are unknown.
    pub short_header: usize,
    /// PCI Express functions with 256 bytes (`lspci -xxx`): their ACS capability, in extended config
    /// space, is unknown.
    pub short_pcie: usize,
    /// Functions marked as SR-IOV virtual functions, with their physical functions.
    pub virtfns: Vec<(PciAddress, PciAddress)>,
    /// The AMD IOMMU function that made the parser add `IVRS` to the ACPI tables.
    pub amd_iommu: Option<PciAddress>,
    /// Oddities worth telling the user (e.g. two bridges claiming one bus).
    pub notes: Vec<String>,
    /// Functions decoded from `-v` text (no hex bytes), their config space rebuilt from it.
    pub from_text: usize,
    /// Functions whose text says `Capabilities: <access denied>` (lspci not run as root).
    pub access_denied: usize,
    /// Text functions whose grouping facts are partly unknown, with the reason (one entry per reason).
    pub incomplete: Vec<(PciAddress, String)>,
    /// Text functions that are Intel SPT-style root ports, whose ACS control register lspci does not print.
    pub spt_ports: Vec<PciAddress>,
    /// In a paste with `IOMMU group:` lines, the functions whose block is cut before showing one: their
    /// kernel group is unknown (not "no group"), so they cannot be compared with the kernel.
    pub group_unknown: Vec<PciAddress>,
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn line_err(line: usize, text: &str, reason: impl Into<String>) -> LspciError {
    LspciError::Line { line, reason: reason.into(), text: quote(text) }
}

/// One function while its block is being read.
struct Block<'a> {
    line: usize,
    text: String,
    /// The address line's text after the address.
    rest: &'a str,
    address: PciAddress,
    config: Vec<u8>,
    /// Every other line up to the next address line: `-v` detail, blank lines, stray text.
    detail: Vec<&'a str>,
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The offset of a hex line (`off:` with 2 or 3 lowercase hex digits, as lspci prints it), or `None`
/// when the first token is something else.
fn hex_offset(token: &str) -> Option<usize> {
    let digits = token.strip_suffix(':')?;
    if !(2..=3).contains(&digits.len()) || !digits.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
}

/// A hex line in lspci's exact layout (`off:` with 2 or 3 lowercase digits, then 16 times ` xx`, nothing
/// else): its offset and bytes. Anything else goes through the general, error-reporting path.
fn canonical_hex_line(line: &[u8]) -> Option<(usize, [u8; 16])> {
    let digits = line.len().checked_sub(1 + 48)?;
    if !(2..=3).contains(&digits) || line[digits] != b':' {
        return None;
    }
    let mut off = 0usize;
    for &c in &line[..digits] {
        if c.is_ascii_uppercase() {
            return None;
        }
        off = off << 4 | usize::from(hex_digit(c)?);
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let p = digits + 1 + 3 * i;
        if line[p] != b' ' {
            return None;
        }
        *o = hex_digit(line[p + 1])? << 4 | hex_digit(line[p + 2])?;
    }
    Some((off, out))
}

/// Appends the 16 bytes of a hex line's data part (after `off:`) to `out`.
fn hex_bytes(rest: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut n = 0;
    for tok in rest.split_ascii_whitespace() {
        let b = tok.as_bytes();
        let byte = match b {
            [h, l] => hex_digit(*h).zip(hex_digit(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        let Some(byte) = byte else {
            return Err(format!("{tok:?} is not a byte (two hex digits)"));
        };
        n += 1;
        if n > 16 {
            return Err("more than 16 bytes on one line".into());
        }
        out.push(byte);
    }
    if n < 16 {
        return Err(format!("expected 16 bytes, found {n} (line cut short?)"));
    }
    Ok(())
}

/// The address at the start of an address line, if the line is one.
fn address_line(token: &str) -> Option<PciAddress> {
    // `BB:DD.F` or `DDDD:BB:DD.F`: a colon and a dot, nothing else.
    if !token.contains(':') || !token.contains('.') {
        return None;
    }
    PciAddress::parse(token).ok()
}

impl LspciDump {
    /// Reads a dump file (`-` reads standard input), at most [`iommu_fsio::Limit::INPUT`] bytes.
    pub fn load(path: &Path) -> Result<Self, LspciError> {
        let bytes = iommu_fsio::read_input(path, iommu_fsio::Limit::INPUT)
            .map_err(|source| LspciError::Read { path: path.to_path_buf(), source })?;
        Self::parse_bytes(&bytes)
    }

    /// Parses a dump given as bytes (invalid UTF-8 in names is replaced; hex lines are ASCII).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, LspciError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(_) => Self::parse(&String::from_utf8_lossy(bytes)),
        }
    }

    /// Reads a dump file like [`LspciDump::load`], naming IDs from `ids` where the text has names only.
    pub fn load_with_ids(path: &Path, ids: &PciIds) -> Result<Self, LspciError> {
        let bytes = iommu_fsio::read_input(path, iommu_fsio::Limit::INPUT)
            .map_err(|source| LspciError::Read { path: path.to_path_buf(), source })?;
        let text = String::from_utf8_lossy(&bytes);
        Self::parse_with_ids(&text, Some(ids))
    }

    /// Parses `lspci -x`/`-xxx`/`-xxxx` hex dumps and `lspci -v`/`-vv`/`-vvv` text (see the module
    /// documentation for the rules). Without `-n`, IDs stay unknown: see [`LspciDump::parse_with_ids`].
    pub fn parse(text: &str) -> Result<Self, LspciError> {
        Self::parse_with_ids(text, None)
    }

    /// Parses like [`LspciDump::parse`]; where an address line has names but no `[vvvv:dddd]` (lspci
    /// without `-nn`), the IDs are those `ids` gives that name, when exactly one pair has it.
    pub fn parse_with_ids(text: &str, ids: Option<&PciIds>) -> Result<Self, LspciError> {
        let blocks = read_blocks(text)?;
        Ok(build(decode(blocks, ids)))
    }

    /// Whether the text carried the kernel's IOMMU groups (`IOMMU group:` lines, pciutils 3.6 and later):
    /// then [`Snapshot::groups`] holds them and the dump answers like a snapshot of that machine.
    pub fn has_kernel_groups(&self) -> bool {
        !self.snapshot.groups.is_empty()
    }

    /// Warnings for the user about what the dump cannot tell, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.short_header > 0 {
            w.push(format!(
                "config space truncated to 64 bytes; run lspci -xxxx as root ({} of {} functions have only \
                 the header: their PCIe type and ACS are unknown)",
                self.short_header,
                self.snapshot.devices.len()
            ));
        }
        if self.short_pcie > 0 {
            w.push(format!(
                "config space truncated to 256 bytes; run lspci -xxxx as root ({} PCI Express functions: their \
                 ACS capability lies in extended config space and is unknown)",
                self.short_pcie
            ));
        }
        if self.access_denied > 0 {
            w.push(format!(
                "{} functions show `Capabilities: <access denied>`: lspci ran without root, so their PCIe type and \
                 ACS are unknown; re-run it as `sudo lspci -vvnn`",
                self.access_denied
            ));
        }
        // One line per reason, naming the functions (at most 8, then a count).
        let mut by_reason: BTreeMap<&str, Vec<PciAddress>> = BTreeMap::new();
        for (a, why) in &self.incomplete {
            if !why.contains("access denied") {
                by_reason.entry(why.as_str()).or_default().push(*a);
            }
        }
        for (why, addrs) in by_reason {
            let mut names: Vec<String> = addrs.iter().take(8).map(|a| a.to_string()).collect();
            if addrs.len() > 8 {
                names.push(format!("and {} more", addrs.len() - 8));
            }
            w.push(format!("{why}: {}", names.join(", ")));
        }
        if !self.group_unknown.is_empty() {
            let mut names: Vec<String> = self.group_unknown.iter().take(8).map(|a| a.to_string()).collect();
            if self.group_unknown.len() > 8 {
                names.push(format!("and {} more", self.group_unknown.len() - 8));
            }
            w.push(format!(
                "the paste is cut before the `IOMMU group:` line of {}: their kernel group is unknown",
                names.join(", ")
            ));
        }
        w.extend(self.notes.iter().cloned());
        w
    }

    /// Facts inferred rather than read, one sentence each.
    pub fn inferences(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(a) = self.amd_iommu {
            v.push(format!("{a} is an AMD IOMMU: assuming an AMD-Vi platform (ACPI IVRS table present)"));
        }
        if !self.virtfns.is_empty() {
            v.push(format!(
                "{} SR-IOV virtual functions found from their physical functions' SR-IOV capability",
                self.virtfns.len()
            ));
        }
        if self.from_text > 0 {
            v.push(format!(
                "{} functions decoded from lspci's text: their config space is rebuilt from what the text says \
                 (multifunction from the other functions of each slot)",
                self.from_text
            ));
        }
        if !self.spt_ports.is_empty() {
            v.push(format!(
                "{} Intel SPT-style root ports keep their ACS control in a register lspci does not print; the \
                 kernel's enabling of it is assumed",
                self.spt_ports.len()
            ));
        }
        v
    }
}

/// One function ready for the snapshot: its config bytes (read or rebuilt) and the kernel facts the text
/// gave.
struct Function {
    address: PciAddress,
    config: Vec<u8>,
    /// Bytes rebuilt from decoded text rather than read from a hex dump.
    from_text: bool,
    driver: Option<String>,
    group: Option<u32>,
    /// Why facts are unknown (text functions only).
    unknown: Vec<&'static str>,
    denied: bool,
    /// The block ends as lspci ends one (always so for hex bytes, which lspci prints after the text).
    ended: bool,
}

/// Decodes every block: hex bytes where the dump has them (they win), else a config space rebuilt from
/// the `-v` text.
fn decode(blocks: Vec<Block<'_>>, ids: Option<&PciIds>) -> Vec<Function> {
    let facts: Vec<text::Facts> = blocks
        .iter()
        .map(|b| {
            let mut f = text::Facts::default();
            if b.config.is_empty() {
                text::address_line(b.rest, ids, &mut f);
            }
            text::detail_lines(b.detail.iter().copied(), &mut f);
            f
        })
        .collect();
    let extended_readable = facts.iter().any(|f| f.ext_listed);
    // Slots (domain, bus, device) with more than one function.
    let mut per_slot: HashMap<(u32, u8, u8), usize> = HashMap::new();
    for b in &blocks {
        *per_slot.entry((b.address.domain, b.address.bus, b.address.device)).or_default() += 1;
    }
    blocks
        .into_iter()
        .zip(facts)
        .map(|(b, f)| {
            let a = b.address;
            let ended = f.ended || !b.config.is_empty();
            let (config, unknown, from_text) = if b.config.is_empty() {
                let siblings = a.function == 0 && per_slot.get(&(a.domain, a.bus, a.device)).is_some_and(|&n| n > 1);
                let s = text::synthesize(&f, text::Context { extended_readable, siblings });
                (s.config, s.unknown, true)
            } else {
                (b.config, Vec::new(), false)
            };
            Function {
                address: a,
                config,
                from_text,
                driver: f.driver,
                group: f.group,
                unknown,
                denied: f.denied,
                ended,
            }
        })
        .collect()
}

/// Splits the text into function blocks, checking every hex line.
fn read_blocks(text: &str) -> Result<Vec<Block<'_>>, LspciError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut blocks: Vec<Block> = Vec::new();
    let mut seen: HashMap<PciAddress, usize> = HashMap::new();
    // The newline ending the last line opens no line of its own (a blank line is one between two newlines).
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (i, raw) in body.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        // Fast path for the bulk of a dump: a hex line exactly as lspci prints it, at the expected offset.
        if let (Some(b), Some((off, bytes))) = (blocks.last_mut(), canonical_hex_line(line.as_bytes())) {
            if off == b.config.len() && off < 4096 {
                b.config.extend_from_slice(&bytes);
                continue;
            }
        }
        let t = line.trim_start_matches([' ', '\t']);
        let (token, rest) = t.split_once([' ', '\t']).unwrap_or((t, ""));
        if token.is_empty() {
            if let Some(b) = blocks.last_mut() {
                b.detail.push(line);
            }
            continue;
        }
        if let Some(off) = hex_offset(token) {
            let Some(b) = blocks.last_mut() else {
                return Err(line_err(line_no, line, "config bytes before any device address line"));
            };
            if off != b.config.len() {
                return Err(line_err(
                    line_no,
                    line,
                    format!("offset {off:#x} out of order for {}: expected {:#x}", b.address, b.config.len()),
                ));
            }
            if off >= 4096 {
                return Err(line_err(line_no, line, "offset beyond the 4096 bytes of config space"));
            }
            hex_bytes(rest, &mut b.config).map_err(|reason| line_err(line_no, line, reason))?;
            continue;
        }
        let Some(address) = address_line(token) else {
            // -v detail (decoded later), a prompt, a warning: kept with the function it follows.
            if let Some(b) = blocks.last_mut() {
                b.detail.push(line);
            }
            continue;
        };
        if let Some(&first) = seen.get(&address) {
            return Err(LspciError::Duplicate { line: line_no, first, address, text: quote(line) });
        }
        seen.insert(address, line_no);
        if let Some(prev) = blocks.last() {
            check_length(prev)?;
        }
        blocks.push(Block { line: line_no, text: quote(line), rest, address, config: Vec::new(), detail: Vec::new() });
    }
    match blocks.last() {
        Some(b) => check_length(b)?,
        None => return Err(LspciError::NoDevices),
    }
    // Text is accepted where some function has `-v` detail; a bare address line in a hex dump is an error.
    let any_detail = blocks.iter().any(|b| b.detail.iter().any(|l| !l.trim().is_empty()));
    if !any_detail {
        if let Some(b) = blocks.iter().find(|b| b.config.is_empty()) {
            return Err(LspciError::NoBytes { line: b.line, address: b.address, text: b.text.clone() });
        }
    }
    Ok(blocks)
}

/// A function with hex bytes must have as many as lspci prints.
fn check_length(b: &Block) -> Result<(), LspciError> {
    if !b.config.is_empty() && !DUMP_LENGTHS.contains(&b.config.len()) {
        return Err(LspciError::Length { line: b.line, address: b.address, len: b.config.len() });
    }
    Ok(())
}

/// Whether the raw config bytes are those of a bridge (type 1) or CardBus bridge (type 2), and its
/// secondary bus.
fn secondary_bus(config: &[u8]) -> Option<u8> {
    let vendor = u16::from_le_bytes([config[0], config[1]]);
    (vendor != 0xffff && matches!(config[0x0e] & 0x7f, 1 | 2)).then_some(config[0x19])
}

/// Whether config bytes are an AMD IOMMU's own function (vendor 1022, class 0806).
pub(crate) fn is_amd_iommu(config: &[u8]) -> bool {
    config.get(..2) == Some(&[0x22, 0x10][..]) && config.get(0x0b) == Some(&0x08) && config.get(0x0a) == Some(&0x06)
}

/// Builds the snapshot from decoded functions: tree, virtual functions, platform facts, kernel groups.
fn build(mut funcs: Vec<Function>) -> LspciDump {
    funcs.sort_by_key(|f| f.address);
    let mut notes = Vec::new();
    let from_text = funcs.iter().filter(|f| f.from_text).count();
    let access_denied = funcs.iter().filter(|f| f.denied).count();
    let incomplete: Vec<(PciAddress, String)> =
        funcs.iter().flat_map(|f| f.unknown.iter().map(|u| (f.address, u.to_string()))).collect();
    let hex_len: HashMap<PciAddress, bool> = funcs.iter().map(|f| (f.address, !f.from_text)).collect();
    let mut groups: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
    for f in &funcs {
        if let Some(g) = f.group {
            groups.entry(g).or_default().push(f.address);
        }
    }
    let group_unknown: Vec<PciAddress> = if groups.is_empty() {
        Vec::new()
    } else {
        funcs.iter().filter(|f| f.group.is_none() && !f.ended).map(|f| f.address).collect()
    };
    let mut devices: Vec<HostDevice> = funcs
        .into_iter()
        .map(|f| {
            let mut d = HostDevice::new(f.address);
            d.config = f.config;
            d.config_from_text = f.from_text;
            d.driver = f.driver;
            d.iommu_group = f.group;
            d
        })
        .collect();
    // Virtual functions first: a VF never forwards to a bus of its own (whatever header type its bytes
    // claim), and it hangs below its PF's parent, so VFs take no part in bus claims.
    let virtfns = mark_virtfns(&mut devices);
    // (domain, secondary bus) -> bridge, first bridge in address order wins.
    let mut claims: BTreeMap<(u32, u8), PciAddress> = BTreeMap::new();
    for d in devices.iter().filter(|d| d.physfn.is_none()) {
        let Some(sec) = secondary_bus(&d.config) else { continue };
        if sec <= d.address.bus {
            continue;
        }
        if let Some(first) = claims.get(&(d.address.domain, sec)) {
            notes.push(format!(
                "bridges {first} and {} both claim bus {sec:02x}; functions there are placed below {first}",
                d.address
            ));
            continue;
        }
        claims.insert((d.address.domain, sec), d.address);
    }
    // Each bridge claims only buses above its own, so parents of non-VFs strictly descend in bus number;
    // a VF takes its PF's parent. No cycle can form.
    for d in devices.iter_mut().filter(|d| d.physfn.is_none()) {
        d.parent = claims.get(&(d.address.domain, d.address.bus)).copied();
    }
    for (vf, pf) in &virtfns {
        let parent = claims.get(&(pf.domain, pf.bus)).copied();
        if let Ok(i) = devices.binary_search_by_key(vf, |d| d.address) {
            devices[i].parent = parent;
        }
    }
    let amd_iommu = devices.iter().find(|d| is_amd_iommu(&d.config)).map(|d| d.address);
    let mut short_header = 0;
    let mut short_pcie = 0;
    for d in devices.iter().filter(|d| hex_len.get(&d.address) == Some(&true)) {
        if d.config.len() < 256 {
            short_header += 1;
        } else if d.config.len() < 4096 && ConfigInfo::parse(&d.config).is_ok_and(|c| c.pcie.is_some()) {
            short_pcie += 1;
        }
    }
    let spt_ports: Vec<PciAddress> = devices
        .iter()
        .filter(|d| hex_len.get(&d.address) == Some(&false))
        .filter_map(|d| {
            let c = ConfigInfo::parse(&d.config).ok()?;
            let spt = acs_quirks_for(c.vendor_id, c.device_id).any(|q| matches!(q.kind, AcsQuirkKind::IntelSpt));
            (spt && matches!(c.acs, AcsState::Present(_))).then_some(d.address)
        })
        .collect();
    let groups = groups
        .into_iter()
        .map(|(id, devices)| KernelGroup { id, kind: None, reserved_regions: Vec::new(), devices })
        .collect();
    let mut snapshot = Snapshot {
        format: FORMAT.to_string(),
        version: VERSION,
        kernel: KernelInfo::default(),
        iommu_units: Vec::new(),
        acpi_tables: amd_iommu.map(|_| vec!["IVRS".to_string()]).unwrap_or_default(),
        groups,
        devices,
        readiness: None,
        unreadable: Vec::new(),
        firmware: None,
    };
    // A listing has no sysfs tree to show which VMD controller a domain above 0xffff sits behind: pair
    // them by count and order (see `iommu_groups::vmd::pair_domains`), or say why not.
    if let Some(why) = snapshot.pair_vmd_domains() {
        notes.push(why);
    }
    LspciDump {
        snapshot,
        short_header,
        short_pcie,
        virtfns,
        amd_iommu,
        notes,
        from_text,
        access_denied,
        incomplete,
        spt_ports,
        group_unknown,
    }
}

/// Finds SR-IOV virtual functions from their physical functions' capabilities and marks them (`physfn`,
/// IDs); their parents are set by the caller. `devices` is sorted.
fn mark_virtfns(devices: &mut [HostDevice]) -> Vec<(PciAddress, PciAddress)> {
    let mut found = Vec::new();
    for pf in 0..devices.len() {
        let Ok(cfg) = ConfigInfo::parse(&devices[pf].config) else { continue };
        let Some(sriov) = cfg.sriov else { continue };
        let ctrl_at = usize::from(sriov.offset) + 8;
        let enabled = devices[pf].config.get(ctrl_at).is_some_and(|c| c & 1 != 0);
        if !enabled || sriov.num_vfs == 0 {
            continue;
        }
        let pf_addr = devices[pf].address;
        let pf_vendor = cfg.vendor_id;
        // u64: no overflow whatever offset, stride and count a hostile dump claims.
        let base = u64::from(pf_addr.requester_id()) + u64::from(sriov.first_vf_offset);
        for i in 0..u64::from(sriov.num_vfs) {
            let rid = base + i * u64::from(sriov.vf_stride);
            if rid > 0xffff || (i > 0 && sriov.vf_stride == 0) {
                break;
            }
            let vf_addr = PciAddress::new(pf_addr.domain, (rid >> 8) as u8, ((rid >> 3) & 0x1f) as u8, (rid & 7) as u8);
            let Some(vf_addr) = vf_addr.filter(|a| *a != pf_addr) else { continue };
            let Ok(v) = devices.binary_search_by_key(&vf_addr, |d| d.address) else { continue };
            let vf = &mut devices[v];
            if vf.physfn.is_some() {
                continue;
            }
            vf.physfn = Some(pf_addr);
            // A VF's own vendor and device ID registers read as all ones; the kernel knows them from the PF.
            if vf.config[0..2] == [0xff, 0xff] {
                vf.config[0..2].copy_from_slice(&pf_vendor.to_le_bytes());
                vf.config[2..4].copy_from_slice(&sriov.vf_device_id.to_le_bytes());
            }
            found.push((vf_addr, pf_addr));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hex dump of `config` as lspci prints it.
    fn hex(config: &[u8]) -> String {
        let mut s = String::new();
        for (i, chunk) in config.chunks(16).enumerate() {
            s.push_str(&format!("{:02x}:", i * 16));
            for b in chunk {
                s.push_str(&format!(" {b:02x}"));
            }
            s.push('\n');
        }
        s
    }

    fn endpoint(vendor: u16, device: u16, len: usize) -> Vec<u8> {
        let mut c = vec![0u8; len];
        c[0..2].copy_from_slice(&vendor.to_le_bytes());
        c[2..4].copy_from_slice(&device.to_le_bytes());
        c
    }

    fn bridge(secondary: u8, len: usize) -> Vec<u8> {
        let mut c = endpoint(0x1b36, 0x000c, len);
        c[0x0e] = 1;
        c[0x0b] = 0x06;
        c[0x0a] = 0x04;
        c[0x19] = secondary;
        c[0x1a] = secondary;
        c
    }

    fn dump(funcs: &[(&str, &[u8])]) -> String {
        funcs.iter().map(|(a, c)| format!("{a} Some device\n{}\n", hex(c))).collect()
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn a_function_below_a_bridge_gets_it_as_parent_and_others_sit_on_the_root_bus() {
        let text =
            dump(&[("00:01.0", &bridge(1, 256)), ("01:00.0", &endpoint(1, 2, 256)), ("00:02.0", &endpoint(3, 4, 256))]);
        let d = LspciDump::parse(&text).unwrap();
        let s = &d.snapshot;
        assert_eq!(s.device(addr("01:00.0")).unwrap().parent, Some(addr("00:01.0")));
        assert_eq!(s.device(addr("00:01.0")).unwrap().parent, None);
        assert_eq!(s.device(addr("00:02.0")).unwrap().parent, None);
        assert!(s.groups.is_empty());
        assert!(s.acpi_tables.is_empty());
    }

    #[test]
    fn with_and_without_domain_give_the_same_snapshot() {
        let funcs: [(&str, &[u8]); 2] = [("00:01.0", &bridge(1, 64)), ("01:00.0", &endpoint(1, 2, 64))];
        let short = LspciDump::parse(&dump(&funcs)).unwrap();
        let long = LspciDump::parse(&dump(&[("0000:00:01.0", funcs[0].1), ("0000:01:00.0", funcs[1].1)])).unwrap();
        assert_eq!(short, long);
        assert_eq!(short.short_header, 2);
    }

    #[test]
    fn other_domains_keep_their_own_buses() {
        let text = dump(&[("0001:00:01.0", &bridge(1, 64)), ("0000:01:00.0", &endpoint(1, 2, 64))]);
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.snapshot.device(addr("0000:01:00.0")).unwrap().parent, None);
    }

    #[test]
    fn a_bridge_whose_secondary_bus_is_not_above_its_own_claims_nothing() {
        let text = dump(&[("00:01.0", &bridge(0, 64)), ("00:02.0", &endpoint(1, 2, 64))]);
        let d = LspciDump::parse(&text).unwrap();
        assert!(d.snapshot.devices.iter().all(|x| x.parent.is_none()));
    }

    #[test]
    fn crlf_verbose_lines_prompts_and_trailing_junk_are_tolerated() {
        let c = endpoint(0x8086, 0x29c0, 64);
        let text = format!(
            "\u{feff}$ sudo lspci -xxxx -nnv\r\nlspci: Unable to load libkmod resources: error -2\r\n\
             00:00.0 Host bridge [0600]: Intel Corporation 82G33 [8086:29c0]\r\n\
             \tSubsystem: Red Hat, Inc. QEMU Virtual Machine [1af4:1100]\r\n\tFlags: fast devsel, IOMMU group 0\r\n{}\r\n$ exit\r\n",
            hex(&c).replace('\n', "\r\n")
        );
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.snapshot.devices.len(), 1);
        assert_eq!(d.snapshot.devices[0].config, c);
    }

    #[test]
    fn the_fast_path_takes_only_lspcis_exact_layout() {
        let ok = "10: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff";
        let (off, b) = canonical_hex_line(ok.as_bytes()).unwrap();
        assert_eq!((off, b[15]), (0x10, 0xff));
        assert_eq!(canonical_hex_line(b"100: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff").unwrap().0, 0x100);
        for bad in [
            "10: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee f",
            "10: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee fg",
            "1A: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
            "10:  0 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
            "1:  00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
            "10: 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff ",
        ] {
            assert_eq!(canonical_hex_line(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn upper_case_and_extra_spaces_still_parse_through_the_general_path() {
        let c = endpoint(0xabcd, 0x1234, 64);
        let text = format!("00:01.0 x\n{}", hex(&c).replace(' ', "  ").replace("ab", "AB"));
        assert_eq!(LspciDump::parse(&text).unwrap().snapshot.devices[0].config, c);
    }

    #[test]
    fn invalid_utf8_in_names_is_tolerated() {
        let mut bytes = b"00:01.0 Caf\xe9 device\n".to_vec();
        bytes.extend_from_slice(hex(&endpoint(1, 2, 64)).as_bytes());
        assert_eq!(LspciDump::parse_bytes(&bytes).unwrap().snapshot.devices.len(), 1);
    }

    #[test]
    fn no_devices_is_an_error() {
        assert!(matches!(LspciDump::parse(""), Err(LspciError::NoDevices)));
        assert!(matches!(LspciDump::parse("hello\nworld\n"), Err(LspciError::NoDevices)));
    }

    #[test]
    fn an_address_line_without_bytes_is_an_error_naming_it() {
        let e = LspciDump::parse("00:00.0 Host bridge\n00:01.0 VGA\n").unwrap_err();
        assert!(matches!(e, LspciError::NoBytes { line: 1, .. }), "{e}");
    }

    #[test]
    fn duplicate_addresses_name_both_lines() {
        let c = endpoint(1, 2, 64);
        let text = dump(&[("00:01.0", &c), ("0000:00:01.0", &c)]);
        let e = LspciDump::parse(&text).unwrap_err();
        assert!(matches!(e, LspciError::Duplicate { line: 7, first: 1, .. }), "{e}");
        assert!(e.to_string().contains("line 7") && e.to_string().contains("first on line 1"));
    }

    #[test]
    fn a_cut_line_is_an_error_naming_it() {
        let mut text = dump(&[("00:01.0", &endpoint(1, 2, 64))]);
        text.truncate(text.trim_end().len() - 6);
        let e = LspciDump::parse(&text).unwrap_err();
        assert!(matches!(e, LspciError::Line { line: 5, .. }), "{e}");
        assert!(e.to_string().contains("expected 16 bytes, found 14"), "{e}");
    }

    #[test]
    fn odd_hex_is_an_error() {
        let text = "00:01.0 x\n00: 86 80 1 29 03 01 00 00 02 00 01 06 00 00 80 00\n";
        let e = LspciDump::parse(text).unwrap_err();
        assert!(e.to_string().contains("line 2") && e.to_string().contains("\"1\" is not a byte"), "{e}");
        let text = "00:01.0 x\n00: 86 80 zz 29 03 01 00 00 02 00 01 06 00 00 80 00\n";
        assert!(LspciDump::parse(text).unwrap_err().to_string().contains("\"zz\""));
        let text = "00:01.0 x\n00: 86 80 18 29 03 01 00 00 02 00 01 06 00 00 80 00 00\n";
        assert!(LspciDump::parse(text).unwrap_err().to_string().contains("more than 16"));
    }

    #[test]
    fn offsets_out_of_order_are_an_error() {
        let text = dump(&[("00:01.0", &endpoint(1, 2, 64))]).replace("\n20:", "\n30:");
        let e = LspciDump::parse(&text).unwrap_err();
        assert!(e.to_string().contains("line 4") && e.to_string().contains("expected 0x20"), "{e}");
    }

    #[test]
    fn bytes_before_an_address_are_an_error() {
        let e = LspciDump::parse("00: 86 80 18 29 03 01 00 00 02 00 01 06 00 00 80 00\n").unwrap_err();
        assert!(e.to_string().contains("line 1") && e.to_string().contains("before any device"), "{e}");
    }

    #[test]
    fn a_dump_cut_between_lines_is_a_length_error() {
        let c = endpoint(1, 2, 256);
        let ten_lines: String = hex(&c).lines().take(10).map(|l| format!("{l}\n")).collect();
        let e = LspciDump::parse(&format!("00:01.0 x\n{ten_lines}")).unwrap_err();
        assert!(matches!(e, LspciError::Length { line: 1, len: 160, .. }), "{e}");
    }

    #[test]
    fn long_lines_are_cut_in_errors() {
        let text = format!("00:01.0 x\n00: {}\n", "ab ".repeat(200));
        let e = LspciDump::parse(&text).unwrap_err().to_string();
        assert!(e.len() < 250, "{e}");
    }

    #[test]
    fn an_amd_iommu_function_implies_ivrs() {
        let mut c = endpoint(0x1022, 0x0010, 256);
        c[0x0b] = 0x08;
        c[0x0a] = 0x06;
        let d = LspciDump::parse(&dump(&[("00:02.0", &c)])).unwrap();
        assert_eq!(d.amd_iommu, Some(addr("00:02.0")));
        assert_eq!(d.snapshot.acpi_tables, vec!["IVRS"]);
        assert!(d.snapshot.platform().amd_ivrs);
    }

    /// A PCIe endpoint with an SR-IOV capability at 0x100.
    fn pf(num_vfs: u16, enable: bool, offset: u16, stride: u16) -> Vec<u8> {
        let mut c = endpoint(0x8086, 0x1521, 4096);
        c[0x06] = 0x10; // capability list
        c[0x34] = 0x40;
        c[0x40] = 0x10; // PCIe, endpoint
        c[0x0e] = 0x80; // multifunction
        c[0x100..0x104].copy_from_slice(&(0x0001_0010u32).to_le_bytes()); // SR-IOV v1, last
        c[0x108] = u8::from(enable);
        c[0x10e..0x110].copy_from_slice(&8u16.to_le_bytes());
        c[0x110..0x112].copy_from_slice(&num_vfs.to_le_bytes());
        c[0x114..0x116].copy_from_slice(&offset.to_le_bytes());
        c[0x116..0x118].copy_from_slice(&stride.to_le_bytes());
        c[0x11a..0x11c].copy_from_slice(&0x1520u16.to_le_bytes());
        c
    }

    #[test]
    fn enabled_virtual_functions_are_marked_placed_beside_their_pf_and_given_ids() {
        let vf = vec![0xff; 4096];
        let text = dump(&[
            ("00:01.0", &bridge(1, 4096)),
            ("01:00.0", &pf(2, true, 0x80, 4)),
            ("01:10.0", &vf),
            ("01:10.4", &vf),
            ("01:10.1", &endpoint(5, 6, 4096)),
        ]);
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.virtfns, vec![(addr("01:10.0"), addr("01:00.0")), (addr("01:10.4"), addr("01:00.0"))]);
        let v = d.snapshot.device(addr("01:10.4")).unwrap();
        assert_eq!(v.physfn, Some(addr("01:00.0")));
        assert_eq!(v.parent, Some(addr("00:01.0")));
        assert_eq!(&v.config[0..4], &[0x86, 0x80, 0x20, 0x15]);
        assert_eq!(d.snapshot.device(addr("01:10.1")).unwrap().physfn, None);
    }

    #[test]
    fn virtual_functions_on_a_bus_of_their_own_stay_under_the_pfs_parent() {
        let text = dump(&[
            ("00:01.0", &bridge(1, 4096)),
            ("01:00.0", &pf(1, true, 0x100, 1)),
            ("02:00.0", &endpoint(0x8086, 0x1520, 4096)),
        ]);
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.snapshot.device(addr("02:00.0")).unwrap().parent, Some(addr("00:01.0")));
        assert_eq!(d.virtfns.len(), 1);
    }

    #[test]
    fn a_virtual_function_with_a_bridge_header_claims_no_bus_and_forms_no_cycle() {
        // PF 01:00.0's VF lands on 01:00.1, whose bytes claim bus 02 as a bridge would. A VF never forwards
        // to a bus; the function on bus 02 must still be reachable in the tree (it used to be reported as
        // a cycle, because VFs are not walked as bridges).
        let mut vf = bridge(2, 4096);
        vf[0..2].copy_from_slice(&[0xff, 0xff]);
        let text = dump(&[
            ("00:01.0", &bridge(1, 4096)),
            ("01:00.0", &pf(1, true, 1, 1)),
            ("01:00.1", &vf),
            ("02:00.0", &endpoint(1, 2, 4096)),
        ]);
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.virtfns, vec![(addr("01:00.1"), addr("01:00.0"))]);
        assert_eq!(d.snapshot.device(addr("01:00.1")).unwrap().parent, Some(addr("00:01.0")));
        assert_eq!(d.snapshot.device(addr("02:00.0")).unwrap().parent, None);
        d.snapshot.check_tree().unwrap();
        d.snapshot.topology().unwrap();
    }

    #[test]
    fn disabled_sriov_marks_nothing() {
        let text = dump(&[("01:00.0", &pf(2, false, 0x80, 4)), ("01:10.0", &endpoint(1, 2, 4096))]);
        assert!(LspciDump::parse(&text).unwrap().virtfns.is_empty());
    }

    #[test]
    fn sriov_arithmetic_past_the_last_bus_stops_quietly() {
        let text = dump(&[("ff:00.0", &pf(u16::MAX, true, u16::MAX, u16::MAX))]);
        assert!(LspciDump::parse(&text).unwrap().virtfns.is_empty());
    }

    #[test]
    fn two_bridges_claiming_one_bus_keep_the_first_and_say_so() {
        let text = dump(&[("00:01.0", &bridge(1, 64)), ("00:02.0", &bridge(1, 64)), ("01:00.0", &endpoint(1, 2, 64))]);
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.snapshot.device(addr("01:00.0")).unwrap().parent, Some(addr("00:01.0")));
        assert_eq!(d.notes.len(), 1);
    }

    #[test]
    fn pcie_functions_with_256_bytes_are_counted_for_the_warning() {
        let mut c = endpoint(1, 2, 256);
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x10;
        let d = LspciDump::parse(&dump(&[("00:01.0", &c), ("00:02.0", &endpoint(1, 2, 256))])).unwrap();
        assert_eq!((d.short_header, d.short_pcie), (0, 1));
        assert!(d.warnings()[0].contains("256 bytes"));
    }

    /// A root port and an endpoint below it as `lspci -vvnn` prints them, with the kernel's groups.
    const VV: &str = "\
00:1c.0 PCI bridge [0604]: Intel Corporation Device [8086:7ab8] (rev 11) (prog-if 00 [Normal decode])
\tControl: I/O+ Mem+ BusMaster+
\tStatus: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast
\tIOMMU group: 7
\tBus: primary=00, secondary=03, subordinate=03, sec-latency=0
\tCapabilities: [40] Express (v2) Root Port (Slot+), IntMsgNum 0
\tCapabilities: [220 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\tKernel driver in use: pcieport

03:00.0 Ethernet controller [0200]: Intel Corporation I211 Gigabit Network Connection [8086:1539] (rev 03)
\tStatus: Cap+
\tIOMMU group: 12
\tCapabilities: [40] Power Management version 3
\tCapabilities: [a0] Express (v2) Endpoint, MSI 00
\tCapabilities: [100 v2] Advanced Error Reporting
\tKernel driver in use: igb

";

    #[test]
    fn vv_text_gives_the_tree_the_kernels_groups_and_drivers() {
        let d = LspciDump::parse(VV).unwrap();
        assert_eq!(d.from_text, 2);
        assert!(d.has_kernel_groups());
        let s = &d.snapshot;
        assert_eq!(s.device(addr("03:00.0")).unwrap().parent, Some(addr("00:1c.0")));
        assert_eq!(s.device(addr("03:00.0")).unwrap().driver.as_deref(), Some("igb"));
        assert_eq!(s.group_of(addr("00:1c.0")).map(|g| g.id), Some(7));
        assert_eq!(s.group(12).unwrap().devices, vec![addr("03:00.0")]);
        assert!(d.incomplete.is_empty(), "{:?}", d.incomplete);
        let (t, bad) = s.topology().unwrap();
        assert!(bad.is_empty());
        let p = iommu_groups::predict(&t, &s.platform(), iommu_groups::RuleSet::Linux6);
        assert_eq!(p.groups.len(), 2, "the root port's ACS isolates the endpoint");
        assert!(p.uncertain.is_empty());
    }

    #[test]
    fn with_hex_lines_too_the_hex_bytes_win_and_the_text_still_gives_the_group() {
        let mut c = bridge(3, 256);
        c[0x00..0x04].copy_from_slice(&[0x86, 0x80, 0xb8, 0x7a]);
        let text = format!(
            "00:1c.0 PCI bridge [0604]: Intel Corporation Device [8086:7ab8]\n\tIOMMU group: 7\n\tBus: primary=00, \
             secondary=09, subordinate=09, sec-latency=0\n{}\n",
            hex(&c)
        );
        let d = LspciDump::parse(&text).unwrap();
        assert_eq!(d.from_text, 0);
        assert_eq!(d.snapshot.devices[0].config, c, "the hex bytes, not the text's bus 09");
        assert_eq!(d.snapshot.devices[0].iommu_group, Some(7));
    }

    #[test]
    fn a_non_root_paste_says_so_and_how_to_rerun() {
        let text =
            "00:1c.0 PCI bridge [0604]: Intel Corporation Device [8086:a110]\n\tStatus: Cap+\n\tIOMMU group: 3\n\
                    \tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n\tCapabilities: <access denied>\n\n\
                    01:00.0 Network controller [0280]: Intel Corporation Device [8086:2723]\n\tIOMMU group: 3\n\
                    \tCapabilities: <access denied>\n\n";
        let d = LspciDump::parse(text).unwrap();
        assert_eq!(d.access_denied, 2);
        let w = d.warnings().join("\n");
        assert!(w.contains("sudo lspci -vvnn") && w.contains("2 functions"), "{w}");
        let (t, _) = d.snapshot.topology().unwrap();
        let p = iommu_groups::predict(&t, &d.snapshot.platform(), iommu_groups::RuleSet::Linux6);
        assert!(p.uncertain.contains(&addr("00:1c.0")), "{:?}", p.uncertain);
    }

    #[test]
    fn a_cut_paste_makes_the_cut_function_uncertain_not_acs_free() {
        // The endpoint first (its extended capabilities show extended space was readable), then the root port
        // cut before its ACS lines.
        let (port, endpoint) = VV.split_once("\n\n").unwrap();
        let cut = format!("{endpoint}{}", port.split("\tCapabilities: [220 v1]").next().unwrap());
        let d = LspciDump::parse(&cut).unwrap();
        assert!(d.incomplete.iter().any(|(a, why)| *a == addr("00:1c.0") && why.contains("cut")), "{:?}", d.incomplete);
        let cfg = ConfigInfo::parse(&d.snapshot.devices[0].config).unwrap();
        assert_eq!(cfg.acs, AcsState::Unknown);
    }

    #[test]
    fn a_paste_cut_before_a_group_line_leaves_that_group_unknown_not_empty() {
        // A complete block without a group line is a function the kernel put in no group; a block cut
        // before its group line is one whose kernel group the paste does not show.
        let text = "00:00.0 Host bridge [0600]: Advanced Micro Devices, Inc. [AMD] Device [1022:14e8]\n\
                    \tStatus: Cap- 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast\n\n\
                    00:01.0 Host bridge [0600]: Advanced Micro Devices, Inc. [AMD] Device [1022:14ea]\n\
                    \tStatus: Cap- 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast\n\tIOMMU group: 0\n\n\
                    00:01.1 PCI bridge [0604]: Advanced Micro Devices, Inc. [AMD] Device [1022:14ed]\n\
                    \tControl: I/O+ Mem+ BusMaster+\n";
        let d = LspciDump::parse(text).unwrap();
        assert!(d.has_kernel_groups());
        assert_eq!(d.group_unknown, vec![addr("00:01.1")]);
        assert!(
            d.warnings().join("\n").contains("cut before the `IOMMU group:` line of 0000:00:01.1"),
            "{:?}",
            d.warnings()
        );
        // Without any group line there is nothing to be unknown against.
        let d = LspciDump::parse(&text.replace("\tIOMMU group: 0\n", "")).unwrap();
        assert!(!d.has_kernel_groups() && d.group_unknown.is_empty());
    }

    #[test]
    fn v_flags_lines_and_five_digit_domains_are_read() {
        let text = "10000:e0:06.0 PCI bridge [0604]: Intel Corporation Device [8086:a74d]\n\
                    \tFlags: bus master, fast devsel, latency 0, IOMMU group 9\n\
                    \tBus: primary=e0, secondary=e1, subordinate=e1, sec-latency=0\n\
                    \tCapabilities: [40] Express Root Port (Slot+), MSI 00\n\
                    \tCapabilities: [100] Access Control Services\n\tKernel driver in use: pcieport\n\n\
                    10000:e1:00.0 Non-Volatile memory controller [0108]: Device [144d:a80a]\n\
                    \tFlags: bus master, fast devsel, latency 0, IOMMU group 9\n\
                    \tCapabilities: [70] Express Endpoint, MSI 00\n\tKernel driver in use: nvme\n\n";
        let d = LspciDump::parse(text).unwrap();
        let s = &d.snapshot;
        assert_eq!(s.group(9).unwrap().devices, vec![addr("10000:e0:06.0"), addr("10000:e1:00.0")]);
        assert_eq!(s.device(addr("10000:e1:00.0")).unwrap().parent, Some(addr("10000:e0:06.0")));
        assert!(d.incomplete.iter().any(|(_, why)| why.contains("registers not shown")), "{:?}", d.incomplete);
    }

    #[test]
    fn without_nn_ids_come_from_pci_ids_and_are_unknown_otherwise() {
        let ids = PciIds::parse("8086  Intel Corporation\n\t1539  I211 Gigabit Network Connection\nC 02  Network controller\n\t00  Ethernet controller\n");
        let text = "03:00.0 Ethernet controller: Intel Corporation I211 Gigabit Network Connection (rev 03)\n\tStatus: Cap-\n\n";
        let d = LspciDump::parse_with_ids(text, Some(&ids)).unwrap();
        let c = ConfigInfo::parse(&d.snapshot.devices[0].config).unwrap();
        assert_eq!((c.vendor_id, c.device_id, c.class, c.revision), (0x8086, 0x1539, 0x020000, 3));
        let d = LspciDump::parse(text).unwrap();
        assert!(d.incomplete.iter().any(|(_, why)| why.contains("use lspci -nn")), "{:?}", d.incomplete);
    }

    #[test]
    fn virtual_functions_in_text_are_found_from_the_pfs_sr_iov_lines() {
        let text = "01:00.0 Ethernet controller [0200]: Intel Corporation I350 Gigabit Network Connection [8086:1521] (rev 01)\n\
                    \tIOMMU group: 20\n\tCapabilities: [a0] Express (v2) Endpoint, MSI 00\n\
                    \tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)\n\
                    \t\tIOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy+ 10BitTagReq-\n\
                    \t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 2, Function Dependency Link: 00\n\
                    \t\tVF offset: 128, stride: 4, Device ID: 1520\n\n\
                    01:10.0 Ethernet controller [0200]: Intel Corporation I350 Ethernet Controller Virtual Function [8086:1520] (rev 01)\n\
                    \tIOMMU group: 21\n\tCapabilities: [70] Express (v2) Endpoint, MSI 00\n\
                    \tCapabilities: [150 v1] Alternative Routing-ID Interpretation (ARI)\n\n\
                    01:10.4 Ethernet controller [0200]: Intel Corporation I350 Ethernet Controller Virtual Function [8086:1520] (rev 01)\n\
                    \tIOMMU group: 22\n\tCapabilities: [70] Express (v2) Endpoint, MSI 00\n\n";
        let d = LspciDump::parse(text).unwrap();
        assert_eq!(d.virtfns, vec![(addr("01:10.0"), addr("01:00.0")), (addr("01:10.4"), addr("01:00.0"))]);
        let (t, _) = d.snapshot.topology().unwrap();
        let p = iommu_groups::predict(&t, &d.snapshot.platform(), iommu_groups::RuleSet::Linux6);
        assert_eq!(p.groups.len(), 3, "virtual functions are never multifunction siblings");
    }

    #[test]
    fn function_zero_of_a_slot_with_siblings_is_multifunction() {
        let text = "00:1f.0 ISA bridge [0601]: Intel Corporation Device [8086:a082]\n\tStatus: Cap-\n\n\
                    00:1f.3 Audio device [0403]: Intel Corporation Device [8086:a0c8]\n\tStatus: Cap-\n\n\
                    00:14.0 USB controller [0c03]: Intel Corporation Device [8086:a0ed]\n\tStatus: Cap-\n\n";
        let d = LspciDump::parse(text).unwrap();
        let mf = |a: &str| ConfigInfo::parse(&d.snapshot.device(addr(a)).unwrap().config).unwrap().multifunction;
        assert!(mf("00:1f.0"));
        assert!(!mf("00:14.0"));
    }

    #[test]
    fn stray_lines_inside_a_block_do_not_end_it() {
        let text = VV.replace(
            "\tCapabilities: [220 v1]",
            "pcilib: Error reading label\nrted Link Speeds\n\tCapabilities: [220 v1]",
        );
        let d = LspciDump::parse(&text).unwrap();
        assert!(d.incomplete.is_empty(), "{:?}", d.incomplete);
        assert!(matches!(ConfigInfo::parse(&d.snapshot.devices[0].config).unwrap().acs, AcsState::Present(_)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
                let _ = LspciDump::parse(&s);
            }

            #[test]
            fn mutated_vv_text_never_panics(
                cut in 0usize..2000,
                flip in 0usize..2000,
                ch in prop::sample::select(vec!['0', 'f', ' ', ':', '.', '\n', '[', ']', '+', '-', '\t', '=', ',']),
            ) {
                let mut chars: Vec<char> = VV.chars().collect();
                let n = chars.len();
                chars[flip % n] = ch;
                chars.truncate(n - cut % n);
                let text: String = chars.into_iter().collect();
                if let Ok(d) = LspciDump::parse(&text) {
                    let _ = d.snapshot.topology();
                    let _ = d.warnings();
                }
            }

            #[test]
            fn mutated_dumps_never_panic(
                cut in 0usize..2000,
                flip in 0usize..2000,
                ch in prop::sample::select(vec!['0', 'f', ' ', ':', '.', '\n', 'x', '\t']),
            ) {
                let mut text = dump(&[("00:01.0", &bridge(1, 256)), ("01:00.0", &pf(2, true, 0x80, 4))]);
                let mut chars: Vec<char> = text.chars().collect();
                let n = chars.len();
                chars[flip % n] = ch;
                chars.truncate(n - cut % n);
                text = chars.into_iter().collect();
                let _ = LspciDump::parse(&text);
            }

            #[test]
            fn what_a_dump_says_is_what_is_read_back(
                lens in prop::collection::vec(prop::sample::select(DUMP_LENGTHS.to_vec()), 1..12),
                seed in any::<u8>(),
                with_domain in any::<bool>(),
            ) {
                let funcs: Vec<(String, Vec<u8>)> = lens.iter().enumerate().map(|(i, &len)| {
                    let a = PciAddress::new(0, 0, i as u8, 0).unwrap();
                    let name = if with_domain { a.to_string() } else { a.to_string()[5..].to_string() };
                    let mut c: Vec<u8> = (0..len).map(|j| (j as u8).wrapping_mul(seed)).collect();
                    c[0] = 0x34; c[1] = 0x12;
                    (name, c)
                }).collect();
                let refs: Vec<(&str, &[u8])> = funcs.iter().map(|(a, c)| (a.as_str(), c.as_slice())).collect();
                let d = LspciDump::parse(&dump(&refs)).unwrap();
                prop_assert_eq!(d.snapshot.devices.len(), funcs.len());
                for (dev, (_, c)) in d.snapshot.devices.iter().zip(&funcs) {
                    prop_assert_eq!(&dev.config, c);
                }
            }
        }
    }
}
