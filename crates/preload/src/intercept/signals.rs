//! Keeping the program's signal handling from breaking interception.
//!
//! - SIGSYS and SIGTRAP stay ours: the program can neither block them
//!   (masks are sanitized) nor replace their handlers (rt_sigaction on them
//!   is emulated).
//! - Every handler the program installs is wrapped by [`sig_wrapper`]: it
//!   runs the program's handler with the selector BLOCK (it may interrupt a
//!   natively re-executed call, when the selector is ALLOW) and returns
//!   through our own restorer.
//! - SIGSEGV and SIGBUS always reach [`on_fault`] first: a fault of the
//!   library's user-memory copy (`sys::usercopy`) resumes at its recovery
//!   point (the call then fails with EFAULT, as natively); any other is the
//!   program's and gets the disposition it chose (its handler, or death).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sys::kernel::{
    self, sanitize, sigbit, KSigaction, SA_NODEFER, SA_RESTORER, SA_SIGINFO, SIG_DFL, SIG_IGN,
};
use crate::sys::thread::{current_slot, in_vm_child, BLOCK};
use crate::sys::usercopy;

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

/// The fault signals whose kernel handler is always [`on_fault`].
const FAULT_SIGS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];

fn is_fault_sig(sig: i32) -> bool {
    FAULT_SIGS.contains(&sig)
}

/// The kernel disposition of a fault signal whose program disposition is
/// `prog`: [`on_fault`], with the program handler's mask and flags (so its
/// handler runs as if the kernel had called it), except SA_RESETHAND,
/// which `on_fault` applies itself (the recovery must survive it).
fn fault_action(prog: &KSigaction) -> KSigaction {
    let own = SA_SIGINFO | SA_RESTORER;
    let (flags, mask) = if prog.handler == SIG_DFL || prog.handler == SIG_IGN {
        (own | libc::SA_RESTART as u64, 0)
    } else {
        (
            (prog.flags & !(libc::SA_RESETHAND as u64)) | own,
            sanitize(prog.mask),
        )
    };
    KSigaction {
        handler: on_fault as *const () as usize,
        flags,
        restorer: kernel::restore_rt as *const () as usize,
        mask,
    }
}

/// Take over SIGSEGV and SIGBUS (keeping a disposition already set: an
/// inherited SIG_IGN, another preloaded library's handler), then let the
/// user-memory copies rely on it.
pub fn install_fault_handlers() -> i64 {
    for sig in FAULT_SIGS {
        let mut old = KSigaction::default();
        let r = kernel::rt_sigaction(sig, None, Some(&mut old));
        if r != 0 {
            return r;
        }
        if old.handler != on_fault as *const () as usize {
            PROG[sig as usize].store(&old);
        }
        let r = kernel::rt_sigaction(sig, Some(&fault_action(&old)), None);
        if r != 0 {
            return r;
        }
    }
    crate::sys::usercopy::set_faults_caught();
    0
}

/// The kernel handler of SIGSEGV and SIGBUS.
extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // SAFETY: uc is this running handler's ucontext.
    let ctx = unsafe { super::uctx::Ctx::new(uc) };
    // si_code > 0: raised by the kernel for this very instruction (not kill).
    let synchronous = code > 0;
    if synchronous {
        if let Some(resume) = crate::sys::usercopy::fixup(ctx.get(super::uctx::RIP) as u64) {
            ctx.set(super::uctx::RIP, resume as i64);
            return;
        }
    }
    let a = PROG[sig as usize].load();
    if a.handler == SIG_IGN && !synchronous {
        return;
    }
    if a.handler == SIG_DFL || a.handler == SIG_IGN {
        // The kernel's answer to a fault nobody handles (an ignored one
        // included): the default action. A fault happens again on return.
        if !synchronous {
            kernel::die_of_signal(sig);
        }
        kernel::rt_sigaction(sig, Some(&KSigaction::default()), None);
        return;
    }
    if a.flags & libc::SA_RESETHAND as u64 != 0 {
        let dfl = KSigaction::default();
        let _g = lock_table();
        PROG[sig as usize].store(&dfl);
        kernel::rt_sigaction(sig, Some(&fault_action(&dfl)), None);
    }
    run_program_handler(sig, &a, info, uc);
}

/// Wrap handlers already installed when the constructor runs (by another
/// preloaded library; an exec'd image starts with SIG_DFL/SIG_IGN only).
pub fn adopt_existing() {
    for sig in 1..NSIG as i32 {
        if sig == libc::SIGSYS
            || sig == libc::SIGTRAP
            || is_fault_sig(sig)
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
    run_program_handler(sig, &a, info, uc);
}

/// Run the program's handler `a` for `sig`.
fn run_program_handler(
    sig: i32,
    a: &KSigaction,
    info: *mut libc::siginfo_t,
    uc: *mut libc::c_void,
) {
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
    let new: Option<KSigaction> = if act == 0 {
        None
    } else {
        let mut n = KSigaction::default();
        let size = core::mem::size_of::<KSigaction>();
        // SAFETY: `n` is our own plain C struct of `size` bytes.
        if unsafe { usercopy::copy_from_user(&mut n as *mut KSigaction as *mut u8, act, size) }
            != size
        {
            return -(libc::EFAULT as i64);
        }
        Some(n)
    };
    let write_old = |a: KSigaction| -> i64 {
        if oact == 0 {
            return 0;
        }
        let size = core::mem::size_of::<KSigaction>();
        // SAFETY: `a` is our own plain C struct of `size` bytes.
        let done =
            unsafe { usercopy::copy_to_user(oact, &a as *const KSigaction as *const u8, size) };
        if done != size {
            -(libc::EFAULT as i64)
        } else {
            0
        }
    };
    if sig == libc::SIGSYS {
        // Ours: pretend the change worked, report the default.
        return write_old(KSigaction::default());
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
        return write_old(prev);
    }
    let _g = lock_table();
    let prev = PROG[sig as usize].load();
    if is_fault_sig(sig) && !vm_child {
        if let Some(n) = new {
            let r = kernel::rt_sigaction(sig, Some(&fault_action(&n)), None);
            if r != 0 {
                return r;
            }
            PROG[sig as usize].store(&n);
        }
        return write_old(prev);
    }
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
    write_old(kold)
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
        let mut s = 0u64;
        // SAFETY: `s` is our own 8-byte buffer.
        if unsafe { usercopy::copy_from_user(&mut s as *mut u64 as *mut u8, set, 8) } != 8 {
            return -(libc::EFAULT as i64);
        }
        next = match how as i32 {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return -(libc::EINVAL as i64),
        };
    }
    let unblockable = sigbit(libc::SIGKILL) | sigbit(libc::SIGSTOP);
    // SAFETY: as above.
    unsafe { maskp.write(sanitize(next) & !unblockable) };
    // (The kernel writes the old mask after installing the new one.)
    // SAFETY: `cur` is our own 8-byte value.
    if oset != 0 && unsafe { usercopy::copy_to_user(oset, &cur as *const u64 as *const u8, 8) } != 8
    {
        return -(libc::EFAULT as i64);
    }
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
