//! Worker threads of a shadow.
//!
//! "One spare per client": whenever a worker takes a request and no other
//! worker is idle, it starts another one first (up to `MAX_WORKERS`), so a
//! call that blocks (flock, a FIFO read) never stalls the client's other
//! threads. Idle workers spin on the submit list for a short, bounded time
//! after finishing a request (only while fewer than `cpus - 1`, at least one,
//! of this client's workers spin), then sleep on the doorbell (`ClientRegion::worker_sleep`,
//! which maintains `idle_workers` for the client's ring-if-idle check).
//! Surplus workers that stay idle for `RETIRE_AFTER` exit, keeping one spare.

use super::Shadow;
use crate::creds::ThreadCreds;
use crate::exec;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtuos_abi::list::WALK_LIMIT;

/// What a corrupted shadow (fault injection) writes as every result.
const GARBAGE: u64 = 0xdead_beef_dead_beef;
/// Most workers per shadow.
pub const MAX_WORKERS: u32 = 64;
const STACK_SIZE: usize = 256 * 1024;
/// How long an idle worker spins on the submit list before sleeping.
const SPIN_FOR: Duration = Duration::from_micros(50);
/// Longest sleep on the doorbell before re-checking.
const SLEEP_SLICE: Duration = Duration::from_millis(100);
/// An idle worker beyond the first spare exits after this long.
const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// Start one more worker. Returns false when the cap is reached or the
/// thread could not be created.
pub fn spawn(shadow: &Arc<Shadow>) -> bool {
    let prev = shadow.workers.fetch_add(1, Ordering::AcqRel);
    if prev >= MAX_WORKERS {
        shadow.workers.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    shadow.idle.fetch_add(1, Ordering::AcqRel);
    publish_count(shadow);
    let sh = Arc::clone(shadow);
    let spawned = std::thread::Builder::new()
        .name(format!("worker-{prev}"))
        .stack_size(STACK_SIZE)
        .spawn(move || run(sh));
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "cannot start a worker: {e}");
            shadow.idle.fetch_sub(1, Ordering::AcqRel);
            shadow.workers.fetch_sub(1, Ordering::AcqRel);
            publish_count(shadow);
            false
        }
    }
}

fn publish_count(shadow: &Shadow) {
    let n = shadow.workers.load(Ordering::Acquire);
    shadow.state.get().workers.store(n, Ordering::Release);
}

fn run(shadow: Arc<Shadow>) {
    let st = shadow.state.get();
    let mut hot = false;
    let mut idle_since = Instant::now();
    let mut creds = ThreadCreds::default();
    // Entries popped in a row that could not be claimed: a well-formed
    // list holds each entry once, so more than `WALK_LIMIT` means the
    // client's list loops (it would keep this worker spinning forever).
    let mut useless = 0usize;
    loop {
        if shadow.queue_broken.load(Ordering::Acquire) {
            return;
        }
        match shadow.region.take_submitted() {
            Ok(Some(index)) => {
                shadow.claims.fetch_add(1, Ordering::Relaxed);
                if handle(&shadow, index, &mut creds) {
                    hot = true;
                    idle_since = Instant::now();
                    useless = 0;
                } else {
                    useless += 1;
                    if useless > WALK_LIMIT {
                        shadow.queue_broken(&format!(
                            "its submit list loops (more than {WALK_LIMIT} entries popped \
                             without one that was submitted)"
                        ));
                        return;
                    }
                }
            }
            Ok(None) => {
                if hot {
                    hot = false;
                    if spin(&shadow) {
                        continue;
                    }
                }
                if idle_since.elapsed() > RETIRE_AFTER && retire(&shadow) {
                    return;
                }
                shadow.region.worker_sleep(st, SLEEP_SLICE);
            }
            Err(e) => {
                shadow.queue_broken(&e.to_string());
                return;
            }
        }
    }
}

/// Claim and execute entry `index` with the credentials of the client
/// thread that submitted it. False if it could not be claimed.
fn handle(shadow: &Arc<Shadow>, index: u16, creds: &mut ThreadCreds) -> bool {
    let Some(entry) = shadow.region.entry(index) else {
        return false;
    };
    let Some(req) = entry.claim() else {
        tracing::debug!(
            client = shadow.client_id,
            index,
            "entry on the submit list is not submitted"
        );
        return false;
    };
    // We are busy now; if nobody else is idle, start the spare first.
    if shadow.idle.fetch_sub(1, Ordering::AcqRel) <= 1 {
        spawn(shadow);
    }
    let host: &Shadow = shadow;
    let tid = crate::sys::gettid();
    shadow.started(tid, index);
    let acting = match shadow.permitted {
        Some(permitted) => creds.ensure(&shadow.creds, req.task, permitted),
        None => Ok(()),
    };
    let outcome = if let Err(errno) = acting {
        Ok((errno, 0))
    } else {
        // A signal that reached the client before the call started does
        // not stop it here, as natively a signal does not stop a call that
        // cannot block (a write to a regular file): it runs, and if it
        // blocks where the kernel lets signals in (a pipe, a lock wait) the
        // interrupter makes it return EINTR.
        if entry.interrupt_requested() {
            shadow.region.kick_interrupter();
        }
        catch_unwind(AssertUnwindSafe(|| {
            exec::execute(&shadow.region, host, &req)
        }))
    };
    shadow.finished(tid, index);
    let (result, extra) = outcome.unwrap_or_else(|_| {
        tracing::error!(client = shadow.client_id, op = req.op, "request panicked");
        (-(libc::EIO as i64), 0)
    });
    if shadow.corrupt.load(Ordering::Acquire) {
        // A misbehaving domain: no errno, no length a caller could accept.
        shadow.waker.complete(entry, index, GARBAGE as i64, GARBAGE);
    } else {
        shadow.waker.complete(entry, index, result, extra);
    }
    shadow.idle.fetch_add(1, Ordering::AcqRel);
    true
}

/// Spin on the submit list for a bounded time. True if work showed up.
fn spin(shadow: &Shadow) -> bool {
    let st = shadow.state.get();
    let spinning = st.spinning_workers.fetch_add(1, Ordering::AcqRel);
    let mut found = false;
    // Leave a CPU to the client threads that spin on their entries (the
    // process backend shares the host's CPUs): at most cpus - 1 spinners,
    // and at least one.
    if spinning < shadow.cpus.saturating_sub(1).max(1) {
        let start = Instant::now();
        'outer: loop {
            for _ in 0..64 {
                if shadow.region.has_submitted() {
                    found = true;
                    break 'outer;
                }
                core::hint::spin_loop();
            }
            if start.elapsed() > SPIN_FOR {
                break;
            }
        }
    }
    st.spinning_workers.fetch_sub(1, Ordering::AcqRel);
    found
}

/// Leave if another worker is idle (so one spare always remains).
fn retire(shadow: &Shadow) -> bool {
    let mut cur = shadow.idle.load(Ordering::Acquire);
    loop {
        if cur < 2 {
            return false;
        }
        match shadow
            .idle
            .compare_exchange(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => break,
            Err(actual) => cur = actual,
        }
    }
    shadow.workers.fetch_sub(1, Ordering::AcqRel);
    publish_count(shadow);
    tracing::debug!(client = shadow.client_id, "idle worker retired");
    true
}
