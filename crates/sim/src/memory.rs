//! Simulated physical memory: sparse RAM in 4 KiB frames, plus host buffers plugged in above it.
//!
//! - RAM is `0..size`. A frame is allocated on its first write; reading a frame never written gives
//!   zeros. Addresses at or above `size` are not RAM.
//! - [`HostMemory`] regions (for example the buffers a VFIO driver maps) can be plugged in at page-aligned
//!   physical addresses at or above `size`; device accesses that land there are forwarded to them. This is
//!   how the simulator maps memory it does not own: give it a physical address, then map an IOVA to it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use crate::error::{HostMemoryError, SimError};
use crate::types::PAGE_SIZE;

const FRAME: usize = PAGE_SIZE as usize;

/// Memory owned by someone else (the host process, a VMM) that the simulator may reach.
///
/// Implement it for whatever handle keeps the memory alive; the simulator keeps an `Arc` of it for as
/// long as it is plugged in. Accesses are bounds-checked by the simulator before they are made
/// (`offset + len <= self.len()`).
pub trait HostMemory: Send + Sync + fmt::Debug {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the memory is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `out.len()` bytes from `offset` into `out`.
    fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), HostMemoryError>;
    /// Copies `data` to `offset`.
    fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), HostMemoryError>;
}

/// A [`HostMemory`] backed by a `Vec<u8>` behind a mutex: for tests and examples.
#[derive(Debug, Default)]
pub struct VecMemory {
    bytes: Mutex<Vec<u8>>,
}

impl VecMemory {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self { bytes: Mutex::new(vec![0; len]) }
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl HostMemory for VecMemory {
    fn len(&self) -> usize {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), HostMemoryError> {
        let b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let src = b.get(offset..offset + out.len()).ok_or_else(|| HostMemoryError("read out of bounds".into()))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), HostMemoryError> {
        let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let dst =
            b.get_mut(offset..offset + data.len()).ok_or_else(|| HostMemoryError("write out of bounds".into()))?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// A multiplicative hash for frame numbers and other small integer keys (nothing adversarial chooses
/// them; SipHash would cost more than the lookup it protects).
#[derive(Default)]
pub(crate) struct FrameHasher(u64);

impl Hasher for FrameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

type FrameMap = HashMap<u64, Box<[u8; FRAME]>, BuildHasherDefault<FrameHasher>>;

#[derive(Debug)]
struct Region {
    len: u64,
    mem: Arc<dyn HostMemory>,
    offset: usize,
}

/// Sparse physical memory. See the module documentation.
pub struct PhysMemory {
    size: u64,
    frames: FrameMap,
    regions: BTreeMap<u64, Region>,
    bytes_read: u64,
    bytes_written: u64,
}

impl fmt::Debug for PhysMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysMemory")
            .field("size", &self.size)
            .field("resident_frames", &self.frames.len())
            .field("regions", &self.regions())
            .finish()
    }
}

fn zero_frame() -> Box<[u8; FRAME]> {
    vec![0u8; FRAME].into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!("length is FRAME"))
}

enum Target<'a> {
    Ram,
    Region(&'a Region, usize),
}

impl PhysMemory {
    /// RAM of `size` bytes (a multiple of 4 KiB), all zero, none of it allocated yet.
    pub fn new(size: u64) -> Result<Self, SimError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(SimError::Config("memory size must be a non-zero multiple of 4 KiB"));
        }
        Ok(Self { size, frames: FrameMap::default(), regions: BTreeMap::new(), bytes_read: 0, bytes_written: 0 })
    }

    /// Bytes of RAM (the address space `0..size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Frames allocated so far (written at least once).
    pub fn resident_frames(&self) -> usize {
        self.frames.len()
    }

    /// Bytes read and written through [`PhysMemory::read`] / [`PhysMemory::write`] so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.bytes_read, self.bytes_written)
    }

    fn target(&self, addr: u64, len: u64) -> Result<Target<'_>, SimError> {
        let out = || SimError::PhysOutOfRange { addr, len };
        let end = addr.checked_add(len).ok_or_else(out)?;
        if end <= self.size {
            return Ok(Target::Ram);
        }
        let (&base, r) = self.regions.range(..=addr).next_back().ok_or_else(out)?;
        if end > base + r.len {
            return Err(out());
        }
        Ok(Target::Region(r, r.offset + (addr - base) as usize))
    }

    /// Whether `addr..addr+len` is entirely RAM or entirely inside one plugged region.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        self.target(addr, len).is_ok()
    }

    /// Copies `out.len()` bytes at `addr` into `out`.
    pub fn read(&mut self, addr: u64, out: &mut [u8]) -> Result<(), SimError> {
        match self.target(addr, out.len() as u64)? {
            Target::Ram => {
                let mut done = 0;
                while done < out.len() {
                    let a = addr + done as u64;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = (FRAME - off).min(out.len() - done);
                    match self.frames.get(&(a / PAGE_SIZE)) {
                        Some(f) => out[done..done + n].copy_from_slice(&f[off..off + n]),
                        None => out[done..done + n].fill(0),
                    }
                    done += n;
                }
            }
            Target::Region(r, off) => {
                r.mem.read_at(off, out).map_err(|source| SimError::HostMemory { addr, source })?;
            }
        }
        self.bytes_read += out.len() as u64;
        Ok(())
    }

    /// Copies `data` to `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), SimError> {
        match self.target(addr, data.len() as u64)? {
            Target::Ram => {
                let mut done = 0;
                while done < data.len() {
                    let a = addr + done as u64;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = (FRAME - off).min(data.len() - done);
                    let f = self.frames.entry(a / PAGE_SIZE).or_insert_with(zero_frame);
                    f[off..off + n].copy_from_slice(&data[done..done + n]);
                    done += n;
                }
            }
            Target::Region(r, off) => {
                r.mem.write_at(off, data).map_err(|source| SimError::HostMemory { addr, source })?;
            }
        }
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    /// Reads `len` bytes at `addr` into a new vector.
    pub fn read_vec(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, SimError> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Writes `len` copies of `byte` at `addr`.
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) -> Result<(), SimError> {
        self.write(addr, &vec![byte; len])
    }

    /// Copies `len` bytes from `src` to `dst` (the ranges may overlap).
    pub fn copy(&mut self, src: u64, dst: u64, len: usize) -> Result<(), SimError> {
        let tmp = self.read_vec(src, len)?;
        self.write(dst, &tmp)
    }

    /// Plugs `len` bytes of `mem` starting at `offset` into the physical address space at `addr`, which
    /// must be page-aligned, at or above the RAM size, and free.
    pub fn plug(&mut self, addr: u64, mem: Arc<dyn HostMemory>, offset: usize, len: u64) -> Result<(), SimError> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(SimError::Misaligned { kind: crate::error::AddrKind::Phys, value: addr, align: PAGE_SIZE });
        }
        let bad = || SimError::PhysOutOfRange { addr, len };
        let end = addr.checked_add(len).ok_or_else(bad)?;
        let fits = matches!(offset.checked_add(len as usize), Some(e) if e <= mem.len());
        if len == 0 || addr < self.size || !fits {
            return Err(bad());
        }
        let overlaps_prev = self.regions.range(..addr).next_back().is_some_and(|(&b, r)| b + r.len > addr);
        let overlaps_next = self.regions.range(addr..end).next().is_some();
        if overlaps_prev || overlaps_next {
            return Err(bad());
        }
        self.regions.insert(addr, Region { len, mem, offset });
        Ok(())
    }

    /// Removes the region plugged at `addr`; returns whether there was one.
    pub fn unplug(&mut self, addr: u64) -> bool {
        self.regions.remove(&addr).is_some()
    }

    /// The plugged regions as `(address, length)`.
    pub fn regions(&self) -> Vec<(u64, u64)> {
        self.regions.iter().map(|(&a, r)| (a, r.len)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_written_memory_reads_as_zero_and_allocates_nothing() {
        let mut m = PhysMemory::new(1 << 30).unwrap();
        assert_eq!(m.read_vec(0x1234, 100).unwrap(), vec![0; 100]);
        assert_eq!(m.resident_frames(), 0);
    }

    #[test]
    fn writes_across_a_frame_boundary_read_back() {
        let mut m = PhysMemory::new(1 << 30).unwrap();
        let data: Vec<u8> = (0..200).map(|i| i as u8).collect();
        m.write(0x1fa0, &data).unwrap();
        assert_eq!(m.read_vec(0x1fa0, 200).unwrap(), data);
        assert_eq!(m.resident_frames(), 2);
        assert_eq!(m.traffic(), (200, 200));
    }

    #[test]
    fn accesses_beyond_ram_fail_with_the_address() {
        let mut m = PhysMemory::new(0x10000).unwrap();
        assert_eq!(m.write(0xfff0, &[0; 32]), Err(SimError::PhysOutOfRange { addr: 0xfff0, len: 32 }));
        assert!(m.read_vec(u64::MAX, 2).is_err());
        assert!(PhysMemory::new(100).is_err());
    }

    #[test]
    fn plugged_host_memory_is_reached_above_ram_and_unplugged_cleanly() {
        let mut m = PhysMemory::new(0x10000).unwrap();
        let host = Arc::new(VecMemory::new(0x3000));
        assert!(m.plug(0x8000, host.clone(), 0, 0x1000).is_err(), "inside RAM");
        m.plug(0x20000, host.clone(), 0x1000, 0x2000).unwrap();
        assert!(m.plug(0x21000, host.clone(), 0, 0x1000).is_err(), "overlap");
        m.write(0x20ffe, b"abcd").unwrap();
        assert_eq!(&host.to_vec()[0x1ffe..0x2002], b"abcd");
        assert!(m.write(0x21ffe, b"abcd").is_err(), "past the region end");
        assert!(m.unplug(0x20000));
        assert!(m.read_vec(0x20000, 1).is_err());
    }
}
