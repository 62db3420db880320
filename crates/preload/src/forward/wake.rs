//! One wait for a started remote call *and* host descriptors (mixed
//! poll/select/epoll sets), without time slices.
//!
//! The remote call's completion is a futex wake on its entry's state word
//! (`virtuos_abi::call::complete`); a local descriptor's readiness is a
//! poll. A per-thread io_uring (`sys::uring`) waits for both at once: an
//! `IORING_OP_FUTEX_WAIT` on the entry word (after `mark_sleeping`, so the
//! domain wakes it) and one-shot `IORING_OP_POLL_ADD`s of the local
//! descriptors, then one `io_uring_enter` with the deadline and the signal
//! mask (installed atomically by the kernel). Whatever wakes first, every
//! request still in flight is cancelled and reaped before returning, so no
//! io_uring waiter is left on the entry word (it would take the domain's
//! single wake away from a later wait on that entry) and nothing is left
//! armed on a program descriptor.
//!
//! Nothing is consumed here: a poll only observes readiness (a poll of an
//! epoll descriptor does not take its events, edge-triggered ones
//! included); the caller collects local results with the kernel's own
//! zero-timeout call and the remote ones by finishing the call
//! (interrupting it first unless it completed).
//!
//! Cost: nothing for sets without local members (they never get here), and
//! no thread: the ring is made by the first mixed wait of a thread (one
//! `io_uring_setup`, two mappings, a registration; its descriptor is
//! closed at once, so the program never sees it) and unmapped when the
//! thread exits. Without io_uring futex waits (Linux < 6.7, io_uring
//! disabled or filtered) `wait` answers None and callers keep the sliced
//! waits they had before.

use super::caller::Call;
use super::host;
use crate::sys::uring::{Ring, SetupError};
use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Submission slots per ring (completions: twice that; more local
/// descriptors are submitted in batches).
const RING_ENTRIES: u32 = 64;
/// Larger local sets keep the sliced wait.
pub const MAX_LOCAL: usize = 4096;
/// Longest single sleep: the domain's liveness is re-checked after each
/// (a failed domain never completes the call).
const LIVENESS: Duration = Duration::from_millis(100);

const TAG_FUTEX: u64 = 1;
const TAG_POLL: u64 = 2;
const TAG_CANCEL: u64 = 3;

/// What ended a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The remote call completed.
    Remote,
    /// A local descriptor is ready (or invalid: the kernel's own call
    /// reports it).
    Local,
    /// The deadline passed.
    Timeout,
    /// A signal of the program interrupted the wait (its handler ran).
    Signal,
    /// The domain stopped serving (the caller's `finish` reports it).
    Gone,
}

#[derive(Clone, Copy)]
enum Slot {
    /// No ring made yet on this thread.
    Empty,
    /// In use by a wait further down this thread's stack (a signal
    /// handler's nested wait falls back to slices).
    Busy,
    Ready(Ring),
}

thread_local! {
    static RING: Cell<Slot> = const { Cell::new(Slot::Empty) };
}

/// 0 = unknown, 1 = works, 2 = not on this kernel (no retries).
static SUPPORT: AtomicU8 = AtomicU8::new(0);

fn take(tid: i32) -> Option<Ring> {
    if SUPPORT.load(Ordering::Relaxed) == 2 {
        return None;
    }
    let slot = RING.try_with(|c| c.replace(Slot::Busy)).ok()?;
    match slot {
        Slot::Ready(r) if r.owner() == tid => Some(r),
        Slot::Ready(r) => {
            // Not this thread's ring (a vfork child on its parent's
            // stack): leave it alone.
            let _ = RING.try_with(|c| c.set(Slot::Ready(r)));
            None
        }
        Slot::Busy => None,
        Slot::Empty => match Ring::setup(RING_ENTRIES, tid) {
            Ok(r) => {
                SUPPORT.store(1, Ordering::Relaxed);
                Some(r)
            }
            Err(e) => {
                if matches!(e, SetupError::Unsupported(_)) {
                    SUPPORT.store(2, Ordering::Relaxed);
                }
                let _ = RING.try_with(|c| c.set(Slot::Empty));
                None
            }
        },
    }
}

fn put(r: Ring) {
    let _ = RING.try_with(|c| c.set(Slot::Ready(r)));
}

/// Whether mixed waits can use the ring on this kernel (as far as known).
pub fn maybe_available() -> bool {
    SUPPORT.load(Ordering::Relaxed) != 2
}

/// The thread is exiting: unmap its ring.
pub fn on_thread_exit() {
    if let Ok(Slot::Ready(r)) = RING.try_with(|c| c.replace(Slot::Empty)) {
        if r.owner() == host::gettid() as i32 {
            r.release();
        }
    }
}

/// Forked child: the mappings are copies of the parent's ring (shared
/// with it) and the registration did not come along: unmap and forget.
pub fn reset_after_fork() {
    if let Ok(Slot::Ready(r)) = RING.try_with(|c| c.replace(Slot::Empty)) {
        r.release();
    }
}

/// Wait for the started `call`, the `locals` (host descriptor, poll
/// events), the `deadline` (None: none) or a signal (`mask` installed, or
/// the program's own). Unless the call completed (or its domain is gone),
/// it has been asked to stop (`Call::interrupt`): the caller `finish`es it
/// and keeps what it answers. None: no ring on this thread (the caller
/// waits in slices instead); the call is then untouched.
pub fn wait(
    call: &Call,
    locals: impl Iterator<Item = (i32, u32)>,
    deadline: Option<Instant>,
    mask: Option<u64>,
) -> Option<Woken> {
    let tid = host::gettid() as i32;
    let mut ring = take(tid)?;
    let mut in_flight = 0u32;
    let mut woken = None;
    let mut broken = false;
    // Arm the local polls (in batches when there are many).
    for (fd, events) in locals {
        while !ring.push_poll(fd, events, TAG_POLL) {
            let r = ring.enter(0, None, None);
            if r < 0 && r != -(libc::EINTR as i64) && r != -(libc::EAGAIN as i64) {
                broken = true;
                break;
            }
        }
        if broken {
            break;
        }
        in_flight += 1;
    }
    let mut futex_armed = false;
    while woken.is_none() && !broken {
        if !futex_armed {
            match call.sleep_word() {
                None => {
                    woken = Some(Woken::Remote);
                    break;
                }
                Some((word, val)) => {
                    if !ring.push_futex_wait(word, val, TAG_FUTEX) {
                        // Full with unsubmitted polls: submit, then retry.
                        if ring.enter(0, None, None) < 0 {
                            broken = true;
                        }
                        continue;
                    }
                    in_flight += 1;
                    futex_armed = true;
                }
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            woken = Some(Woken::Timeout);
            break;
        }
        let slice = left.map_or(LIVENESS, |l| l.min(LIVENESS));
        let (r, interrupted) = crate::sys::thread::with_program_signals_atomic(mask, |m| {
            ring.enter(1, Some(slice), m)
        });
        let mut local = false;
        while let Some((tag, _res)) = ring.pop() {
            in_flight = in_flight.saturating_sub(1);
            match tag {
                TAG_FUTEX => futex_armed = false,
                TAG_POLL => local = true,
                _ => {}
            }
        }
        let eintr = r == -(libc::EINTR as i64);
        if r < 0 && !eintr && r != -(libc::ETIME as i64) && r != -(libc::EAGAIN as i64) {
            broken = r != -(libc::EBUSY as i64);
        }
        woken = if local {
            Some(Woken::Local)
        } else if call.is_done() {
            Some(Woken::Remote)
        } else if eintr || interrupted {
            Some(Woken::Signal)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Woken::Timeout)
        } else if !call.serving() {
            Some(Woken::Gone)
        } else {
            None
        };
    }
    // Ask the domain to stop the call first: its answer travels while we
    // clean up here.
    if matches!(woken, Some(Woken::Local | Woken::Timeout | Woken::Signal)) {
        call.interrupt();
    }
    // Nothing of ours stays armed: cancel and reap every request.
    if in_flight > 0 && ring.push_cancel_all(TAG_CANCEL) {
        in_flight += 1;
    }
    let mut rounds = 0;
    while in_flight > 0 && rounds < 200 {
        let r = ring.enter(in_flight, Some(Duration::from_millis(10)), None);
        while ring.pop().is_some() {
            in_flight -= 1;
        }
        if r < 0 && r != -(libc::ETIME as i64) && r != -(libc::EINTR as i64) {
            rounds += 20;
        }
        rounds += 1;
    }
    if in_flight == 0 && !broken {
        put(ring);
    } else {
        // The ring cannot be trusted any more; a futex waiter left on the
        // entry word would only delay a later wait on it (sleeps are
        // bounded). The next mixed wait of this thread makes a new ring.
        ring.release();
        let _ = RING.try_with(|c| c.set(Slot::Empty));
    }
    if broken && woken.is_none() {
        return None;
    }
    Some(woken.unwrap_or(Woken::Remote))
}
