//! Pure parsers for the kernel's mount and swap tables (`/proc/self/mountinfo`, `/proc/swaps`) and for
//! `/etc/fstab`, what the next boot mounts.
//!
//! They take text and return what they understood: a line they cannot read is skipped, never a panic,
//! so they can be fed anything (a fuzzer, a truncated file, a tree someone else wrote).
//!
//! ```
//! use iommu_host::mounts::{parse_mountinfo, parse_swaps};
//! let m = parse_mountinfo("29 1 0:26 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,subvol=/@\n");
//! assert_eq!(m[0].dev.to_string(), "0:26");
//! assert_eq!(m[0].source, "/dev/nvme0n1p2");
//! let s = parse_swaps("Filename Type Size Used Priority\n/swap/my\\040file file 1048572 0 -2\n");
//! assert_eq!(s[0].filename, "/swap/my file");
//! ```

use std::fmt;

use serde::Serialize;

/// A device number, `major:minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DevNum {
    /// The major number (0 for the anonymous devices of btrfs, ZFS, tmpfs, proc, ...).
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl DevNum {
    /// Parses `major:minor` (decimal, as mountinfo and sysfs `dev` attributes write it).
    pub fn parse(s: &str) -> Option<DevNum> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNum { major: a.parse().ok()?, minor: b.parse().ok()? })
    }

    /// Whether this is an anonymous device (major 0): a file system with no block device of its own number,
    /// or one (btrfs, ZFS) that reports an anonymous number instead of its disks'.
    pub fn is_anonymous(self) -> bool {
        self.major == 0
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of `/proc/self/mountinfo`, with its escapes undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MountEntry {
    /// Field 1: the mount's ID.
    pub mount_id: u64,
    /// Field 2: the parent mount's ID.
    pub parent_id: u64,
    /// Field 3: the device number `st_dev` shows for files in this file system.
    pub dev: DevNum,
    /// Field 4: the directory of the file system mounted here (a btrfs subvolume, a bind mount's source).
    pub root: String,
    /// Field 5: where it is mounted.
    pub mount_point: String,
    /// Field 6: per-mount options.
    pub options: String,
    /// The file system type after the `-` separator (`btrfs`, `zfs`, `ext4`, `fuse.sshfs`).
    pub fstype: String,
    /// The mount source (`/dev/nvme0n1p2`, `rpool/ROOT/pve-1`, `tmpfs`).
    pub source: String,
    /// The super block options.
    pub super_options: String,
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) in a
/// mountinfo or swaps field. A backslash that does not start a valid escape (three octal digits, at most
/// `\377`) stays as it is; bytes that are not UTF-8 become U+FFFD.
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = digits.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Parses `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
/// SUPER_OPTIONS`. Lines that do not have this shape are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() < 9 {
        return None;
    }
    let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
    let after = &f[sep + 1..];
    if after.len() < 2 {
        return None;
    }
    Some(MountEntry {
        mount_id: f[0].parse().ok()?,
        parent_id: f[1].parse().ok()?,
        dev: DevNum::parse(f[2])?,
        root: unescape_octal(f[3]),
        mount_point: unescape_octal(f[4]),
        options: unescape_octal(f[5]),
        fstype: unescape_octal(after[0]),
        source: unescape_octal(after[1]),
        super_options: after.get(2).map(|s| unescape_octal(s)).unwrap_or_default(),
    })
}

/// One line of `/proc/swaps`, with its escapes undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwapEntry {
    /// The device or file (`/dev/nvme0n1p3`, `/swap/swapfile`). A swap file deleted while active ends in
    /// ` (deleted)`, as the kernel writes it.
    pub filename: String,
    /// `partition` or `file`.
    pub kind: String,
    /// Size in KiB, when the column parses.
    pub size_kib: Option<u64>,
    /// KiB in use, when the column parses.
    pub used_kib: Option<u64>,
    /// The priority, when the column parses.
    pub priority: Option<i64>,
}

impl SwapEntry {
    /// Whether the kernel calls this a swap file (rather than a partition or whole device).
    pub fn is_file(&self) -> bool {
        self.kind == "file"
    }

    /// The path without the kernel's ` (deleted)` suffix.
    pub fn path(&self) -> &str {
        self.filename.strip_suffix(" (deleted)").unwrap_or(&self.filename)
    }
}

/// Parses `/proc/swaps`: a `Filename Type Size Used Priority` header, then one whitespace-separated line
/// per active swap area. Lines without at least a file name and a type are skipped.
pub fn parse_swaps(text: &str) -> Vec<SwapEntry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(kind)) = (f.next(), f.next()) else { continue };
        if i == 0 && name == "Filename" {
            continue;
        }
        out.push(SwapEntry {
            filename: unescape_octal(name),
            kind: kind.to_string(),
            size_kib: f.next().and_then(|v| v.parse().ok()),
            used_kib: f.next().and_then(|v| v.parse().ok()),
            priority: f.next().and_then(|v| v.parse().ok()),
        });
    }
    out
}

/// One line of `/etc/fstab`, with its escapes undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FstabEntry {
    /// Field 1: what is mounted (`UUID=…`, `LABEL=…`, `PARTUUID=…`, `/dev/nvme0n1p2`, a swap file, `tmpfs`).
    pub spec: String,
    /// Field 2: where (`/`, `/boot/efi`), or `none`/`swap` for swap.
    pub file: String,
    /// Field 3: the file system type (`swap` for swap areas).
    pub vfstype: String,
    /// Field 4: the mount options (`defaults` when the field is missing).
    pub options: String,
}

impl FstabEntry {
    /// Whether the options contain `opt` as a whole comma-separated word.
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt)
    }

    /// Whether this is a swap area.
    pub fn is_swap(&self) -> bool {
        self.vfstype == "swap"
    }

    /// Where `spec` points in `/dev`: `UUID=x` → `/dev/disk/by-uuid/x` (likewise `LABEL`, `PARTUUID`,
    /// `PARTLABEL`, quotes removed, the value encoded as udev names its links: `my data` →
    /// `my\x20data`, a `/` → `\x2f`, so the value is always one path component), a `/dev/…` path as it is;
    /// `None` for anything else (a file, `tmpfs`, a network share).
    pub fn dev_path(&self) -> Option<String> {
        for (tag, dir) in
            [("UUID=", "by-uuid"), ("LABEL=", "by-label"), ("PARTUUID=", "by-partuuid"), ("PARTLABEL=", "by-partlabel")]
        {
            if let Some(v) = self.spec.strip_prefix(tag) {
                let v = v.trim_matches('"');
                if v.is_empty() {
                    return None;
                }
                return Some(format!("/dev/disk/{dir}/{}", udev_encode(v)));
            }
        }
        self.spec.starts_with("/dev/").then(|| self.spec.clone())
    }
}

/// A value as udev writes it into a `/dev/disk/by-*` link name (`encode_devnode_name`): ASCII letters,
/// digits and `#+-.:=@_` stay, as do non-ASCII characters; every other byte becomes `\xNN`. `.` and `..`
/// alone are encoded too, so the result never walks a directory.
pub fn udev_encode(v: &str) -> String {
    if v == "." || v == ".." {
        return v.bytes().map(|b| format!("\\x{b:02x}")).collect();
    }
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
    }
    out
}

/// Parses `/etc/fstab`: whitespace-separated `SPEC FILE VFSTYPE [OPTIONS [FREQ [PASSNO]]]`, `#` comments
/// and blank lines skipped, `\040`-style escapes undone. Lines with fewer than three fields are skipped.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(spec), Some(file), Some(vfstype)) = (f.next(), f.next(), f.next()) else { continue };
        out.push(FstabEntry {
            spec: unescape_octal(spec),
            file: unescape_octal(file),
            vfstype: unescape_octal(vfstype),
            options: f.next().map(unescape_octal).unwrap_or_else(|| "defaults".into()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_optional_fields_and_escapes() {
        let t = "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                 29 1 0:26 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd,subvolid=256,subvol=/@\n\
                 garbage\n\
                 1 2 x:y / / rw - ext4 /dev/sda1 rw\n\
                 40 1 0:50 / /tank rw - zfs rpool/ROOT/pve-1 rw,xattr\n\
                 41 1 0:51 / /no-super rw - tmpfs tmpfs\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].mount_point, "/mnt 2");
        assert_eq!(m[0].dev, DevNum { major: 98, minor: 0 });
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].source, "/dev/nvme0n1p2");
        assert!(m[1].dev.is_anonymous());
        assert_eq!(m[2].source, "rpool/ROOT/pve-1");
        assert_eq!(m[3].super_options, "");
    }

    #[test]
    fn escapes_that_are_not_escapes_stay() {
        assert_eq!(unescape_octal("a\\040b\\011c\\012d\\134e"), "a b\tc\nd\\e");
        assert_eq!(unescape_octal("\\777"), "\\777");
        assert_eq!(unescape_octal("\\04"), "\\04");
        assert_eq!(unescape_octal("end\\"), "end\\");
        assert_eq!(unescape_octal("\\0409"), " 9");
        assert_eq!(unescape_octal("\\377"), "\u{fffd}");
        assert_eq!(unescape_octal("\\"), "\\");
        assert_eq!(unescape_octal(""), "");
    }

    #[test]
    fn swaps_header_partitions_files() {
        let s = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/nvme0n1p3                          partition\t8388604\t\t0\t\t-2\n\
             /swap/swap\\040file\\040(deleted) file 1024 x -3\n\
             lonely\n",
        );
        assert_eq!(s.len(), 2);
        assert!(!s[0].is_file());
        assert_eq!(s[0].size_kib, Some(8388604));
        assert_eq!(s[0].priority, Some(-2));
        assert!(s[1].is_file());
        assert_eq!(s[1].path(), "/swap/swap file");
        assert_eq!(s[1].used_kib, None);
    }

    #[test]
    fn fstab_specs_options_and_escapes() {
        let f = parse_fstab(
            "# /etc/fstab\n\n\
             UUID=\"0a1b\" / ext4 errors=remount-ro 0 1\n\
             \tPARTUUID=77-01   /boot/efi vfat umask=0077 0 1\n\
             /dev/mapper/vg-swap none swap sw 0 0\n\
             /swap\\040file none swap sw\n\
             LABEL=data /srv/my\\040data xfs nofail,noatime\n\
             tmpfs /tmp tmpfs\n\
             UUID=../../x /x ext4\n\
             short line\n",
        );
        assert_eq!(f.len(), 7, "{f:?}");
        assert_eq!(f[0].dev_path().as_deref(), Some("/dev/disk/by-uuid/0a1b"));
        assert_eq!(f[1].dev_path().as_deref(), Some("/dev/disk/by-partuuid/77-01"));
        assert_eq!(f[1].file, "/boot/efi");
        assert!(f[2].is_swap() && f[2].dev_path().as_deref() == Some("/dev/mapper/vg-swap"));
        assert_eq!(f[3].spec, "/swap file");
        assert_eq!(f[3].dev_path(), None);
        assert!(f[4].has_option("nofail") && !f[4].has_option("fail"));
        assert_eq!(f[4].file, "/srv/my data");
        assert_eq!(f[4].dev_path().as_deref(), Some("/dev/disk/by-label/data"));
        assert_eq!(f[5].options, "defaults");
        assert_eq!(f[6].dev_path().as_deref(), Some("/dev/disk/by-uuid/..\\x2f..\\x2fx"), "one path component");
        assert_eq!(udev_encode("my data/x"), "my\\x20data\\x2fx");
        assert_eq!(udev_encode(".."), "\\x2e\\x2e");
        assert_eq!(udev_encode("Données"), "Données");
    }

    #[test]
    fn never_panics_on_garbage() {
        for t in ["", "\n\n", "- - - - - - - - -", "1 2 3:4 a b c - ", "1 2 3:4 a b c d e f g", "\\\\\\0", "🦀 \\3 - x"]
        {
            let _ = parse_mountinfo(t);
            let _ = parse_swaps(t);
            let _ = parse_fstab(t);
        }
    }
}
