//! # iommu-drivers: example user-space drivers that run on any IOMMU backend
//!
//! Drivers written against the contract of `iommu-backend` only ([`DeviceAccess`] for the device,
//! [`DmaBackend`] behind a [`DmaSpace`] for its DMA), so the same code runs on the kernel's VFIO
//! (`iommu-vfio`), on the software IOMMU (`iommu-sim`) and on the in-memory fake of the tests:
//!
//! - [`edu`]: QEMU's educational device, and a self-test that proves DMA isolation;
//! - [`nvme`]: a minimal polled NVMe driver with a verified write/read round trip.
//!
//! Each reports its steps through a [`Reporter`]: one JSON object per step with `"step"` and `"ok"`.
//! The programs in `examples/` choose the backend: `edu ADDR` and `nvme ADDR` open the device through
//! VFIO, `edu --sim` runs on the simulator.
//!
//! ```
//! use iommu_drivers::{edu, Reporter};
//! use iommu_backend::DmaSpace;
//! use iommu_sim::backend;
//!
//! let (dev, iommu) = backend::edu("0000:01:00.0").unwrap();
//! let space = DmaSpace::new(iommu, &[]).unwrap().with_dma_mask(edu::DMA_MASK_BITS);
//! let mut r = Reporter::new(|_: &str| {});
//! edu::run(&dev, &space, &mut r).unwrap();
//! assert!(r.all_ok(), "{:?}", r.failed());
//! ```

pub mod edu;
pub mod nvme;
#[cfg(test)]
mod nvme_fake;

use std::time::{Duration, Instant};

use iommu_backend::{error_chain, BackendError, Result};
#[cfg(doc)]
use iommu_backend::{DeviceAccess, DmaBackend, DmaSpace};
use serde_json::{json, Value};

/// Collects steps and hands each to a sink as one line of JSON, `{"step":..,"ok":..,...}` (in that order).
pub struct Reporter<'a> {
    sink: Box<dyn FnMut(&str) + 'a>,
    failed: Vec<String>,
    steps: usize,
}

impl std::fmt::Debug for Reporter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").field("steps", &self.steps).field("failed", &self.failed).finish()
    }
}

impl<'a> Reporter<'a> {
    /// A reporter that calls `sink` with every step.
    pub fn new(sink: impl FnMut(&str) + 'a) -> Self {
        Self { sink: Box::new(sink), failed: Vec::new(), steps: 0 }
    }

    /// A reporter that prints one JSON line per step on stdout.
    pub fn stdout() -> Reporter<'static> {
        Reporter::new(|line: &str| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        })
    }

    /// Reports a step. `extra` (a JSON object) adds fields.
    pub fn step(&mut self, name: &str, ok: bool, extra: Value) {
        let mut line = format!("{{\"step\":{},\"ok\":{ok}", json!(name));
        if let Value::Object(e) = extra {
            for (k, v) in e.iter().filter(|(k, _)| *k != "step" && *k != "ok") {
                line.push_str(&format!(",{}:{v}", json!(k)));
            }
        }
        line.push('}');
        self.steps += 1;
        if !ok {
            self.failed.push(name.to_string());
        }
        (self.sink)(&line);
    }

    /// Reports a failed step for an error (with its whole chain under `"error"`).
    pub fn error(&mut self, name: &str, e: &dyn std::error::Error) {
        self.step(name, false, json!({ "error": error_chain(e) }));
    }

    /// Whether every step so far was ok (and there was at least one).
    pub fn all_ok(&self) -> bool {
        self.steps > 0 && self.failed.is_empty()
    }

    /// The names of the failed steps.
    pub fn failed(&self) -> &[String] {
        &self.failed
    }
}

/// Polls `f` until it returns `Some`, up to `timeout` (sleeping a little between tries).
pub fn poll<T>(device: &str, what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(BackendError::Timeout {
                device: device.to_string(),
                what: what.to_string(),
                ms: timeout.as_millis() as u64,
            });
        }
        spins += 1;
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_emits_step_and_ok_first_and_tracks_failures() {
        let mut lines = Vec::new();
        {
            let mut r = Reporter::new(|l: &str| lines.push(l.to_string()));
            r.step("a", true, json!({ "iova": 4096 }));
            r.error("b", &BackendError::Invalid("x".into()));
            assert!(!r.all_ok());
            assert_eq!(r.failed(), ["b".to_string()]);
        }
        assert_eq!(lines[0], r#"{"step":"a","ok":true,"iova":4096}"#);
        assert!(lines[1].contains(r#""ok":false"#) && lines[1].contains("invalid argument: x"));
    }

    #[test]
    fn poll_times_out_with_what_it_waited_for() {
        let e = poll::<()>("dev", "nothing", Duration::from_millis(5), || Ok(None)).unwrap_err();
        assert!(e.to_string().contains("waiting for nothing"), "{e}");
    }
}
