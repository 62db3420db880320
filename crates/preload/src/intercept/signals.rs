//! Keeping the program's signal handling from breaking interception.
//!
//! - SIGSYS and SIGTRAP stay ours: the program can neither block them
//!   (masks are sanitized) nor replace their handlers (rt_sigaction on them
//!   is emulated).
//! - Every handler the program installs is wrapped by [`sig_wrapper`]: it
//!   runs the program's handler with the selector BLOCK (it may interrupt a
//!   natively re-executed call, when the selector is ALLOW) and returns
//!   through our own restorer.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::state::{current_slot, in_vm_child, BLOCK};
use crate::sys::kernel::{
    self, sanitize, sigbit, KSigaction, SA_NODEFER, SA_RESTORER, SA_SIGINFO, SIG_DFL, SIG_IGN,
};

const NSIG: usize = 65;

/// The program's view of one signal's disposition.
struct ProgAction {
    handler: AtomicUsize,
    flags: AtomicU64,
    restorer: AtomicUsize,
    mask: AtomicU64,
}

impl ProgAction {
    const fn new() -> Self {
        ProgAction {
            handler: AtomicUsize::new(SIG_DFL),
            flags: AtomicU64::new(0),
            restorer: AtomicUsize::new(0),
            mask: AtomicU64::new(0),
        }
    }

    fn load(&self) -> KSigaction {
        KSigaction {
            handler: self.handler.load(Ordering::Acquire),
            flags: self.flags.load(Ordering::Relaxed),
            restorer: self.restorer.load(Ordering::Relaxed),
            mask: self.mask.load(Ordering::Relaxed),
        }
    }

    fn store(&self, a: &KSigaction) {
        self.flags.store(a.flags, Ordering::Relaxed);
        self.restorer.store(a.restorer, Ordering::Relaxed);
        self.mask.store(a.mask, Ordering::Relaxed);
        self.handler.store(a.handler, Ordering::Release);
    }
}

static PROG: [ProgAction; NSIG] = [const { ProgAction::new() }; NSIG];
static TABLE_LOCK: AtomicBool = AtomicBool::new(false);

struct TableGuard;

fn lock_table() -> TableGuard {
    while TABLE_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    TableGuard
}

impl Drop for TableGuard {
    fn drop(&mut self) {
        TABLE_LOCK.store(false, Ordering::Release);
    }
}

/// Mask for our own SIGSYS/SIGTRAP handlers: everything except the
/// reserved signals and the synchronous faults.
pub fn handler_mask() -> u64 {
    let keep =
        sigbit(libc::SIGSEGV) | sigbit(libc::SIGBUS) | sigbit(libc::SIGFPE) | sigbit(libc::SIGILL);
    sanitize(u64::MAX) & !keep
}

/// Install one of our own handlers (SIGSYS/SIGTRAP).
pub fn install_own(
    sig: i32,
    handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
) -> i64 {
    let act = KSigaction {
        handler: handler as usize,
        flags: SA_SIGINFO | SA_RESTORER | SA_NODEFER,
        restorer: kernel::restore_rt as *const () as usize,
        mask: handler_mask(),
    };
    kernel::rt_sigaction(sig, Some(&act), None)
}

/// Wrap handlers already installed when the constructor runs (by another
/// preloaded library; an exec'd image starts with SIG_DFL/SIG_IGN only).
pub fn adopt_existing() {
    for sig in 1..NSIG as i32 {
        if sig == libc::SIGSYS
            || sig == libc::SIGTRAP
            || sig == libc::SIGKILL
            || sig == libc::SIGSTOP
        {
            continue;
        }
        let mut old = KSigaction::default();
        if kernel::rt_sigaction(sig, None, Some(&mut old)) != 0 {
            continue;
        }
        if old.handler != SIG_DFL
            && old.handler != SIG_IGN
            && old.handler != sig_wrapper as *const () as usize
        {
            PROG[sig as usize].store(&old);
            let new = translate(&old);
            kernel::rt_sigaction(sig, Some(&new), None);
        }
    }
}

/// The kernel disposition that stands for the program's `act`.
fn translate(act: &KSigaction) -> KSigaction {
    if act.handler == SIG_DFL || act.handler == SIG_IGN {
        KSigaction {
            mask: sanitize(act.mask),
            ..*act
        }
    } else {
        KSigaction {
            handler: sig_wrapper as *const () as usize,
            flags: act.flags | SA_SIGINFO | SA_RESTORER,
            restorer: kernel::restore_rt as *const () as usize,
            mask: sanitize(act.mask),
        }
    }
}

/// Runs every handler the program installed.
extern "C" fn sig_wrapper(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let Some(entry) = PROG.get(sig as usize) else {
        return;
    };
    let a = entry.load();
    if a.handler == SIG_DFL || a.handler == SIG_IGN {
        // Raced with a change of disposition; the kernel has the new one.
        return;
    }
    let slot = current_slot();
    let saved = slot.selector();
    slot.set_selector(BLOCK);
    // SAFETY: the program installed this address as a handler for `sig`;
    // calling a one-argument handler with three arguments is harmless in the
    // C calling convention.
    unsafe {
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            core::mem::transmute(a.handler);
        f(sig, info, uc);
    }
    slot.set_selector(saved);
    if a.flags & libc::SA_RESTART as u64 == 0 {
        slot.interrupts.set(slot.interrupts.get().wrapping_add(1));
    }
}

/// Call the program's SIGTRAP handler for a trap that is not ours; returns
/// false if it has none (the caller applies the default action).
pub fn call_program_sigtrap(info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> bool {
    let a = PROG[libc::SIGTRAP as usize].load();
    if a.handler == SIG_IGN {
        return true;
    }
    if a.handler == SIG_DFL {
        return false;
    }
    sig_wrapper(libc::SIGTRAP, info, uc);
    true
}

/// Emulated rt_sigaction(sig, act, oact, size).
///
/// # Safety
/// `act`/`oact` are the program's pointers (null or valid for a kernel
/// sigaction), as it passed them to the system call.
pub unsafe fn sys_rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> i64 {
    let sig = sig as i64;
    if size != kernel::KSIGSET_SIZE || !(1..NSIG as i64).contains(&sig) {
        return -(libc::EINVAL as i64);
    }
    let sig = sig as i32;
    // SAFETY: per the function contract.
    let new: Option<KSigaction> = (act != 0).then(|| unsafe { *(act as *const KSigaction) });
    let write_old = |a: KSigaction| {
        if oact != 0 {
            // SAFETY: per the function contract.
            unsafe { *(oact as *mut KSigaction) = a };
        }
    };
    if sig == libc::SIGSYS {
        // Ours: pretend the change worked, report the default.
        write_old(KSigaction::default());
        return 0;
    }
    let vm_child = in_vm_child();
    if sig == libc::SIGTRAP {
        let _g = lock_table();
        let prev = PROG[sig as usize].load();
        if let Some(n) = new {
            if !vm_child {
                PROG[sig as usize].store(&n);
            }
        }
        write_old(prev);
        return 0;
    }
    let _g = lock_table();
    let prev = PROG[sig as usize].load();
    let knew = new.map(|n| {
        if vm_child {
            // Shared memory with the parent: do not touch its table.
            KSigaction {
                mask: sanitize(n.mask),
                ..n
            }
        } else {
            translate(&n)
        }
    });
    let mut kold = KSigaction::default();
    let r = kernel::rt_sigaction(sig, knew.as_ref(), Some(&mut kold));
    if r != 0 {
        return r;
    }
    if let Some(n) = new {
        if !vm_child {
            PROG[sig as usize].store(&n);
        }
    }
    if kold.handler == sig_wrapper as *const () as usize {
        kold = prev;
    }
    write_old(kold);
    0
}

/// Emulated rt_sigprocmask: the mask that matters is the one the kernel
/// restores from our SIGSYS frame, so edit that.
///
/// # Safety
/// `uc` is the SIGSYS handler's ucontext; `set`/`oset` are the program's
/// pointers (null or valid for 8 bytes).
pub unsafe fn sys_rt_sigprocmask(
    uc: *mut libc::ucontext_t,
    how: u64,
    set: u64,
    oset: u64,
    size: u64,
) -> i64 {
    if size != kernel::KSIGSET_SIZE {
        return -(libc::EINVAL as i64);
    }
    // SAFETY: uc_sigmask starts with the kernel's 8-byte sigset.
    let maskp = unsafe { core::ptr::addr_of_mut!((*uc).uc_sigmask) as *mut u64 };
    // SAFETY: as above.
    let cur = unsafe { maskp.read() };
    let mut next = cur;
    if set != 0 {
        // SAFETY: per the function contract.
        let s = unsafe { (set as *const u64).read_unaligned() };
        next = match how as i32 {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return -(libc::EINVAL as i64),
        };
    }
    if oset != 0 {
        // SAFETY: per the function contract.
        unsafe { (oset as *mut u64).write_unaligned(cur) };
    }
    let unblockable = sigbit(libc::SIGKILL) | sigbit(libc::SIGSTOP);
    // SAFETY: as above.
    unsafe { maskp.write(sanitize(next) & !unblockable) };
    0
}

/// The signal mask the interrupted program context runs with.
///
/// # Safety
/// `uc` is a running signal handler's ucontext.
pub unsafe fn frame_mask(uc: *const libc::ucontext_t) -> u64 {
    // SAFETY: uc_sigmask starts with the kernel's 8-byte sigset.
    unsafe { (core::ptr::addr_of!((*uc).uc_sigmask) as *const u64).read() }
}
