//! `nvme-kernel-read BLOCKDEV [SECONDS]`: the kernel-driver side of the NVMe benchmark. 4 KiB random reads
//! with `O_DIRECT` (no page cache) over the first 32 MiB (at most the whole device) of BLOCKDEV (e.g.
//! `/dev/nvme0n1`), at queue
//! depths 1 and 32 for SECONDS each (default 3): depth N is N threads each keeping one read in flight.
//! Prints one JSON line per depth (`kernel-randread-qdN` with `iops`), in the format of `nvme --bench`.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iommu_drivers::Reporter;
use serde_json::json;

const PAGE: usize = 4096;
const SPAN: u64 = 32 << 20;

/// One thread's reads until `deadline`: a page-aligned buffer carved out of a larger Vec (O_DIRECT wants
/// the buffer aligned), random 4 KiB-aligned offsets in the span.
fn reader(file: &File, span: u64, seed: u64, deadline: Instant, count: &AtomicU64) -> std::io::Result<()> {
    let mut storage = vec![0u8; 2 * PAGE];
    let at = storage.as_ptr().align_offset(PAGE);
    let buf = &mut storage[at..at + PAGE];
    let mut x = seed | 1;
    while Instant::now() < deadline {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let page = x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (span / PAGE as u64).max(1);
        file.read_exact_at(buf, page * PAGE as u64)?;
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dev, seconds) = match args.as_slice() {
        [d] => (d.clone(), 3.0),
        [d, s] => match s.parse::<f64>() {
            Ok(s) if s > 0.0 => (d.clone(), s),
            _ => {
                eprintln!("usage: nvme-kernel-read BLOCKDEV [SECONDS]");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: nvme-kernel-read BLOCKDEV [SECONDS]");
            return ExitCode::from(2);
        }
    };
    let mut r = Reporter::stdout();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(&dev)
    {
        Ok(f) => f,
        Err(e) => {
            r.error("open", &e);
            return ExitCode::from(1);
        }
    };
    let size = {
        use std::io::Seek;
        (&file).seek(std::io::SeekFrom::End(0)).unwrap_or(SPAN)
    };
    let span = SPAN.min(size);
    for depth in [1u64, 32] {
        let count = AtomicU64::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let errors: Vec<std::io::Error> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..depth)
                .map(|i| {
                    let (file, count) = (&file, &count);
                    s.spawn(move || reader(file, span, 0x9e37_79b9_7f4a_7c15 ^ (i + 1), deadline, count))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok().and_then(Result::err)).collect()
        });
        let secs = start.elapsed().as_secs_f64();
        let ios = count.load(Ordering::Relaxed);
        match errors.first() {
            Some(e) => r.error(&format!("kernel-randread-qd{depth}"), e),
            None => r.step(
                &format!("kernel-randread-qd{depth}"),
                ios > 0,
                json!({ "qd": depth, "ios": ios, "seconds": (secs * 1000.0).round() / 1000.0,
                        "iops": (ios as f64 / secs).round(), "device": dev, "span": span }),
            ),
        }
    }
    if r.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
