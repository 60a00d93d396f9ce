//! The `defmt` global logger: frames go to the host's standard output through semihosting.
//!
//! One implementation for all four targets (defmt-semihosting covers Cortex-M only). Frames are
//! gathered in a small buffer and written with one `SYS_WRITE` per frame (or per 256 bytes), so
//! a log line costs one trap rather than one per byte. Decode the stream on the host with
//! `defmt-print -e <the ELF>`.
//!
//! The examples run single-threaded with interrupts unused, so the logger is never re-entered
//! except from a fault handler while a frame is open; that case ends the program (exit status 1)
//! instead of interleaving two frames.

// defmt's `Logger` is an unsafe trait and the logger's state a static behind `UnsafeCell`.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::semihosting;

const BUFFER: usize = 256;

struct FrameBuffer {
    bytes: [u8; BUFFER],
    len: usize,
}

impl FrameBuffer {
    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.len == BUFFER {
                self.flush();
            }
            let room = BUFFER - self.len;
            let n = room.min(data.len());
            if let (Some(dst), Some(src)) =
                (self.bytes.get_mut(self.len..self.len + n), data.get(..n))
            {
                dst.copy_from_slice(src);
            }
            self.len += n;
            data = data.get(n..).unwrap_or_default();
        }
    }

    fn flush(&mut self) {
        if let Some(bytes) = self.bytes.get(..self.len) {
            semihosting::write(bytes);
        }
        self.len = 0;
    }
}

struct LoggerState {
    taken: AtomicBool,
    encoder: UnsafeCell<defmt::Encoder>,
    buffer: UnsafeCell<FrameBuffer>,
}

// SAFETY: `encoder` and `buffer` are only touched between `acquire` and `release`, which `taken`
// makes exclusive.
unsafe impl Sync for LoggerState {}

static STATE: LoggerState = LoggerState {
    taken: AtomicBool::new(false),
    encoder: UnsafeCell::new(defmt::Encoder::new()),
    buffer: UnsafeCell::new(FrameBuffer {
        bytes: [0; BUFFER],
        len: 0,
    }),
};

#[defmt::global_logger]
struct SemihostingLogger;

// SAFETY: `acquire` takes the logger exclusively (a nested acquire ends the program), so the
// encoder and buffer have one user between `acquire` and `release`.
unsafe impl defmt::Logger for SemihostingLogger {
    fn acquire() {
        if STATE.taken.swap(true, Ordering::Acquire) {
            semihosting::exit(false);
        }
        // SAFETY: taken above.
        let (encoder, buffer) = unsafe { (&mut *STATE.encoder.get(), &mut *STATE.buffer.get()) };
        encoder.start_frame(|b| buffer.push(b));
    }

    unsafe fn flush() {
        // SAFETY: called between acquire and release (defmt's contract).
        unsafe { &mut *STATE.buffer.get() }.flush();
    }

    unsafe fn release() {
        // SAFETY: called after acquire (defmt's contract).
        let (encoder, buffer) = unsafe { (&mut *STATE.encoder.get(), &mut *STATE.buffer.get()) };
        encoder.end_frame(|b| buffer.push(b));
        buffer.flush();
        STATE.taken.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between acquire and release (defmt's contract).
        let (encoder, buffer) = unsafe { (&mut *STATE.encoder.get(), &mut *STATE.buffer.get()) };
        encoder.write(bytes, |b| buffer.push(b));
    }
}
