//! Property tests: isolation, agreement with a reference page map, bounce round trips, group
//! separation.

use std::collections::BTreeMap;

use iommu_groups::{predict, Platform, RuleSet};
use iommu_sim::{Access, DmaDir, DmaMapping, DomainId, DomainMode, Perm, Rid, Sim, SimError};
use proptest::prelude::*;

use crate::{domain, sim};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

fn perm_strategy() -> impl Strategy<Value = Perm> {
    prop_oneof![Just(Perm::R), Just(Perm::W), Just(Perm::RW)]
}

// ----- 1. No device ever reads or writes memory its domain does not map. -----

/// Physical pages 0..PHYS_PAGES at PHYS_BASE; IOVA pages 0..IOVA_PAGES at IOVA_BASE.
const PHYS_BASE: u64 = 0x4000_0000;
const PHYS_PAGES: u64 = 12;
const IOVA_BASE: u64 = 0x10_0000;
const IOVA_PAGES: u64 = 8;

#[derive(Clone, Debug)]
enum IsoOp {
    Map { dev: usize, iova: u64, phys: u64, pages: u64, perm: Perm },
    Unmap { dev: usize, iova: u64, pages: u64 },
    Write { dev: usize, addr: u64, len: usize, byte: u8 },
    Read { dev: usize, addr: u64, len: usize },
}

fn iso_op() -> impl Strategy<Value = IsoOp> {
    prop_oneof![
        (0..2usize, 0..IOVA_PAGES, 0..PHYS_PAGES, 1..4u64, perm_strategy())
            .prop_map(|(dev, iova, phys, pages, perm)| IsoOp::Map { dev, iova, phys, pages, perm }),
        (0..2usize, 0..IOVA_PAGES, 1..4u64).prop_map(|(dev, iova, pages)| IsoOp::Unmap { dev, iova, pages }),
        (0..3usize, 0..IOVA_PAGES * PAGE, 1..3 * PAGE as usize, any::<u8>())
            .prop_map(|(dev, addr, len, byte)| IsoOp::Write { dev, addr, len, byte }),
        (0..3usize, 0..IOVA_PAGES * PAGE, 1..3 * PAGE as usize).prop_map(|(dev, addr, len)| IsoOp::Read {
            dev,
            addr,
            len
        }),
    ]
}

type PageMap = BTreeMap<u64, (u64, Perm)>; // IOVA page → (physical page, permission)

/// The physical pages an access may touch per the reference, or `None` if it must fault.
fn allowed(map: Option<&PageMap>, addr: u64, len: usize, access: Access) -> Option<Vec<(u64, u64, u64)>> {
    let map = map?;
    let mut out = Vec::new();
    let mut pos = addr;
    let end = addr + len as u64;
    while pos < end {
        let (phys, perm) = map.get(&(pos / PAGE))?;
        if !perm.allows(access) {
            return None;
        }
        let n = (PAGE - pos % PAGE).min(end - pos);
        out.push((pos, phys * PAGE + pos % PAGE, n));
        pos += n;
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_device_ever_touches_memory_its_domain_does_not_map(ops in prop::collection::vec(iso_op(), 1..60)) {
        let mut s = sim();
        let devs = [Rid(0x0100), Rid(0x0200), Rid(0x0300)]; // the third is never attached
        let doms: Vec<DomainId> = devs[..2].iter().map(|r| domain(&mut s, DomainMode::Translated, &[*r])).collect();
        let mut refs: Vec<PageMap> = vec![PageMap::new(); 2];
        let region = (PHYS_PAGES * PAGE) as usize;
        for op in ops {
            match op {
                IsoOp::Map { dev, iova, phys, pages, perm } => {
                    let phys = phys.min(PHYS_PAGES - pages.min(PHYS_PAGES));
                    let free = (iova..iova + pages).all(|p| !refs[dev].contains_key(&(IOVA_BASE / PAGE + p)));
                    let r = s.map(doms[dev], IOVA_BASE + iova * PAGE, PHYS_BASE + phys * PAGE, pages * PAGE, perm);
                    prop_assert_eq!(r.is_ok(), free, "map {:?}", r);
                    if free {
                        for i in 0..pages {
                            refs[dev].insert(IOVA_BASE / PAGE + iova + i, (PHYS_BASE / PAGE + phys + i, perm));
                        }
                    }
                }
                IsoOp::Unmap { dev, iova, pages } => {
                    let all = (iova..iova + pages).all(|p| refs[dev].contains_key(&(IOVA_BASE / PAGE + p)));
                    let r = s.unmap(doms[dev], IOVA_BASE + iova * PAGE, pages * PAGE);
                    prop_assert_eq!(r.is_ok(), all, "unmap {:?}", r);
                    if all {
                        for p in iova..iova + pages {
                            refs[dev].remove(&(IOVA_BASE / PAGE + p));
                        }
                    }
                }
                IsoOp::Write { dev, addr, len, byte } => {
                    let before = s.memory().read_vec(PHYS_BASE, region).unwrap();
                    let plan = allowed(refs.get(dev), IOVA_BASE + addr, len, Access::Write);
                    let r = s.device_write(devs[dev], IOVA_BASE + addr, &vec![byte; len]);
                    let after = s.memory().read_vec(PHYS_BASE, region).unwrap();
                    match plan {
                        None => {
                            prop_assert!(matches!(r, Err(SimError::Fault(_))), "{:?}", r);
                            prop_assert!(before == after, "a faulting write changed memory");
                        }
                        Some(chunks) => {
                            prop_assert!(r.is_ok(), "{:?}", r);
                            let mut want = before.clone();
                            for (_, phys, n) in chunks {
                                let o = (phys - PHYS_BASE) as usize;
                                want[o..o + n as usize].fill(byte);
                            }
                            prop_assert!(want == after, "the write landed outside its mapped pages");
                        }
                    }
                }
                IsoOp::Read { dev, addr, len } => {
                    let mem = s.memory().read_vec(PHYS_BASE, region).unwrap();
                    let plan = allowed(refs.get(dev), IOVA_BASE + addr, len, Access::Read);
                    let mut out = vec![0xa5u8; len];
                    let r = s.device_read(devs[dev], IOVA_BASE + addr, &mut out);
                    match plan {
                        None => {
                            prop_assert!(matches!(r, Err(SimError::Fault(_))), "{:?}", r);
                            prop_assert!(out.iter().all(|&b| b == 0xa5), "a faulting read returned data");
                        }
                        Some(chunks) => {
                            prop_assert!(r.is_ok(), "{:?}", r);
                            let mut want = Vec::new();
                            for (_, phys, n) in chunks {
                                let o = (phys - PHYS_BASE) as usize;
                                want.extend_from_slice(&mem[o..o + n as usize]);
                            }
                            prop_assert!(want == out, "the read returned bytes from outside its mapped pages");
                        }
                    }
                }
            }
        }
    }
}

// ----- 2. map / unmap / translate agree with a reference map. -----

#[derive(Clone, Debug)]
enum PtOp {
    /// 1..=8 pages at any page.
    Small {
        iova: u64,
        phys: u64,
        pages: u64,
        perm: Perm,
    },
    /// One 2 MiB page (both addresses 2 MiB-aligned).
    Huge {
        iova: u64,
        phys: u64,
        perm: Perm,
    },
    Unmap {
        iova: u64,
        pages: u64,
    },
    Translate {
        iova: u64,
    },
}

const SPACE: u64 = 4 * M2 / PAGE; // IOVA pages 0..2048

fn pt_op() -> impl Strategy<Value = PtOp> {
    prop_oneof![
        4 => (0..SPACE, 0..SPACE, 1..=8u64, perm_strategy())
            .prop_map(|(iova, phys, pages, perm)| PtOp::Small { iova: iova.min(SPACE - pages), phys, pages, perm }),
        1 => (0..4u64, 0..4u64, perm_strategy()).prop_map(|(i, p, perm)| PtOp::Huge { iova: i * 512, phys: p * 512, perm }),
        3 => (0..SPACE, prop_oneof![1..=8u64, Just(512u64), Just(1024u64)])
            .prop_map(|(iova, pages)| PtOp::Unmap { iova: iova.min(SPACE - pages), pages }),
        3 => (0..SPACE * PAGE).prop_map(|iova| PtOp::Translate { iova }),
    ]
}

/// Reference: IOVA page → (physical page, perm, leaf start page, leaf pages).
type LeafMap = BTreeMap<u64, (u64, Perm, u64, u64)>;

fn ref_unmap(r: &LeafMap, d: DomainId, iova: u64, pages: u64) -> Result<Vec<u64>, SimError> {
    let (start, end) = (iova, iova + pages);
    let mut pos = start;
    let mut leaves = Vec::new();
    while pos < end {
        let Some(&(_, _, leaf, n)) = r.get(&pos) else {
            return Err(SimError::NotMapped { domain: d, iova: pos * PAGE });
        };
        if leaf < start || leaf + n > end {
            let size = if n == 512 { iommu_sim::PageSize::Size2M } else { iommu_sim::PageSize::Size4K };
            return Err(SimError::SplitsPage {
                domain: d,
                iova: start * PAGE,
                end: end * PAGE,
                page: leaf * PAGE,
                size,
            });
        }
        leaves.push(leaf);
        pos = leaf + n;
    }
    Ok(leaves)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn map_unmap_translate_agree_with_a_reference_map(ops in prop::collection::vec(pt_op(), 1..60)) {
        let mut s = sim();
        let dev = Rid(0x0100);
        let d = domain(&mut s, DomainMode::Translated, &[dev]);
        let mut r = LeafMap::new();
        for op in ops {
            match op {
                PtOp::Small { iova, phys, pages, perm } => {
                    let first_used = (iova..iova + pages).find(|p| r.contains_key(p));
                    let got = s.map(d, iova * PAGE, phys * PAGE, pages * PAGE, perm);
                    match first_used {
                        Some(p) => prop_assert_eq!(got, Err(SimError::AlreadyMapped { domain: d, iova: p * PAGE })),
                        None => {
                            prop_assert_eq!(got, Ok(()));
                            for i in 0..pages {
                                r.insert(iova + i, (phys + i, perm, iova + i, 1));
                            }
                        }
                    }
                }
                PtOp::Huge { iova, phys, perm } => {
                    let used = (iova..iova + 512).any(|p| r.contains_key(&p));
                    let got = s.map(d, iova * PAGE, phys * PAGE, M2, perm);
                    if used {
                        prop_assert_eq!(got, Err(SimError::AlreadyMapped { domain: d, iova: iova * PAGE }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        for i in 0..512 {
                            r.insert(iova + i, (phys + i, perm, iova, 512));
                        }
                    }
                }
                PtOp::Unmap { iova, pages } => {
                    let want = ref_unmap(&r, d, iova, pages);
                    let got = s.unmap(d, iova * PAGE, pages * PAGE).map(|ls| ls.iter().map(|l| l.iova / PAGE).collect::<Vec<_>>());
                    prop_assert_eq!(&got, &want);
                    if want.is_ok() {
                        for p in iova..iova + pages {
                            r.remove(&p);
                        }
                    }
                }
                PtOp::Translate { iova } => {
                    let want = r.get(&(iova / PAGE)).map(|&(phys, perm, _, _)| (phys * PAGE + iova % PAGE, perm));
                    let walk = s.lookup(d, iova).unwrap().map(|l| (l.translate(iova), l.perm));
                    prop_assert_eq!(walk, want, "software walk at {:#x}", iova);
                    // The device path (IOTLB, strict invalidation) must agree too.
                    let dev_path = s.translate(dev, iova, Access::Read).ok().map(|t| (t.phys, t.perm));
                    let want_read = want.filter(|(_, p)| p.read);
                    prop_assert_eq!(dev_path, want_read, "device translation at {:#x}", iova);
                }
            }
        }
        // Unmapping everything frees every table but the root.
        let leaves: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = r.values().map(|&(_, _, l, n)| (l, n)).collect();
            v.dedup();
            v
        };
        for (l, n) in leaves {
            s.unmap(d, l * PAGE, n * PAGE).unwrap();
        }
        prop_assert_eq!(s.table_stats(d).unwrap().live, 1);
        prop_assert_eq!(s.mappings(d).unwrap(), vec![]);
    }
}

// ----- 3. Bounce round trips preserve data. -----

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn bounce_round_trips_preserve_data(
        page in 0..1024u64,
        offset in 0..4096u64,
        len in 1..20_000usize,
        dir in prop_oneof![Just(DmaDir::ToDevice), Just(DmaDir::FromDevice), Just(DmaDir::Bidirectional)],
        seed in any::<u8>(),
    ) {
        let mut s = sim();
        let dev = Rid(0x0300);
        domain(&mut s, DomainMode::Identity, &[dev]);
        let buf = 0x1_0000_0000 + page * PAGE + offset; // above 4 GiB: out of a 32-bit device's reach
        let guard = 64usize;
        let original: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(seed)).collect();
        s.memory().fill(buf - guard as u64, len + 2 * guard, 0xcc).unwrap();
        s.memory().write(buf, &original).unwrap();
        let m: DmaMapping = s.map_single(dev, buf, len as u64, dir).unwrap();
        prop_assert!(m.addr() + len as u64 <= 1 << 32);
        let bounced = matches!(m.kind(), iommu_sim::MappingKind::Bounced { .. });
        prop_assert!(bounced, "not bounced: {:?}", m.kind());
        let mut seen = vec![0u8; len];
        s.device_read(dev, m.addr(), &mut seen).unwrap();
        if dir.device_reads() {
            prop_assert!(seen == original, "the device did not see the buffer");
        }
        let written: Vec<u8> = original.iter().map(|b| !b).collect();
        if dir.device_writes() {
            s.device_write(dev, m.addr(), &written).unwrap();
        }
        s.unmap_single(m).unwrap();
        let back = s.memory().read_vec(buf, len).unwrap();
        let want = if dir.device_writes() { &written } else { &original };
        prop_assert!(&back == want, "the buffer after unmap is not what the device wrote");
        let around = [s.memory().read_vec(buf - guard as u64, guard).unwrap(), s.memory().read_vec(buf + len as u64, guard).unwrap()];
        prop_assert!(around.iter().all(|g| g.iter().all(|&b| b == 0xcc)), "bytes around the buffer changed");
        prop_assert_eq!(s.stats().bounce.slots_in_use, 0);
    }
}

// ----- 4. Devices in different groups never see each other's mappings. -----

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn devices_in_different_groups_never_see_each_others_mappings(
        maps in prop::collection::vec((0..3usize, 0..512u64, 1..3 * PAGE), 1..16),
        unmap_every in 2..5usize,
    ) {
        let p = predict(&super::groups::two_group_topology(), &Platform::default(), RuleSet::Linux6);
        let mut s: Sim = sim();
        s.attach_groups(&p, DomainMode::Translated).unwrap();
        let devs = [Rid(0x0100), Rid(0x0101), Rid(0x0200)]; // 01:00.0 and 01:00.1 share a group
        let group = |r: Rid| s.domain_of(r).unwrap();
        let groups: Vec<DomainId> = devs.iter().map(|r| group(*r)).collect();
        let mut live: Vec<(usize, u64, u64, u64)> = Vec::new(); // (device, addr, len, phys)
        let mut handles = Vec::new();
        for (i, (dev, page, len)) in maps.into_iter().enumerate() {
            let phys = 0x2_0000_0000 + page * 0x3000 + 0x10;
            let m = s.map_single(devs[dev], phys, len, DmaDir::Bidirectional).unwrap();
            live.push((dev, m.addr(), len, phys));
            handles.push(Some(m));
            if i % unmap_every == 0 {
                let m = handles[i].take().unwrap();
                s.unmap_single(m).unwrap();
                live[i].2 = 0; // dead
            }
        }
        for (x, addr, _len, phys) in live.iter().copied().filter(|m| m.2 > 0) {
            for (y, _) in devs.iter().enumerate() {
                let t = s.translate(devs[y], addr, Access::Read);
                if groups[x] == groups[y] {
                    prop_assert_eq!(t.map(|t| t.phys), Ok(phys), "same group must share the mapping");
                } else if let Ok(t) = t {
                    // Only allowed if y's own group maps this address itself, to its own buffer.
                    let own = live.iter().any(|&(o, a, l, p)| {
                        let (first, end) = (a & !0xfff, (a + l + 0xfff) & !0xfff);
                        l > 0 && groups[o] == groups[y] && first <= addr && addr < end
                            && t.phys & !0xfff == (p & !0xfff) + ((addr & !0xfff) - first)
                    });
                    prop_assert!(own, "device {} reached {:#x} of another group's mapping", devs[y], addr);
                }
            }
        }
        for m in handles.into_iter().flatten() {
            s.unmap_single(m).unwrap();
        }
        for d in groups {
            prop_assert_eq!(s.mappings(d).unwrap(), vec![]);
        }
    }
}
