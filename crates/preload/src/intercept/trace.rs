//! `VIRTUOS_TRACE=1`: one line per intercepted call on stderr, written with
//! a fixed buffer and a raw write (no allocation, no libc).

use core::sync::atomic::{AtomicBool, Ordering};

use crate::sys::kernel::{self, LineBuf};

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `virtuos: trace pid=P tid=T nr=N <how> [r=R]`.
pub fn event(nr: u64, how: &str, result: Option<i64>) {
    if !enabled() {
        return;
    }
    let mut l = LineBuf::new();
    l.str("virtuos: trace pid=")
        .int(kernel::getpid() as i64)
        .str(" tid=")
        .int(kernel::gettid() as i64)
        .str(" nr=")
        .int(nr as i64)
        .str(" ")
        .str(how);
    if let Some(r) = result {
        l.str(" r=").int(r);
    }
    l.emit();
}
