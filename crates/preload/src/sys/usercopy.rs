//! Copies to and from the program's memory that cannot crash it: a bad
//! address makes the copy stop and report, as the kernel's
//! `copy_{from,to}_user` do (the caller then answers EFAULT).
//!
//! The copy routines are a few instructions of assembly whose only
//! faulting instruction is known: when it faults, the library's
//! SIGSEGV/SIGBUS handler (`intercept::signals`) asks [`fixup`] and, for an
//! address inside one of them, resumes at its recovery point instead of
//! treating the fault as the program's. The hot path costs nothing beyond
//! the copy itself (`rep movsb`).
//!
//! Before that handler is installed (unit tests that link the library
//! without preloading it) every copy goes through `process_vm_readv` /
//! `process_vm_writev` on ourselves, which the kernel checks the same way.

use core::sync::atomic::{AtomicBool, Ordering};

/// Addresses at or above this are never user memory (the kernel half,
/// the vsyscall page): the kernel's `access_ok` refuses them.
const USER_END: u64 = 1 << 63;

/// A program address that cannot be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAddress;

static CAUGHT: AtomicBool = AtomicBool::new(false);

/// The fault handler is installed: faults in the routines below recover.
pub fn set_faults_caught() {
    CAUGHT.store(true, Ordering::Release);
}

core::arch::global_asm!(
    // virtuos_copy_user(dst: rdi, src: rsi, len: rdx) -> bytes NOT copied.
    ".pushsection .text.virtuos_usercopy,\"ax\",@progbits",
    ".globl virtuos_copy_user",
    ".hidden virtuos_copy_user",
    ".type virtuos_copy_user,@function",
    "virtuos_copy_user:",
    "    mov rcx, rdx",
    ".globl virtuos_copy_user_fault",
    ".hidden virtuos_copy_user_fault",
    "virtuos_copy_user_fault:",
    "    rep movsb",
    ".globl virtuos_copy_user_resume",
    ".hidden virtuos_copy_user_resume",
    "virtuos_copy_user_resume:",
    // After a fault rcx holds what was left (rep movsb is restartable).
    "    mov rax, rcx",
    "    ret",
    ".size virtuos_copy_user, . - virtuos_copy_user",
    // virtuos_copy_user_str(dst: rdi, src: rsi, max: rdx) -> length of the
    // string (bytes before its NUL, which is copied too), `max` if there is
    // no NUL in the first `max` bytes, or -1 on a fault. `dst` may be NULL
    // (measure only).
    ".globl virtuos_copy_user_str",
    ".hidden virtuos_copy_user_str",
    ".type virtuos_copy_user_str,@function",
    "virtuos_copy_user_str:",
    "    xor eax, eax",
    "2:",
    "    cmp rax, rdx",
    "    jae 4f",
    ".globl virtuos_copy_user_str_fault",
    ".hidden virtuos_copy_user_str_fault",
    "virtuos_copy_user_str_fault:",
    "    movzx ecx, byte ptr [rsi + rax]",
    "    test rdi, rdi",
    "    jz 3f",
    "    mov byte ptr [rdi + rax], cl",
    "3:",
    "    test ecx, ecx",
    "    jz 4f",
    "    inc rax",
    "    jmp 2b",
    "4:",
    "    ret",
    ".globl virtuos_copy_user_str_resume",
    ".hidden virtuos_copy_user_str_resume",
    "virtuos_copy_user_str_resume:",
    "    mov rax, -1",
    "    ret",
    ".size virtuos_copy_user_str, . - virtuos_copy_user_str",
    ".popsection",
);

extern "C" {
    fn virtuos_copy_user(dst: *mut u8, src: *const u8, len: usize) -> usize;
    fn virtuos_copy_user_fault();
    fn virtuos_copy_user_resume();
    fn virtuos_copy_user_str(dst: *mut u8, src: *const u8, max: usize) -> isize;
    fn virtuos_copy_user_str_fault();
    fn virtuos_copy_user_str_resume();
}

/// Where a fault at instruction `rip` resumes, if it is one of ours.
pub fn fixup(rip: u64) -> Option<u64> {
    if rip == virtuos_copy_user_fault as *const () as usize as u64 {
        Some(virtuos_copy_user_resume as *const () as usize as u64)
    } else if rip == virtuos_copy_user_str_fault as *const () as usize as u64 {
        Some(virtuos_copy_user_str_resume as *const () as usize as u64)
    } else {
        None
    }
}

fn in_user_range(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64)
        .is_some_and(|end| end <= USER_END)
}

/// Copy `len` bytes from program address `src` to `dst` (our memory, or
/// a chunk of the request region); returns how many bytes were copied
/// before the first bad address (`len` when all were).
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes. `src` may be anything.
pub unsafe fn copy_from_user(dst: *mut u8, src: u64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if !in_user_range(src, len) {
        // Copy what lies below the boundary, as the kernel would.
        let ok = USER_END.saturating_sub(src).min(len as u64) as usize;
        return if ok == 0 {
            0
        } else {
            // SAFETY: per the function contract, for a prefix.
            unsafe { copy_from_user(dst, src, ok) }
        };
    }
    if !CAUGHT.load(Ordering::Acquire) {
        return vm_copy(dst as u64, src, len, false);
    }
    // SAFETY: `dst` is valid per the contract; a fault on `src` resumes
    // in the routine (see the module comment) and is reported as a short
    // copy.
    len - unsafe { virtuos_copy_user(dst, src as *const u8, len) }
}

/// Copy `len` bytes from `src` (our memory or the region) to program
/// address `dst`; returns how many bytes were copied before the first bad
/// address.
///
/// # Safety
/// `src` must be valid for `len` bytes of reads. `dst` may be anything.
pub unsafe fn copy_to_user(dst: u64, src: *const u8, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if !in_user_range(dst, len) {
        let ok = USER_END.saturating_sub(dst).min(len as u64) as usize;
        return if ok == 0 {
            0
        } else {
            // SAFETY: per the function contract, for a prefix.
            unsafe { copy_to_user(dst, src, ok) }
        };
    }
    if !CAUGHT.load(Ordering::Acquire) {
        return vm_copy(dst, src as u64, len, true);
    }
    // SAFETY: `src` is valid per the contract; a fault on `dst` resumes
    // in the routine and is reported as a short copy.
    len - unsafe { virtuos_copy_user(dst as *mut u8, src, len) }
}

/// Copy the NUL-terminated program string at `src` into `dst` (with its
/// NUL) if it is shorter than `dst.len()`, or measure it (`dst` empty:
/// up to `max`). Ok(length without NUL); Ok(max) when there is no NUL in
/// the first `max` bytes; Err on a bad address.
pub fn copy_str_from_user(
    src: u64,
    dst: Option<&mut [u8]>,
    max: usize,
) -> Result<usize, BadAddress> {
    let (dptr, max) = match dst {
        Some(d) => (d.as_mut_ptr(), max.min(d.len())),
        None => (core::ptr::null_mut(), max),
    };
    if max == 0 {
        return Ok(0);
    }
    if !CAUGHT.load(Ordering::Acquire) {
        return vm_str(dptr, src, max);
    }
    if src >= USER_END {
        return Err(BadAddress);
    }
    // Stop before the kernel half: bytes there are never the program's.
    let room = (USER_END - src).min(max as u64) as usize;
    // SAFETY: `dptr` is NULL or valid for `max` bytes; a fault on `src`
    // resumes in the routine and returns -1.
    let r = unsafe { virtuos_copy_user_str(dptr, src as *const u8, room) };
    match r {
        r if r < 0 => Err(BadAddress),
        r if (r as usize) == room && room < max => Err(BadAddress),
        r => Ok(r as usize),
    }
}

/// `process_vm_{read,write}v` on ourselves: `len` bytes from `src` to
/// `dst`, where the program's side is checked by the kernel.
fn vm_copy(dst: u64, src: u64, len: usize, to_user: bool) -> usize {
    // Local side: ours; remote side: the program's (checked by the kernel).
    let (nr, liov, riov) = if to_user {
        (
            libc::SYS_process_vm_writev,
            [src, len as u64],
            [dst, len as u64],
        )
    } else {
        (
            libc::SYS_process_vm_readv,
            [dst, len as u64],
            [src, len as u64],
        )
    };
    // For reads the local iovec is our destination, the remote the source.
    let pid = super::kernel::getpid() as u64;
    // SAFETY: both iovecs are live arrays of one `struct iovec`; the
    // kernel checks the program's side and writes only to `dst`, which
    // the caller vouches for (to_user: the program's side).
    let r = unsafe {
        super::raw::syscall6(
            nr as u64,
            [pid, liov.as_ptr() as u64, 1, riov.as_ptr() as u64, 1, 0],
        )
    };
    if r < 0 {
        0
    } else {
        r as usize
    }
}

fn vm_str(dst: *mut u8, src: u64, max: usize) -> Result<usize, BadAddress> {
    let mut b = [0u8; 1];
    for i in 0..max {
        let at = src.checked_add(i as u64).ok_or(BadAddress)?;
        if vm_copy(b.as_mut_ptr() as u64, at, 1, false) != 1 {
            return Err(BadAddress);
        }
        if !dst.is_null() {
            // SAFETY: `dst` is valid for `max` bytes (copy_str_from_user).
            unsafe { dst.add(i).write(b[0]) };
        }
        if b[0] == 0 {
            return Ok(i);
        }
    }
    Ok(max)
}
