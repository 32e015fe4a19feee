//! How the audit writer hands bytes to the kernel: io_uring (the `io-uring` crate: a
//! write, then an `fdatasync`, each submitted and waited for) where the kernel and the
//! seccomp profile allow it, plain `write` / `fdatasync` otherwise (Docker's and
//! containerd's default profiles block io_uring). The writer is one thread doing one
//! thing at a time, so each operation is submitted and awaited before the next.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};

/// The writer's I/O path.
pub enum AuditIo {
    Uring(Box<IoUring>),
    Plain,
}

impl std::fmt::Debug for AuditIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuditIo {
    /// io_uring if a ring can be set up here, plain syscalls otherwise.
    pub fn probe() -> AuditIo {
        match IoUring::new(8) {
            Ok(ring) => AuditIo::Uring(Box::new(ring)),
            Err(_) => AuditIo::Plain,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            AuditIo::Uring(_) => "io_uring write+fdatasync",
            AuditIo::Plain => "write+fdatasync",
        }
    }

    /// Submit one operation and wait for its completion; its result (bytes, or 0).
    fn run(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> io::Result<usize> {
        // SAFETY: the entry points at a buffer borrowed by the caller (`write_all`'s
        // `buf`) or at nothing (`fdatasync`); the borrow outlives this call, and this call
        // does not return until the kernel has completed the operation (below), so the
        // kernel never reads the buffer after the borrow ends.
        unsafe { ring.submission().push(entry) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
        // Wait until the completion is there. A signal that interrupts the wait makes
        // io_uring_enter return early — with EINTR, or with the count it submitted as if
        // it had waited — while the write may still be in flight: wait again rather than
        // return (and let the caller free the buffer) before it completes.
        let cqe = loop {
            if let Some(cqe) = ring.completion().next() {
                break cqe;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let res = cqe.result();
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(usize::try_from(res).unwrap_or(0))
    }

    /// Append all of `buf` to `file` (opened for append).
    ///
    /// # Errors
    /// The write failed.
    pub fn write_all(&mut self, file: &mut File, mut buf: &[u8]) -> io::Result<()> {
        let ring = match self {
            AuditIo::Plain => return file.write_all(buf),
            AuditIo::Uring(ring) => ring,
        };
        while !buf.is_empty() {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            // Offset -1: at the file position (the end, for a file opened to append).
            let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), len).offset(u64::MAX).build();
            let n = AuditIo::run(ring, &entry)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "io_uring write wrote nothing"));
            }
            buf = buf.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// `fdatasync(file)`.
    ///
    /// # Errors
    /// The sync failed.
    pub fn sync_data(&mut self, file: &File) -> io::Result<()> {
        match self {
            AuditIo::Plain => file.sync_data(),
            AuditIo::Uring(ring) => {
                let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd())).flags(types::FsyncFlags::DATASYNC).build();
                AuditIo::run(ring, &entry).map(|_| ())
            }
        }
    }
}
