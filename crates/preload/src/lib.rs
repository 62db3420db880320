//! `libvirtuos.so`: preloaded into unmodified, dynamically linked programs.
//!
//! Two halves with one narrow interface between them:
//! - `intercept`: catches every system call (Syscall User Dispatch + fast
//!   exported wrappers), keeps interception alive across threads, fork and
//!   exec, and keeps the program's signal handling from breaking it.
//! - `forward`: decides per call whether it belongs to a service domain, keeps
//!   the descriptor table and cwd, marshals the call into the shared request
//!   region and waits for the result.
//!
//! - `sys`: raw system calls and the helpers both halves stand on, among
//!   them the per-thread state (`sys::thread`) and `with_program_signals`,
//!   which makes forward's waits interruptible by the program's signals.
//!
//! `intercept` calls only the functions of `forward/mod.rs`; `forward` never
//! calls `intercept`.

pub mod forward;
pub mod intercept;
pub mod sys;

/// Run the interception constructor when the library is loaded.
#[used]
#[link_section = ".init_array"]
static VIRTUOS_INIT: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = intercept::constructor;
