//! The few operations that need `unsafe`: work in a freshly forked child
//! before `exec`, and synchronous signal handling in the daemon.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals that stop the daemon cleanly.
const TERMINATION: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in TERMINATION {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block SIGTERM/SIGINT/SIGHUP in the calling thread (and so in every thread
/// it starts afterwards), so that [`wait_termination_signal`] can take them.
pub fn block_termination_signals() -> std::io::Result<()> {
    let set = termination_set();
    // SAFETY: changes only this thread's signal mask; `set` is initialised.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Wait for one of the blocked termination signals; returns its number.
pub fn wait_termination_signal() -> libc::c_int {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait reads the initialised set and writes `sig`.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return libc::SIGTERM;
    }
    sig
}

/// Prepare `cmd` to start a domain server: `fds[k]` becomes descriptor
/// `3 + k` of the child (inheritable; 3 is the control socket, 4 the
/// heartbeat page), the child leads a process group of its own (so that
/// the daemon can stop or kill the domain with all its shadows), its
/// signal mask is cleared (the daemon blocks termination signals) and it
/// gets SIGTERM when the daemon dies.
///
/// The daemon must spawn domains from a thread that lives as long as it
/// does: the parent-death signal follows the forking thread.
pub fn domain_child_setup(cmd: &mut Command, fds: [RawFd; 2]) {
    const FIRST: RawFd = 3;
    const PARK: RawFd = 100;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (fcntl, dup2, close, setpgid,
    // sigprocmask, prctl) on plain integers; it allocates nothing and takes
    // no locks.
    unsafe {
        cmd.pre_exec(move || {
            // Park every source above the targets first, so that a source
            // already sitting on a target number is not overwritten.
            let mut parked = [0 as RawFd; 2];
            for (k, &fd) in fds.iter().enumerate() {
                parked[k] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, PARK);
                if parked[k] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (k, &p) in parked.iter().enumerate() {
                // dup2 leaves the target without FD_CLOEXEC.
                if libc::dup2(p, FIRST + k as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(p);
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            clear_mask_and_die_with_parent()
        });
    }
}

/// In a forked child before exec: clear the signal mask (the daemon blocks
/// termination signals) and ask for SIGTERM when the parent thread dies.
///
/// # Safety
///
/// Only from a `pre_exec` closure: it makes async-signal-safe system calls
/// (sigprocmask, prctl) on plain integers, allocates nothing and takes no
/// locks.
unsafe fn clear_mask_and_die_with_parent() -> std::io::Result<()> {
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    if libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGTERM as libc::c_ulong,
        0,
        0,
        0,
    ) < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Send `sig` to every process of process group `pgid` (a domain and its
/// shadows). ESRCH (nobody left) is not an error.
pub fn signal_group(pgid: u32, sig: rustix::process::Signal) -> std::io::Result<()> {
    let Some(p) = rustix::process::Pid::from_raw(pgid as i32) else {
        return Ok(());
    };
    match rustix::process::kill_process_group(p, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Prepare `cmd` to start a domain VM's QEMU: a clean signal mask (the
/// daemon blocks termination signals) and SIGTERM when the daemon dies.
/// Same thread rule as [`domain_child_setup`].
pub fn vm_child_setup(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (sigprocmask, prctl) on plain integers;
    // it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| clear_mask_and_die_with_parent());
    }
}
