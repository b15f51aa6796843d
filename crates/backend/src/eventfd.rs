//! Eventfds: where a backend signals a device's interrupts. Safe, through `rustix`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};

use crate::error::{BackendError, Result};

fn err(e: impl Into<std::io::Error>) -> BackendError {
    BackendError::EventFd { source: e.into() }
}

/// An eventfd: where VFIO (or a simulator) signals an interrupt.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new close-on-exec eventfd with counter 0.
    pub fn new() -> Result<Self> {
        Ok(Self { fd: eventfd(0, EventfdFlags::CLOEXEC).map_err(err)? })
    }

    /// Waits up to `timeout` for a signal; returns the number of signals since the last read, or `None`
    /// on timeout.
    pub fn wait(&self, timeout: Duration) -> Result<Option<u64>> {
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        loop {
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        let mut b = [0u8; 8];
        let n = rustix::io::read(&self.fd, &mut b).map_err(err)?;
        if n != b.len() {
            return Err(err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short eventfd read")));
        }
        Ok(Some(u64::from_ne_bytes(b)))
    }

    /// Returns pending signals without waiting.
    pub fn try_read(&self) -> Result<Option<u64>> {
        self.wait(Duration::ZERO)
    }

    /// Another handle to the same eventfd (what a simulated device keeps to signal the driver's copy).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self { fd: self.fd.try_clone().map_err(err)? })
    }

    /// Adds `n` to the counter (what the kernel does when the interrupt fires; for simulators and tests).
    pub fn signal(&self, n: u64) -> Result<()> {
        let w = rustix::io::write(&self.fd, &n.to_ne_bytes()).map_err(err)?;
        if w != 8 {
            return Err(err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short eventfd write")));
        }
        Ok(())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_counts_signals_and_times_out_when_quiet() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.try_read().unwrap(), None);
        e.signal(1).unwrap();
        e.signal(2).unwrap();
        assert_eq!(e.wait(Duration::from_millis(100)).unwrap(), Some(3));
        assert_eq!(e.wait(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn a_clone_signals_the_same_counter() {
        let e = EventFd::new().unwrap();
        e.try_clone().unwrap().signal(5).unwrap();
        assert_eq!(e.try_read().unwrap(), Some(5));
    }
}
