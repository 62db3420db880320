//! Per-thread state of the library, kept in TLS with a constant initializer
//! (no lazy registration, no destructor), so its address is stable for the
//! thread's lifetime and a fresh thread starts from the all-clear image.
//!
//! A thread normally uses `slots[0]`. A child created with CLONE_VM but not
//! CLONE_THREAD (vfork, posix_spawn) shares its parent's memory, hence this
//! very TLS block; it works in `slots[1]` so that the suspended parent's
//! selector and pending state stay untouched.

use core::cell::Cell;
use core::sync::atomic::{compiler_fence, AtomicU8, Ordering};

use super::kernel;

/// Selector values understood by the kernel.
pub const ALLOW: u8 = 0;
pub const BLOCK: u8 = 1;

/// What the next single-step SIGTRAP of this thread completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    None,
    /// A local call re-executed natively.
    Native,
    /// A clone/fork/vfork/clone3 re-executed natively.
    Clone {
        /// Creates a process (no CLONE_THREAD).
        process: bool,
        /// The child shares our memory (CLONE_VM still set).
        vm: bool,
        /// The parent waits for the child's exec/exit (CLONE_VFORK).
        vfork: bool,
    },
    /// An execve/execveat re-executed natively (a trap means it failed).
    Exec,
    /// An rt_sigreturn trapped from a foreign restorer.
    Sigreturn,
}

pub struct Slot {
    /// The byte the kernel consults on every syscall outside our text.
    pub selector: AtomicU8,
    /// SUD is armed for this thread (with this slot's selector).
    pub armed: Cell<bool>,
    pub pending: Cell<Pending>,
    /// A general register (ucontext index, value) to put back at the trap.
    pub restore: Cell<Option<(usize, i64)>>,
    /// The kernel thread id that armed this slot.
    pub owner_tid: Cell<i32>,
    /// Sanitized signal set handed to a natively re-executed call.
    pub sigbuf: Cell<u64>,
    /// While the SIGSYS handler runs: the interrupted program's signal mask
    /// (sanitized), for waits that signals must be able to interrupt.
    pub program_mask: Cell<Option<u64>>,
    /// Program handlers without SA_RESTART that ran on this thread (so a
    /// wait can tell that it was interrupted even when the signal landed
    /// just before its blocking call).
    pub interrupts: Cell<u32>,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            selector: AtomicU8::new(ALLOW),
            armed: Cell::new(false),
            pending: Cell::new(Pending::None),
            restore: Cell::new(None),
            owner_tid: Cell::new(0),
            sigbuf: Cell::new(0),
            program_mask: Cell::new(None),
            interrupts: Cell::new(0),
        }
    }

    pub fn reset(&self) {
        self.set_selector(ALLOW);
        self.armed.set(false);
        self.pending.set(Pending::None);
        self.restore.set(None);
        self.owner_tid.set(0);
        self.sigbuf.set(0);
    }

    #[inline]
    pub fn set_selector(&self, v: u8) {
        // The kernel reads the byte at the next syscall; keep the store
        // ordered with respect to the surrounding code.
        compiler_fence(Ordering::SeqCst);
        self.selector.store(v, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    #[inline]
    pub fn selector(&self) -> u8 {
        self.selector.load(Ordering::Relaxed)
    }

    pub fn selector_ptr(&self) -> *const u8 {
        self.selector.as_ptr() as *const u8
    }
}

pub struct ThreadState {
    pub slots: [Slot; 2],
    /// A CLONE_VM process child is (or was) running on this TLS block.
    pub vm_child: Cell<bool>,
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState { slots: [Slot::new(), Slot::new()], vm_child: Cell::new(false) }
    };
}

/// This thread's state.
#[inline]
pub fn thread_state() -> &'static ThreadState {
    // SAFETY: STATE has a const initializer and no destructor, so it lives
    // exactly as long as the thread's static TLS block; the reference is only
    // ever used on this thread (its handlers included) and never escapes it.
    STATE.with(|s| unsafe { &*(s as *const ThreadState) })
}

/// The slot the running context must use.
#[inline]
pub fn current_slot() -> &'static Slot {
    let ts = thread_state();
    if ts.vm_child.get() {
        let tid = kernel::gettid();
        if tid == ts.slots[1].owner_tid.get() {
            return &ts.slots[1];
        }
    }
    &ts.slots[0]
}

/// True when running in a CLONE_VM process child (shared memory with the
/// parent): process-wide bookkeeping in our memory must not be changed.
pub fn in_vm_child() -> bool {
    let ts = thread_state();
    ts.vm_child.get() && core::ptr::eq(current_slot(), &ts.slots[1])
}

/// Run `f` (a wait) so that the program's signals can interrupt it, with
/// `mask` (sanitized) or, if None, the program's own signal mask installed
/// around it: inside the SIGSYS handler that mask has to be swapped in (a
/// signal then runs the program's handler on top of this frame and makes
/// `f`'s blocking call return EINTR, or restart it under SA_RESTART);
/// outside it (the exported wrappers) it is already in force.
///
/// Also returns whether a program handler without SA_RESTART ran meanwhile:
/// a signal that lands between the mask swap and `f`'s blocking call runs
/// its handler first and `f` then sleeps on, so callers must treat that as
/// an interruption too (the kernel's own ppoll/epoll_pwait close that
/// window atomically; a futex wait cannot).
pub fn with_program_signals<R>(mask: Option<u64>, f: impl FnOnce() -> R) -> (R, bool) {
    let slot = current_slot();
    let before = slot.interrupts.get();
    let install = mask.map(kernel::sanitize).or(slot.program_mask.get());
    let r = match install {
        None => f(),
        Some(m) => {
            let mut saved = 0u64;
            kernel::rt_sigprocmask(libc::SIG_SETMASK, Some(&m), Some(&mut saved));
            let r = f();
            kernel::rt_sigprocmask(libc::SIG_SETMASK, Some(&saved), None);
            r
        }
    };
    (r, slot.interrupts.get() != before)
}

/// [`with_program_signals`] for a wait that installs its signal mask
/// itself, atomically, as ppoll does (`io_uring_enter` with a mask): `f`
/// gets the mask to install (None: leave the current one). Returns `f`'s
/// result and whether a program handler without SA_RESTART ran meanwhile.
pub fn with_program_signals_atomic<R>(
    mask: Option<u64>,
    f: impl FnOnce(Option<u64>) -> R,
) -> (R, bool) {
    let slot = current_slot();
    let before = slot.interrupts.get();
    let install = mask.map(kernel::sanitize).or(slot.program_mask.get());
    let r = f(install);
    (r, slot.interrupts.get() != before)
}
