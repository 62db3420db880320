//! Sleeping and waking on a 32-bit word of shared memory.
//!
//! Process backend: a shared (not process-private) futex, which works across
//! processes that map the same memfd. A futex wake cannot cross the VM
//! boundary, so the vm backend relays wakes as bells (`slot::Bell`) over
//! the VM's bell port, a virtio-serial port: down, the daemon watches each
//! region slot's `doorbell` and `interrupt_bell` words (`futex_waitv`) and
//! sends a bell that the guest's PID 1 turns into a wake here; up, a guest
//! worker sends `Complete` for a sleeping caller and the daemon does the
//! host wake (crates/virtuos/src/backend/vm/bells.rs). Both sides keep the
//! rule "ring only when the other side announced that it sleeps".

use core::sync::atomic::AtomicU32;
use rustix::thread::futex;
use std::time::Duration;

/// Sleep while `*word == expected`, at most `timeout`. Returns early on a
/// wake, a signal, or a changed value: callers always re-check their state.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wake up to `count` sleepers on `word`.
pub fn wake(word: &AtomicU32, count: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), count);
}
