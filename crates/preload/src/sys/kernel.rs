//! Thin, allocation-free kernel helpers for the interception half. Every
//! system call here is issued through [`super::raw::syscall6`], i.e. from this
//! library's text, so Syscall User Dispatch always lets it through.

use super::raw::syscall6;

/// The kernel's `struct sigaction` on x86-64 (not glibc's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

/// Size of the kernel's signal set on x86-64.
pub const KSIGSET_SIZE: u64 = 8;

pub const SIG_DFL: usize = 0;
pub const SIG_IGN: usize = 1;
pub const SA_SIGINFO: u64 = 0x4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;

pub const PR_SET_SYSCALL_USER_DISPATCH: u64 = 59;
pub const PR_SYS_DISPATCH_ON: u64 = 1;
/// `si_code` of a SIGSYS raised by Syscall User Dispatch.
pub const SYS_USER_DISPATCH: i32 = 2;
/// `si_code` of a single-step SIGTRAP.
pub const TRAP_TRACE: i32 = 2;
/// The trap flag in RFLAGS.
pub const EFLAGS_TF: i64 = 0x100;

/// Bit for signal `sig` in a kernel signal set.
pub const fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// The signals the interception machinery needs to receive at any time.
pub const RESERVED: u64 = sigbit(libc::SIGSYS) | sigbit(libc::SIGTRAP);

/// A signal set with the reserved signals removed.
pub const fn sanitize(set: u64) -> u64 {
    set & !RESERVED
}

#[inline]
fn sys(nr: i64, args: [u64; 6]) -> i64 {
    // SAFETY: every caller in this module passes arguments that are either
    // plain integers or pointers to live, correctly sized memory.
    unsafe { syscall6(nr as u64, args) }
}

/// rt_sigaction(sig, act, oact) with the kernel layout.
pub fn rt_sigaction(sig: i32, act: Option<&KSigaction>, oact: Option<&mut KSigaction>) -> i64 {
    let a = act.map_or(0, |a| a as *const KSigaction as u64);
    let o = oact.map_or(0, |o| o as *mut KSigaction as u64);
    sys(
        libc::SYS_rt_sigaction,
        [sig as u64, a, o, KSIGSET_SIZE, 0, 0],
    )
}

/// rt_sigprocmask(how, set, oldset).
pub fn rt_sigprocmask(how: i32, set: Option<&u64>, old: Option<&mut u64>) -> i64 {
    let s = set.map_or(0, |s| s as *const u64 as u64);
    let o = old.map_or(0, |o| o as *mut u64 as u64);
    sys(
        libc::SYS_rt_sigprocmask,
        [how as u64, s, o, KSIGSET_SIZE, 0, 0],
    )
}

pub fn gettid() -> i32 {
    sys(libc::SYS_gettid, [0; 6]) as i32
}

pub fn getpid() -> i32 {
    sys(libc::SYS_getpid, [0; 6]) as i32
}

/// Arm Syscall User Dispatch for the calling thread: syscalls from
/// `[start, start + len)` are always allowed, others consult `*selector`.
pub fn arm_sud(start: usize, len: usize, selector: *const u8) -> i64 {
    sys(
        libc::SYS_prctl,
        [
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_ON,
            start as u64,
            len as u64,
            selector as u64,
            0,
        ],
    )
}

/// write(2) the whole buffer to fd 2, ignoring errors.
pub fn write_stderr(mut buf: &[u8]) {
    while !buf.is_empty() {
        let r = sys(
            libc::SYS_write,
            [2, buf.as_ptr() as u64, buf.len() as u64, 0, 0, 0],
        );
        if r == -(libc::EINTR as i64) {
            continue;
        }
        if r <= 0 {
            return;
        }
        buf = &buf[r as usize..];
    }
}

/// Terminate the whole process immediately.
pub fn exit_group(code: i32) -> ! {
    sys(libc::SYS_exit_group, [code as u64, 0, 0, 0, 0, 0]);
    // exit_group does not return; spin rather than fall off the end.
    loop {
        core::hint::spin_loop();
    }
}

/// Die of `sig` as if its default action had run: reset it to SIG_DFL,
/// unblock it and send it to this thread.
pub fn die_of_signal(sig: i32) -> ! {
    let dfl = KSigaction::default();
    rt_sigaction(sig, Some(&dfl), None);
    let bit = sigbit(sig);
    rt_sigprocmask(libc::SIG_UNBLOCK, Some(&bit), None);
    sys(
        libc::SYS_tgkill,
        [getpid() as u64, gettid() as u64, sig as u64, 0, 0, 0],
    );
    exit_group(128 + sig)
}

/// fstat(fd) file type bits (`st_mode & S_IFMT`), or None on error.
pub fn fd_type(fd: u64) -> Option<u32> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = sys(
        libc::SYS_fstat,
        [fd, &mut st as *mut libc::stat as u64, 0, 0, 0, 0],
    );
    (r == 0).then_some(st.st_mode & libc::S_IFMT)
}

/// newfstatat(dirfd, path, 0) file type bits; Err(-errno) on error.
pub fn path_type(dirfd: u64, path: u64) -> Result<u32, i64> {
    // SAFETY: as in `fd_type`.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = sys(
        libc::SYS_newfstatat,
        [dirfd, path, &mut st as *mut libc::stat as u64, 0, 0, 0],
    );
    if r == 0 {
        Ok(st.st_mode & libc::S_IFMT)
    } else {
        Err(r)
    }
}

/// The signal-return trampoline used for every handler we install. It must
/// live in this library's text: glibc's `__restore_rt` is in libc's text,
/// where its rt_sigreturn would itself be dispatched to SIGSYS.
#[unsafe(naked)]
pub extern "C" fn restore_rt() {
    core::arch::naked_asm!("mov eax, 15", "syscall", "ud2");
}

/// A fixed-capacity, allocation-free line buffer for diagnostics.
pub struct LineBuf {
    buf: [u8; 160],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 160],
            len: 0,
        }
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = v.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0 {
            self.str("-");
        }
        for &d in &digits[i..] {
            if self.len < self.buf.len() {
                self.buf[self.len] = d;
                self.len += 1;
            }
        }
        self
    }

    pub fn emit(&mut self) {
        self.str("\n");
        write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_reserved() {
        let all = u64::MAX;
        let s = sanitize(all);
        assert_eq!(s & sigbit(libc::SIGSYS), 0);
        assert_eq!(s & sigbit(libc::SIGTRAP), 0);
        assert_ne!(s & sigbit(libc::SIGINT), 0);
    }

    #[test]
    fn kernel_sigaction_roundtrip() {
        let mut old = KSigaction::default();
        assert_eq!(rt_sigaction(libc::SIGUSR2, None, Some(&mut old)), 0);
    }
}
