//! `OP_FORK_PREPARE`: fork the shadow before the client forks.
//!
//! The worker that took the request creates a socketpair (both ends in the
//! shadow's own descriptor range) and asks the shadow's zygote to fork
//! (`zygote.rs`): the child is a copy of the single-threaded zygote with a
//! copy of the shadow's descriptor table, cwd and umask as they are now, and
//! keeps the pair's second end as its control socket. The worker passes the
//! first end to the main process (`ShadowMsg::ForkPending { token, pid }`,
//! token = 62 random bits) and completes the request with the token. The
//! child makes its own zygote and blocks on its socket until the main
//! process sends `MainMsg::Attach` with the new client's region, state
//! page and credentials table (`AttachForked`); end of file there means the
//! fork was aborted or the parent client removed, and the child exits.
//!
//! Nothing here forks the (multithreaded) shadow itself: a child of a
//! multithreaded process may find a lock held forever by a thread it does
//! not have, and hang as soon as it starts a thread of its own.
//!
//! Credentials and RLIMIT_NPROC: the zygote forks with the credentials the
//! requesting worker acts with (the client thread's), read from the kernel
//! here, and with the soft RLIMIT_NPROC lowered to the client's
//! (`AddClient { nproc }`). So the fork counts the client's uid's processes
//! like the client's own fork does and fails with EAGAIN where the client's
//! would, which the client's library returns from its fork: a flood of
//! pending shadows cannot outgrow the client's limit.

use super::Shadow;
use crate::proto::ShadowMsg;
use rustix::fd::AsFd;

fn neg(e: &std::io::Error) -> i64 {
    -(e.raw_os_error().unwrap_or(libc::EIO) as i64)
}

pub(super) fn prepare(shadow: &Shadow) -> i64 {
    let _guard = shadow.fork_lock.lock().unwrap_or_else(|e| e.into_inner());
    let token = match crate::sys::random_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "fork: getrandom: {e}");
            return neg(&e);
        }
    };
    // What this worker acts with now (switched per call by its
    // `ThreadCreds`); without privileges to switch, the zygote keeps the
    // credentials the whole shadow took.
    let creds = match shadow.permitted {
        Some(_) => match crate::sys::thread_credentials() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(client = shadow.client_id, "fork: own credentials: {e}");
                return neg(&e);
            }
        },
        None => None,
    };
    let (ours, theirs) = match super::zygote::control_pair(shadow.limits) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "fork: socketpair: {e}");
            return neg(&e);
        }
    };
    // The child runs the same program: its shadow takes over the pins of
    // the image (the numbers are the same in its copy of the table; held
    // open here until the zygote has forked).
    let images = shadow.images.lock().unwrap_or_else(|p| p.into_inner());
    let pins = images.current_pins();
    let forked = shadow.zygote.fork(theirs.as_fd(), creds, pins);
    drop(images);
    let pid = match forked {
        Ok(pid) => pid,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            tracing::info!(
                client = shadow.client_id,
                nproc = shadow.nproc,
                "fork refused: the client's RLIMIT_NPROC is reached"
            );
            return neg(&e);
        }
        Err(e) => {
            tracing::warn!(client = shadow.client_id, "fork: the zygote: {e}");
            return neg(&e);
        }
    };
    // The child has its copy; ours goes.
    drop(theirs);
    let msg = ShadowMsg::ForkPending { token, pid };
    if let Err(e) = shadow.tell_main(&msg, &[ours.as_fd()]) {
        tracing::warn!(
            client = shadow.client_id,
            "fork: cannot reach the domain: {e}"
        );
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        return neg(&e);
    }
    token as i64
}
