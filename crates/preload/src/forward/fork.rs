//! fork: a shadow prepared for the child in every domain where this
//! process has state (`OP_FORK_PREPARE`, `OP_FORK_ABORT` if the fork
//! failed), and the child's side: the parent's sessions and pools dropped,
//! the prepared shadows claimed (at once from the atfork child handler, or
//! at the first forwarded call).

use super::caller;
use super::domain::{DOMAINS, DOMAIN_STORAGE, NUM_DOMAINS};
use super::session::{self, ForkTokens};
use super::{host, log, pools};
use core::sync::atomic::{AtomicU32, Ordering};

/// Our pid when `before_fork` ran (the child's parent pid).
static FORK_PARENT: AtomicU32 = AtomicU32::new(0);

/// Parent, before the fork (malloc locks may be held: allocation-free).
/// Prepares a forked shadow in every domain where we have state.
///
/// The preparation is not interruptible: the program's signals stay
/// blocked until it is done (as a native fork delivers them after the
/// child exists). An interrupted preparation used to leave the child
/// without a shadow: cut off from the domain, refused at its exec's
/// `Reattach` ("not registered").
///
/// A domain that cannot fork the shadow for lack of processes (EAGAIN: the
/// pending shadow runs as our uid and counts against our RLIMIT_NPROC, like
/// the child would; or ENOMEM) makes the fork itself fail with that error,
/// as the kernel's fork would: `Err(-errno)`, after aborting the shadows
/// already prepared in other domains. Any other failure of a live domain
/// fails the fork with EAGAIN (as a native fork does when the kernel cannot
/// make the child), and is logged.
pub fn before_fork() -> Result<ForkTokens, i64> {
    let mut tokens = [None; NUM_DOMAINS];
    FORK_PARENT.store(host::getpid(), Ordering::Relaxed);
    for (i, d) in DOMAINS.into_iter().enumerate() {
        if !session::current(d).is_some_and(|s| s.usable()) {
            continue;
        }
        // The image this process runs (ETXTBSY) is inherited too; without
        // it the child loses nothing else and is not cut off.
        let image = d == DOMAIN_STORAGE && session::runs_image();
        if !session::has_state_in(d) && !image {
            // Nothing to inherit: the child registers afresh if it ever needs to.
            continue;
        }
        let r = caller::simple_call_uninterruptible(d, virtuos_abi::ops::OP_FORK_PREPARE, [0; 6]);
        if r >= 0 {
            tokens[i] = Some(r as u64);
            continue;
        }
        if !session::current(d).is_some_and(|s| s.usable()) {
            // The domain failed meanwhile: as if it had before (the
            // child's descriptors there are stale anyway).
            continue;
        }
        abort_prepared(&tokens);
        if r == -(libc::EAGAIN as i64) || r == -(libc::ENOMEM as i64) {
            return Err(r);
        }
        log::emit(format_args!(
            "fork: the {} domain could not prepare the child's shadow (errno {}); \
             the fork fails with EAGAIN",
            session::name(d),
            -r
        ));
        return Err(-(libc::EAGAIN as i64));
    }
    Ok(tokens)
}

pub fn after_fork_parent(tokens: ForkTokens, result: i64) {
    if result >= 0 {
        return;
    }
    abort_prepared(&tokens);
}

fn abort_prepared(tokens: &ForkTokens) {
    for (i, d) in DOMAINS.into_iter().enumerate() {
        if let Some(t) = tokens[i] {
            let _ = caller::simple_call_uninterruptible(
                d,
                virtuos_abi::ops::OP_FORK_ABORT,
                [t, 0, 0, 0, 0, 0],
            );
        }
    }
}

/// Child, right after the fork (allocation-free, single-threaded).
pub fn after_fork_child(tokens: ForkTokens) {
    session::after_fork_child(tokens, FORK_PARENT.load(Ordering::Relaxed));
    pools::reset_after_fork();
}

/// Claim pending forks now (the atfork child handler). Allocates.
pub fn claim_pending_now() {
    for d in DOMAINS {
        if session::current(d).is_none() && session::pending(d).is_some() {
            let _ = caller::session_of(d);
        }
    }
}
