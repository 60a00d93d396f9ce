//! Semihosting: the debugger (here QEMU) services a trap from the firmware — console output and
//! program exit — so the examples need no UART driver and return an exit status to the host.
//!
//! One call per architecture, same operation numbers (the Arm semihosting specification, which
//! RISC-V semihosting reuses):
//!
//! | target | trap | operation / parameter registers |
//! | --- | --- | --- |
//! | Armv7-M (Thumb) | `bkpt 0xab` | r0 / r1 |
//! | AArch64 | `hlt 0xf000` | x0 / x1 |
//! | RISC-V | `slli x0,x0,0x1f; ebreak; srai x0,x0,7` (uncompressed, one page) | a0 / a1 |
//!
//! QEMU needs `-semihosting-config enable=on,target=native`. Without a debugger attached the trap
//! is an ordinary breakpoint / undefined instruction exception.

// Semihosting is a trap instruction (inline assembly) taking raw pointers.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicIsize, Ordering};

const SYS_OPEN: usize = 0x01;
const SYS_WRITE: usize = 0x05;
const SYS_EXIT: usize = 0x18;

/// `ADP_Stopped_ApplicationExit`: a normal exit.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x2_0026;
/// `ADP_Stopped_RunTimeErrorUnknown`: QEMU exits with status 1 for it on 32-bit targets.
#[cfg_attr(target_pointer_width = "64", allow(dead_code))]
const ADP_STOPPED_RUN_TIME_ERROR_UNKNOWN: usize = 0x2_0023;
/// `SYS_OPEN` mode "w": on the special file `:tt`, the host's standard output.
const OPEN_MODE_WRITE: usize = 4;

/// Handle of `:tt` opened for writing, or -1 before the first write.
static STDOUT: AtomicIsize = AtomicIsize::new(-1);

/// One semihosting call.
///
/// # Safety
/// `arg` must be what `op` expects: a value, or the address of a parameter block that stays
/// valid for the call (the host reads and may write memory it points to).
#[inline(always)]
unsafe fn call(op: usize, arg: usize) -> isize {
    let ret: usize;
    #[cfg(target_arch = "arm")]
    // SAFETY: the caller vouches for `arg`; the host returns in r0 and touches no register else.
    unsafe {
        core::arch::asm!(
            "bkpt #0xab",
            inout("r0") op => ret,
            in("r1") arg,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, x0 / x1.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") op => ret,
            in("x1") arg,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
    // SAFETY: as above, a0 / a1. The three instructions must be uncompressed and in one page
    // (the host reads the words around the `ebreak`), hence `norvc` and the 16-byte alignment.
    unsafe {
        core::arch::asm!(
            ".option push",
            ".option norvc",
            ".balign 16",
            "slli x0, x0, 0x1f",
            "ebreak",
            "srai x0, x0, 7",
            ".option pop",
            inout("a0") op => ret,
            in("a1") arg,
            options(nostack, preserves_flags),
        );
    }
    ret as isize
}

fn stdout() -> Option<usize> {
    let handle = STDOUT.load(Ordering::Relaxed);
    if handle >= 0 {
        return Some(handle as usize);
    }
    let name = b":tt\0";
    let block = [name.as_ptr() as usize, OPEN_MODE_WRITE, name.len() - 1];
    // SAFETY: SYS_OPEN takes a three-word block: NUL-terminated name, mode, name length. Both
    // live until the call returns.
    let handle = unsafe { call(SYS_OPEN, block.as_ptr() as usize) };
    if handle < 0 {
        return None;
    }
    STDOUT.store(handle, Ordering::Relaxed);
    Some(handle as usize)
}

/// Writes `bytes` to the host's standard output (binary-clean: defmt frames go through here).
/// Returns whether every byte was written.
pub fn write(bytes: &[u8]) -> bool {
    let Some(handle) = stdout() else {
        return false;
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let block = [handle, rest.as_ptr() as usize, rest.len()];
        // SAFETY: SYS_WRITE takes handle, buffer address, length; the buffer is `rest`, alive for
        // the call. It returns how many bytes were *not* written.
        let not_written = unsafe { call(SYS_WRITE, block.as_ptr() as usize) };
        if not_written < 0 || not_written as usize >= rest.len() {
            return false;
        }
        let written = rest.len() - not_written as usize;
        rest = rest.get(written..).unwrap_or_default();
    }
    true
}

/// Ends the program: QEMU exits with status 0 for `success`, 1 otherwise.
pub fn exit(success: bool) -> ! {
    #[cfg(target_pointer_width = "64")]
    {
        // 64-bit semihosting: the address of a block holding the reason and the exit code.
        let block = [ADP_STOPPED_APPLICATION_EXIT, usize::from(!success)];
        // SAFETY: SYS_EXIT reads the two-word block, alive for the call.
        unsafe { call(SYS_EXIT, block.as_ptr() as usize) };
    }
    #[cfg(target_pointer_width = "32")]
    {
        // 32-bit semihosting: the reason itself; QEMU exits 0 for ApplicationExit, else 1.
        let reason = if success {
            ADP_STOPPED_APPLICATION_EXIT
        } else {
            ADP_STOPPED_RUN_TIME_ERROR_UNKNOWN
        };
        // SAFETY: SYS_EXIT takes a value here, no memory.
        unsafe { call(SYS_EXIT, reason) };
    }
    // No debugger serviced the call: stop here.
    loop {
        core::hint::spin_loop();
    }
}
