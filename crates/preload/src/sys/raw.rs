//! The one `syscall` instruction for pass-through calls.

use core::arch::asm;

/// Execute system call `nr` with six arguments; returns the raw kernel
/// result (negative errno on failure).
///
/// # Safety
/// The caller vouches for the arguments exactly as the kernel interprets
/// them (pointers must be valid for what the call does with them). Passing
/// through an intercepted call's own arguments is sound because the program
/// made that very call.
#[inline(never)]
pub unsafe fn syscall6(nr: u64, args: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: see the function contract; rcx and r11 are clobbered by the
    // `syscall` instruction, everything else is preserved by the kernel.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Convert a raw result into the libc convention (set errno, return -1).
pub fn to_libc(ret: i64) -> i64 {
    if (-4095..0).contains(&ret) {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = (-ret) as i32 };
        -1
    } else {
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getpid_and_error_paths() {
        // SAFETY: getpid takes no arguments.
        let pid = unsafe { syscall6(libc::SYS_getpid as u64, [0; 6]) };
        assert_eq!(pid, std::process::id() as i64);
        // SAFETY: close of a descriptor that cannot exist.
        let r = unsafe { syscall6(libc::SYS_close as u64, [999_999, 0, 0, 0, 0, 0]) };
        assert_eq!(r, -(libc::EBADF as i64));
        assert_eq!(to_libc(r), -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
