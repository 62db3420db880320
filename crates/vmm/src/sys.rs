//! The raw system calls of the library (its only unsafe code besides one
//! ioctl in `accel`).

/// Is the effective user root?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
