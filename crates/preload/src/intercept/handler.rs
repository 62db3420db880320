//! The SIGSYS handler: every system call the program makes outside our
//! text arrives here (selector BLOCK).

use super::clone;
use super::signals;
use super::table::{self, Placement};
use super::trace;
use super::uctx::{Ctx, Outcome, ARG_REGS, EFL, RAX, RDI, RIP, RSP};
use super::{local_mode, LocalMode};
use crate::forward::{self, Action};
use crate::sys::kernel::{self, sanitize, EFLAGS_TF, SYS_USER_DISPATCH};
use crate::sys::raw::syscall6;
use crate::sys::thread::{current_slot, Pending, Slot, ALLOW, BLOCK};

/// Make the interrupted context re-execute its syscall instruction with the
/// selector ALLOW; the single-step SIGTRAP after it completes `pending`.
pub fn reexec(ctx: &Ctx, slot: &Slot, pending: Pending) {
    slot.pending.set(pending);
    ctx.set(RIP, ctx.get(RIP) - 2);
    ctx.set(EFL, ctx.get(EFL) | EFLAGS_TF);
    slot.set_selector(ALLOW);
}

pub extern "C" fn on_sigsys(_sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code != SYS_USER_DISPATCH {
        // A SIGSYS that is not ours (seccomp, kill): default action.
        kernel::die_of_signal(libc::SIGSYS);
    }
    let slot = current_slot();
    slot.set_selector(ALLOW);
    // SAFETY: uc is this running handler's ucontext.
    let ctx = unsafe { Ctx::new(uc) };
    // The kernel rolled RAX back to the syscall number.
    let nr = ctx.get(RAX) as u64;
    let args = ctx.args();
    // SAFETY: ctx is this handler's own ucontext. Saved and restored, as a
    // program handler may run (and trap) on top of this frame.
    let outer = slot
        .program_mask
        .replace(Some(sanitize(unsafe { signals::frame_mask(ctx.raw()) })));
    let outcome = dispatch(&ctx, slot, nr, args);
    slot.program_mask.set(outer);
    match outcome {
        Outcome::Result(r) => {
            ctx.set(RAX, r);
            slot.set_selector(BLOCK);
        }
        Outcome::Reexec(p) => reexec(&ctx, slot, p),
    }
}

fn dispatch(ctx: &Ctx, slot: &Slot, nr: u64, args: [u64; 6]) -> Outcome {
    match nr as i64 {
        libc::SYS_clone | libc::SYS_clone3 | libc::SYS_fork | libc::SYS_vfork => {
            trace::event(nr, "clone", None);
            clone::prepare_clone(ctx, slot, nr)
        }
        libc::SYS_execve | libc::SYS_execveat => {
            trace::event(nr, "exec", None);
            match forward::before_exec(nr, args) {
                forward::ExecPlan::Native => Outcome::Reexec(Pending::Exec),
                forward::ExecPlan::Rewrite { nr, args } => {
                    ctx.set(RAX, nr as i64);
                    for (reg, v) in ARG_REGS.iter().zip(args) {
                        ctx.set(*reg, v as i64);
                    }
                    Outcome::Reexec(Pending::Exec)
                }
                forward::ExecPlan::Fail(e) => {
                    forward::after_exec_failed(e);
                    Outcome::Result(e)
                }
            }
        }
        libc::SYS_rt_sigaction => {
            // SAFETY: the program's own pointers, as it passed them.
            let r = unsafe { signals::sys_rt_sigaction(args[0], args[1], args[2], args[3]) };
            trace::event(nr, "sigaction", Some(r));
            Outcome::Result(r)
        }
        libc::SYS_rt_sigprocmask => {
            // SAFETY: ctx is our frame; the pointers are the program's.
            let r = unsafe {
                signals::sys_rt_sigprocmask(ctx.raw(), args[0], args[1], args[2], args[3])
            };
            trace::event(nr, "sigprocmask", Some(r));
            Outcome::Result(r)
        }
        libc::SYS_rt_sigreturn => {
            // A handler installed behind our back returned through a foreign
            // restorer: RSP points at the ucontext it restores. Let the
            // sigreturn run natively and trap one instruction later.
            trace::event(nr, "sigreturn", None);
            let frame = ctx.get(RSP) as *mut libc::ucontext_t;
            if slot.pending.get() == Pending::None {
                // SAFETY: the program's rt_sigreturn is about to consume this
                // very frame, so it is a live ucontext.
                unsafe { (*frame).uc_mcontext.gregs[EFL] |= EFLAGS_TF };
                Outcome::Reexec(Pending::Sigreturn)
            } else {
                // Interrupting a re-execution: the frame already carries TF.
                Outcome::Reexec(slot.pending.get())
            }
        }
        libc::SYS_exit => {
            trace::event(nr, "thread-exit", None);
            forward::on_thread_exit();
            // SAFETY: the program's own exit call; it does not return.
            let r = unsafe { syscall6(nr, args) };
            Outcome::Result(r)
        }
        libc::SYS_exit_group => {
            forward::on_process_exit();
            generic(ctx, slot, nr, args)
        }
        libc::SYS_prctl if args[0] == kernel::PR_SET_SYSCALL_USER_DISPATCH => {
            // The program may not reconfigure our dispatch.
            Outcome::Result(-(libc::EINVAL as i64))
        }
        _ => generic(ctx, slot, nr, args),
    }
}

/// Run a possibly-blocking call here, with the signal mask of the
/// interrupted program context (sanitized) installed around it: a signal
/// then interrupts it, runs the program's handler (through the wrapper,
/// selector BLOCK) on top of this frame, and the call restarts (SA_RESTART,
/// from our text) or fails with EINTR exactly as natively. A handler that
/// leaves with siglongjmp abandons this frame; that is fine, the selector
/// is BLOCK and nothing is pending.
fn run_unmasked(ctx: &Ctx, nr: u64, a: [u64; 6]) -> i64 {
    // SAFETY: ctx is this handler's own ucontext.
    let prog = sanitize(unsafe { signals::frame_mask(ctx.raw()) });
    let mut saved = 0u64;
    kernel::rt_sigprocmask(libc::SIG_SETMASK, Some(&prog), Some(&mut saved));
    // SAFETY: the program's call with its own arguments.
    let r = unsafe { syscall6(nr, a) };
    kernel::rt_sigprocmask(libc::SIG_SETMASK, Some(&saved), None);
    r
}

fn generic(ctx: &Ctx, slot: &Slot, nr: u64, args: [u64; 6]) -> Outcome {
    let n = nr as i64;
    let mode = local_mode();
    let mut a = args;
    // Sanitized copies of signal sets the call is given, alive for the
    // duration of an in-handler execution.
    let mask_copy = core::cell::Cell::new(0u64);
    let pselect_copy = core::cell::Cell::new([0u64; 2]);
    let mut substituted = false;
    let mask_arg = match n {
        libc::SYS_rt_sigsuspend => Some(0),
        libc::SYS_signalfd | libc::SYS_signalfd4 => Some(1),
        libc::SYS_ppoll => Some(3),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => Some(4),
        libc::SYS_rt_sigtimedwait if mode != LocalMode::AllNative => Some(0),
        _ => None,
    };
    if let Some(i) = mask_arg {
        if a[i] != 0 {
            // SAFETY: the program passed a signal set here (8 bytes).
            mask_copy.set(sanitize(unsafe { (a[i] as *const u64).read_unaligned() }));
            a[i] = mask_copy.as_ptr() as u64;
            substituted = true;
        }
    } else if n == libc::SYS_pselect6 && a[5] != 0 {
        // SAFETY: pselect6's sixth argument points at {sigset *, size}.
        let (ss, len) = unsafe {
            (
                (a[5] as *const u64).read_unaligned(),
                (a[5] as *const u64).add(1).read_unaligned(),
            )
        };
        if ss != 0 {
            // SAFETY: ss is the program's signal set.
            mask_copy.set(sanitize(unsafe { (ss as *const u64).read_unaligned() }));
            pselect_copy.set([mask_copy.as_ptr() as u64, len]);
            a[5] = pselect_copy.as_ptr() as u64;
            substituted = true;
        }
    }
    // With trap-flag re-execution the set must outlive this frame.
    let mut timedwait_set = false;
    if n == libc::SYS_rt_sigtimedwait && a[0] != 0 && mode == LocalMode::AllNative {
        // SAFETY: the program's wait set (8 bytes).
        slot.sigbuf
            .set(sanitize(unsafe { (a[0] as *const u64).read_unaligned() }));
        a[0] = slot.sigbuf.as_ptr() as u64;
        timedwait_set = true;
    }

    match forward::on_syscall(nr, a) {
        Action::Done(r) => {
            trace::event(nr, "done", Some(r));
            Outcome::Result(r)
        }
        Action::Local => {
            let place = if n == libc::SYS_rt_sigtimedwait && substituted {
                // Waits with its own set unblocked, but other signals the
                // program does not block must interrupt it too.
                Placement::Blocking
            } else if substituted || mode == LocalMode::AllHandler {
                // The masked waits install the (sanitized) mask they were
                // given while they wait, so the program's signals interrupt
                // them as natively; the copies live on this stack.
                Placement::Handler
            } else if mode == LocalMode::AllNative {
                Placement::Blocking
            } else {
                table::placement(n, &a)
            };
            match (place, mode) {
                (Placement::Handler, _) => {
                    // SAFETY: the program's call with its own arguments (or
                    // our sanitized copies, alive until it returns).
                    let r = unsafe { syscall6(nr, a) };
                    trace::event(nr, "handler", Some(r));
                    Outcome::Result(r)
                }
                (Placement::Blocking, LocalMode::AllNative) => {
                    trace::event(nr, "native", None);
                    if timedwait_set {
                        slot.restore.set(Some((RDI, args[0] as i64)));
                        ctx.set(RDI, a[0] as i64);
                    }
                    Outcome::Reexec(Pending::Native)
                }
                (Placement::Blocking, _) => {
                    let r = run_unmasked(ctx, nr, a);
                    trace::event(nr, "unmasked", Some(r));
                    Outcome::Result(r)
                }
            }
        }
    }
}
