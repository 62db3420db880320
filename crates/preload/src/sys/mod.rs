//! Raw system calls issued from this library's own text (which Syscall User
//! Dispatch always allows, whatever the selector says).
//!
//! rustix (linux_raw backend) also issues its syscalls from inlined code in
//! this library, so it is safe to use from the handlers too; `raw` is for
//! passing an intercepted call through with its exact number and arguments.
//! `kernel` holds the small allocation-free helpers the handlers use;
//! `thread` the per-thread state of the interception (selector, pending
//! trap, the program's signal mask while a handler runs) and the helpers
//! that let a forwarded call's wait be interrupted by the program's signals.

pub mod kernel;
pub mod raw;
pub mod thread;
pub mod uring;
pub mod usercopy;
