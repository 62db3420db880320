//! The client's side of one forwarded call: submit, ring only if workers
//! sleep, spin a bounded number of times, then announce sleep and block.
//!
//! Allocation-free: the preload library calls this from its SIGSYS handler.

use crate::entry::RequestEntry;
use crate::region::{ClientRegion, RegionError};
use crate::state::DomainState;
use core::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a caller waits for its result.
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    /// Polls of the entry before going to sleep (the paper's spin threshold).
    pub spin: u32,
    /// Longest single sleep; the caller re-checks liveness after each.
    pub sleep_slice: Duration,
    /// Give up (ETIMEDOUT-like failure) after this long without a result, or
    /// never if None.
    pub deadline: Option<Duration>,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            spin: 2000,
            sleep_slice: Duration::from_millis(100),
            deadline: None,
        }
    }
}

/// Why a call produced no result.
#[derive(Debug, PartialEq, Eq)]
pub enum CallError {
    BadEntry,
    Region(RegionError),
    /// The domain stopped serving (state page says so) or the deadline passed.
    DomainGone,
}

/// Submit the already-filled entry `index` and wait for its completion.
/// Returns (result, extra) and leaves the entry in the Free phase.
pub fn submit_and_wait(
    region: &ClientRegion,
    state: &DomainState,
    index: u16,
    policy: WaitPolicy,
) -> Result<(i64, u64), CallError> {
    submit_and_wait_with(region, state, index, policy, &mut plain_sleep)
}

/// How a caller sleeps on a word: `sleep(word, expected, slice)` returns
/// true if a signal interrupted the sleep and the call should be
/// interrupted in the domain.
pub type Sleeper<'a> = dyn FnMut(&AtomicU32, u32, Duration) -> bool + 'a;

fn plain_sleep(word: &AtomicU32, expected: u32, slice: Duration) -> bool {
    crate::doorbell::wait(word, expected, Some(slice));
    false
}

/// `submit_and_wait` with the caller's own sleep: when `sleep` reports a
/// signal, the call is interrupted in the domain (`request_interrupt`) and
/// the wait goes on, uninterruptibly, for the domain's answer (EINTR, or
/// the real result if the call had already finished).
pub fn submit_and_wait_with(
    region: &ClientRegion,
    state: &DomainState,
    index: u16,
    policy: WaitPolicy,
    sleep: &mut Sleeper<'_>,
) -> Result<(i64, u64), CallError> {
    let entry = region.entry(index).ok_or(CallError::BadEntry)?;
    region.submit(index).map_err(CallError::Region)?;
    region.ring_if_idle(state);
    let mut interrupted = false;
    let mut on_signal = || {
        if !interrupted {
            interrupted = true;
            region.request_interrupt(index);
        }
    };
    wait_done(entry, state, policy, sleep, &mut on_signal)?;
    let r = entry.result();
    entry.release();
    Ok(r)
}

fn wait_done(
    entry: &RequestEntry,
    state: &DomainState,
    policy: WaitPolicy,
    sleep: &mut Sleeper<'_>,
    on_signal: &mut dyn FnMut(),
) -> Result<(), CallError> {
    for _ in 0..policy.spin {
        if entry.is_done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    let start = std::time::Instant::now();
    loop {
        let Some(val) = entry.mark_sleeping() else {
            return Ok(());
        };
        if sleep(&entry.state, val, policy.sleep_slice) {
            on_signal();
        }
        if entry.is_done() {
            return Ok(());
        }
        let gone = !state.serving() || policy.deadline.is_some_and(|d| start.elapsed() > d);
        if gone {
            return Err(CallError::DomainGone);
        }
    }
}

/// Domain side: publish a result and wake the caller only if it sleeps.
pub fn complete(entry: &RequestEntry, result: i64, extra: u64) {
    if entry.complete(result, extra) {
        crate::doorbell::wake(&entry.state, 1);
    }
}
