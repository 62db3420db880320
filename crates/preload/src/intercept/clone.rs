//! clone/fork/vfork/exec: SUD is not inherited, so these are re-executed
//! natively with the trap flag and the single-step SIGTRAP that follows
//! (in the parent, and in the child, which inherits the flag) arms the
//! child and completes the forwarding bookkeeping.

use super::signals;
use super::sud;
use super::trace;
use super::uctx::{Ctx, Outcome, EFL, RAX, RDI, RSI};
use crate::forward::{self, ForkTicket};
use crate::sys::kernel::{self, EFLAGS_TF, TRAP_TRACE};
use crate::sys::thread::{current_slot, thread_state, Pending, Slot, BLOCK};
use core::cell::Cell;

const CLONE_VM: u64 = libc::CLONE_VM as u64;
const CLONE_VFORK: u64 = libc::CLONE_VFORK as u64;
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;

thread_local! {
    /// Per slot of `sys::thread` (same index): the forwarding state carried
    /// from `prepare_clone` to the trap that completes the clone. Const
    /// initializer and no destructor, like the slots themselves.
    static TICKETS: [Cell<Option<ForkTicket>>; 2] = const { [const { Cell::new(None) }; 2] };
}

/// The ticket cell of `slot` (one of this thread's two slots) gets `f`.
fn with_ticket<R>(slot: &Slot, f: impl FnOnce(&Cell<Option<ForkTicket>>) -> R) -> R {
    let i = usize::from(core::ptr::eq(slot, &thread_state().slots[1]));
    TICKETS.with(|t| f(&t[i]))
}

/// Decide how a clone-family call is re-executed.
pub fn prepare_clone(ctx: &Ctx, slot: &Slot, nr: u64) -> Outcome {
    let n = nr as i64;
    let clone3_args = ctx.get(RDI) as u64;
    let flags = match n {
        libc::SYS_clone => ctx.get(RDI) as u64,
        libc::SYS_clone3 => {
            if clone3_args != 0 && ctx.get(RSI) as u64 >= 8 {
                // SAFETY: the program's struct clone_args; flags is first.
                unsafe { (clone3_args as *const u64).read_unaligned() }
            } else {
                // Let the kernel report the bad argument.
                return Outcome::Reexec(Pending::Native);
            }
        }
        libc::SYS_fork => libc::SIGCHLD as u64,
        _ => CLONE_VM | CLONE_VFORK | libc::SIGCHLD as u64,
    };
    let process = flags & CLONE_THREAD == 0;
    let mut vm = flags & CLONE_VM != 0;
    let mut vfork = flags & CLONE_VFORK != 0;
    if process {
        match forward::before_fork(flags) {
            Ok(ticket) => with_ticket(slot, |t| t.set(Some(ticket))),
            // As the kernel's fork would fail (EAGAIN at RLIMIT_NPROC).
            Err(e) => return Outcome::Result(e),
        }
        if vm && forward::has_forwarded_state() {
            // The child must not share our memory (our descriptor table and
            // domain state): turn vfork/posix_spawn into a copying fork.
            match n {
                libc::SYS_vfork => {
                    ctx.set(RAX, libc::SYS_fork);
                    vfork = false;
                }
                libc::SYS_clone => {
                    slot.restore.set(Some((RDI, flags as i64)));
                    ctx.set(RDI, (flags & !CLONE_VM) as i64);
                }
                _ => {
                    // SAFETY: as above; the struct is the program's, writable
                    // (it is on its stack) and about to be consumed.
                    unsafe { (clone3_args as *mut u64).write_unaligned(flags & !CLONE_VM) };
                }
            }
            vm = false;
        }
    }
    Outcome::Reexec(Pending::Clone { process, vm, vfork })
}

pub extern "C" fn on_sigtrap(_sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // SAFETY: uc is this running handler's ucontext.
    let ctx = unsafe { Ctx::new(uc) };
    if code == TRAP_TRACE {
        let slot = current_slot();
        let rax = ctx.get(RAX);
        match slot.pending.get() {
            Pending::None if !slot.armed.get() && rax == 0 => {
                // The first instruction of a new thread (fresh TLS).
                clear_tf(&ctx);
                sud::arm_or_die(slot, false);
                trace::event(0, "new-thread-armed", None);
                slot.set_selector(BLOCK);
                return;
            }
            Pending::None => {}
            p => {
                complete(&ctx, slot, p, rax);
                return;
            }
        }
    }
    if !signals::call_program_sigtrap(info, uc) {
        kernel::die_of_signal(libc::SIGTRAP);
    }
}

fn clear_tf(ctx: &Ctx) {
    ctx.set(EFL, ctx.get(EFL) & !EFLAGS_TF);
}

fn complete(ctx: &Ctx, slot: &Slot, p: Pending, rax: i64) {
    clear_tf(ctx);
    let shares_parent_memory = match p {
        Pending::Clone {
            process: true, vm, ..
        } => vm && rax == 0,
        // A thread child without its own TLS (raw clone without SETTLS).
        Pending::Clone { process: false, .. } => rax == 0,
        _ => false,
    };
    if shares_parent_memory {
        // Child running on the parent's memory and TLS: leave the parent's
        // slot exactly as it is (it completes it when it resumes) and use
        // the second slot. No allocation here.
        if let Some((reg, v)) = slot.restore.get() {
            ctx.set(reg, v);
        }
        let ts = thread_state();
        let child = &ts.slots[1];
        child.reset();
        with_ticket(child, |t| t.set(None));
        ts.vm_child.set(true);
        sud::arm_or_die(child, false);
        if let Pending::Clone { process: true, .. } = p {
            forward::after_fork_child(with_ticket(slot, |t| t.get()).unwrap_or_default());
        }
        trace::event(0, "vm-child-armed", None);
        child.set_selector(BLOCK);
        return;
    }
    if let Some((reg, v)) = slot.restore.take() {
        ctx.set(reg, v);
    }
    slot.pending.set(Pending::None);
    match p {
        Pending::None | Pending::Native | Pending::Sigreturn => {}
        Pending::Exec => {
            trace::event(0, "exec-failed", Some(rax));
            forward::after_exec_failed(rax);
        }
        Pending::Clone { process: false, .. } => {}
        Pending::Clone {
            process: true,
            vfork,
            vm,
        } => {
            let ticket = with_ticket(slot, |t| t.take()).unwrap_or_default();
            if rax == 0 {
                // A forked child: its own copy of everything, SUD off.
                sud::arm_or_die(slot, false);
                forward::after_fork_child(ticket);
                trace::event(0, "fork-child-armed", None);
            } else {
                if vm && vfork {
                    thread_state().vm_child.set(false);
                }
                forward::after_fork_parent(ticket, rax);
                trace::event(0, "fork-parent", Some(rax));
            }
        }
    }
    slot.set_selector(BLOCK);
}
