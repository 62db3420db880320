//! Interception: Syscall User Dispatch, signal handlers, fast wrappers.
//! Owned by the interception half.
//!
//! - [`constructor`] (run from `.init_array`) installs the SIGSYS/SIGTRAP
//!   handlers and arms SUD for the main thread; every other thread and every
//!   forked child is armed by the single-step trap that follows its clone
//!   (see `clone`).
//! - `handler` receives every syscall made outside our text; cheap
//!   non-blocking local calls run there, possibly-blocking ones are
//!   re-executed natively with the trap flag (`table`).
//! - `signals` keeps the program from blocking or replacing SIGSYS/SIGTRAP
//!   and wraps its handlers.
//! - `wrappers` exports `read`, `write`, ... that skip the signal.

mod clone;
mod handler;
mod signals;
mod sud;
pub mod table;
mod trace;
mod uctx;
pub mod wrappers;

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::forward;
use crate::sys::kernel::{self, LineBuf, RESERVED};
use crate::sys::thread as state;

/// Set once the main thread is armed.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// `VIRTUOS_LOCAL`: where local calls run (a measurement knob).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalMode {
    /// Per the classification table (default).
    Table,
    /// `native`: every local call is re-executed natively with TF.
    AllNative,
    /// `handler`: every local call runs in the handler (breaks signal
    /// interruption of blocking calls; for measurement only).
    AllHandler,
}

static MODE: AtomicU8 = AtomicU8::new(0);

pub fn local_mode() -> LocalMode {
    match MODE.load(Ordering::Relaxed) {
        1 => LocalMode::AllNative,
        2 => LocalMode::AllHandler,
        _ => LocalMode::Table,
    }
}

/// True once interception is armed in this process.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

fn env_is(name: &core::ffi::CStr, want: &[u8]) -> bool {
    // SAFETY: getenv with a NUL-terminated name; the result, if any, is a
    // NUL-terminated string owned by the environment. Called before any
    // thread exists.
    unsafe {
        let v = libc::getenv(name.as_ptr());
        !v.is_null() && core::ffi::CStr::from_ptr(v).to_bytes() == want
    }
}

fn die(what: &str, err: i64) -> ! {
    let mut l = LineBuf::new();
    l.str("virtuos: ").str(what);
    if err != 0 {
        l.str(": errno ").int(-err);
    }
    l.str(" (refusing to run unintercepted)");
    l.emit();
    kernel::exit_group(127)
}

/// The library constructor.
pub extern "C" fn constructor(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if env_is(c"VIRTUOS_DISABLE", b"1") || active() {
        return;
    }
    let Some(text) = sud::find_text() else {
        die("cannot locate libvirtuos' executable segment", 0)
    };
    if text.is_main_program {
        // Linked into an executable (unit tests), not preloaded.
        return;
    }
    sud::set_text(text);
    if env_is(c"VIRTUOS_TRACE", b"1") {
        trace::enable();
    }
    if env_is(c"VIRTUOS_LOCAL", b"native") {
        MODE.store(1, Ordering::Relaxed);
    } else if env_is(c"VIRTUOS_LOCAL", b"handler") {
        MODE.store(2, Ordering::Relaxed);
    }

    forward::init_process();

    let r = signals::install_own(libc::SIGSYS, handler::on_sigsys);
    if r != 0 {
        die("cannot install the SIGSYS handler", r);
    }
    let r = signals::install_own(libc::SIGTRAP, clone::on_sigtrap);
    if r != 0 {
        die("cannot install the SIGTRAP handler", r);
    }
    let r = signals::install_fault_handlers();
    if r != 0 {
        die("cannot install the SIGSEGV/SIGBUS handlers", r);
    }
    signals::adopt_existing();
    // An exec'd image may inherit a mask that blocks them.
    let r = kernel::rt_sigprocmask(libc::SIG_UNBLOCK, Some(&RESERVED), None);
    if r != 0 {
        die("cannot unblock SIGSYS/SIGTRAP", r);
    }
    let slot = state::current_slot();
    if let Err(e) = sud::arm(slot) {
        die("cannot arm syscall user dispatch", e);
    }
    ACTIVE.store(true, Ordering::Relaxed);
    slot.set_selector(state::BLOCK);
}
