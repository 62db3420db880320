//! Forwarding: the decision and the call. Owned by the forwarding half.
//!
//! Interface used by `intercept` (keep these signatures stable):
//! every function here is allocation-free unless it says otherwise, because
//! it runs inside a SIGSYS/SIGTRAP handler, possibly while the interrupted
//! code holds libc locks (malloc's during fork).
//!
//! Modules, in layers (bottom to top); a module imports only modules of
//! lower layers or listed before it in its own, and nothing of
//! `intercept` (the signal-mask helpers the waits use are
//! `crate::sys::thread`'s):
//! 1. ground, importing nothing of `forward` but each other: `domain`
//!    (domain ids, slots, epochs), `path` (PATH_MAX, lexical
//!    normalisation), `host` (raw host calls, placeholders), `sync`, `log`,
//!    `usermem` (the program's memory), `pools` (entry and chunk
//!    allocation per domain), `action` (what a call returns);
//! 2. state: `state` (configuration), `cwd`, `fds::table` (the pure
//!    descriptor table);
//! 3. transport: `session` (daemon, region, registration, claim,
//!    reattach), `caller` (the call), `marshal` (shape-driven copies),
//!    `wake` (one wait for a remote call and host descriptors);
//! 4. descriptors: `fds` (`get` re-opens stale storage entries,
//!    `set`/`take` void re-open records: `fds::reopen`);
//! 5. calls: `fork`, `fdlink` (descriptor link names), `route` (paths),
//!    `unix_addr`, `generic` (shaped calls, chdir/getcwd), `io` (splitting,
//!    vectored, cross-domain copies), `net` (sockets of the network
//!    domain), `unix` (AF_UNIX sockets at storage paths move to the
//!    storage domain), `procfs`, `poll`, `epoll` (sets with network
//!    sockets), `fd_ops` (close/dup/fcntl/ioctl/close_range), `mmap`,
//!    `unsupported`, `exec`, `exec_image`;
//! 6. this file: the dispatch and the hooks `intercept` calls.
//!
//! Domains: one session per domain (`domain::DOMAINS`: storage, network).
//! Paths route to storage; `socket(AF_INET|AF_INET6)` to network; an
//! AF_UNIX socket given a storage path (`bind`, `connect`, `sendto`) to
//! storage; a call on a forwarded descriptor goes to the domain of that
//! descriptor. Unsafe code lives only in `sync`, `host`, `usermem`,
//! `session` (its leaked sessions), `exec_image` (a stat's bytes), this
//! file (`pthread_atfork`) and the table mapping in `fds::table`.
//!
//! Stack: the path-taking handlers use up to ~24 KiB of stack (two
//! 8 KiB path scratch buffers and a cwd copy); the signal stack must
//! allow for that.

pub mod action;
pub mod caller;
pub mod cwd;
pub mod domain;
pub mod epoll;
pub mod exec;
pub mod exec_image;
pub mod fd_ops;
pub mod fdlink;
pub mod fds;
pub mod fork;
pub mod generic;
pub mod host;
pub mod io;
pub mod log;
pub mod marshal;
pub mod mmap;
pub mod net;
pub mod path;
pub mod poll;
pub mod pools;
pub mod procfs;
pub mod route;
pub mod session;
pub mod state;
pub mod sync;
pub mod unix;
pub mod unix_addr;
pub mod unsupported;
pub mod usermem;
pub mod wake;

use virtuos_abi::ops::VIRTUAL_BASE;

pub use action::Action;

/// Decide and, if it belongs to a domain, perform syscall `nr`.
/// Not called for clone/clone3/fork/vfork/execve/execveat (see below).
pub fn on_syscall(nr: u64, args: [u64; 6]) -> Action {
    // A panic must not unwind out of a signal handler: report EIO instead.
    match std::panic::catch_unwind(|| dispatch(nr, args)) {
        Ok(a) => a,
        Err(_) => Action::Done(-(libc::EIO as i64)),
    }
}

fn dispatch(nr: u64, a: [u64; 6]) -> Action {
    if nr >= VIRTUAL_BASE as u64 {
        // Not a Linux call we know (and never a virtual op of ours).
        return Action::Local;
    }
    match nr as i64 {
        libc::SYS_read | libc::SYS_write | libc::SYS_pread64 | libc::SYS_pwrite64 => {
            match fds::get(a[0]) {
                Some(e) => io::rw(nr, a, e),
                None => Action::Local,
            }
        }
        libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_preadv
        | libc::SYS_pwritev
        | libc::SYS_preadv2
        | libc::SYS_pwritev2 => match fds::get(a[0]) {
            Some(e) => io::vectored(nr, a, e),
            None => Action::Local,
        },
        libc::SYS_close => fd_ops::close(a[0]),
        libc::SYS_dup => fd_ops::dup(a[0]),
        libc::SYS_dup2 => fd_ops::dup2(nr, a, None),
        libc::SYS_dup3 => fd_ops::dup2(nr, a, Some(a[2])),
        libc::SYS_fcntl => fd_ops::fcntl(a),
        libc::SYS_ioctl => fd_ops::ioctl(a),
        libc::SYS_close_range => fd_ops::close_range(a),
        libc::SYS_copy_file_range | libc::SYS_sendfile | libc::SYS_splice => io::transfer(nr, a),
        libc::SYS_mmap => mmap::mmap(a),
        libc::SYS_socket => net::socket(a),
        libc::SYS_bind | libc::SYS_connect => match unix::bind_connect(nr, a) {
            Action::Local => shaped_or_local(nr, a),
            done => done,
        },
        libc::SYS_listen | libc::SYS_shutdown | libc::SYS_setsockopt => {
            net::on_fd(nr, a, net::plain)
        }
        libc::SYS_accept | libc::SYS_accept4 => net::on_fd(nr, a, net::accept),
        libc::SYS_getsockname | libc::SYS_getpeername => net::on_fd(nr, a, net::sockname),
        libc::SYS_getsockopt => net::on_fd(nr, a, net::getsockopt),
        libc::SYS_recvfrom => net::on_fd(nr, a, net::recvfrom),
        libc::SYS_sendto => net::on_fd_or(nr, a, net::sendto, unix::sendto_local),
        libc::SYS_sendmsg => net::on_fd_or(nr, a, net::sendmsg, unix::sendmsg_local),
        libc::SYS_recvmsg => net::on_fd(nr, a, net::recvmsg),
        libc::SYS_sendmmsg => net::on_fd_or(nr, a, net::sendmmsg, unix::sendmsg_local),
        libc::SYS_recvmmsg => net::on_fd(nr, a, net::recvmmsg),
        libc::SYS_poll | libc::SYS_ppoll => poll::poll(nr, a),
        libc::SYS_select | libc::SYS_pselect6 => poll::select(nr, a),
        libc::SYS_epoll_ctl => epoll::ctl(a),
        libc::SYS_epoll_create | libc::SYS_epoll_create1 => epoll::create(nr, a),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
            match epoll::wait(nr, a) {
                Action::Local => shaped_or_local(nr, a),
                done => done,
            }
        }
        libc::SYS_umask => generic::umask(a[0]),
        libc::SYS_setuid
        | libc::SYS_setgid
        | libc::SYS_setreuid
        | libc::SYS_setregid
        | libc::SYS_setresuid
        | libc::SYS_setresgid
        | libc::SYS_setgroups
        | libc::SYS_setfsuid
        | libc::SYS_setfsgid
        | libc::SYS_capset => generic::credentials_change(nr, a),
        libc::SYS_getcwd => generic::getcwd(a),
        libc::SYS_chdir => generic::chdir(a),
        libc::SYS_fchdir => generic::fchdir(a),
        libc::SYS_open | libc::SYS_openat | libc::SYS_openat2 => {
            procfs::open(nr, a).unwrap_or_else(|| shaped_or_local(nr, a))
        }
        libc::SYS_linkat => procfs::linkat(a).unwrap_or_else(|| shaped_or_local(nr, a)),
        libc::SYS_readlink | libc::SYS_readlinkat => {
            procfs::readlink(nr, a).unwrap_or_else(|| shaped_or_local(nr, a))
        }
        _ => shaped_or_local(nr, a),
    }
}

fn shaped_or_local(nr: u64, a: [u64; 6]) -> Action {
    match virtuos_abi::shape::shape(nr as u16) {
        Some(sh) => generic::shaped(nr, a, sh),
        None => unsupported::check(nr, a),
    }
}

/// Opaque state carried from `before_fork` to the `after_fork_*` calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkTicket {
    /// Per domain slot: the prepared shadow's token.
    pub tokens: session::ForkTokens,
}

/// A process-creating clone (no CLONE_THREAD) is about to run.
/// `Err(-errno)`: the fork must fail with that error (a domain could not
/// prepare the child's shadow: EAGAIN under RLIMIT_NPROC;
/// `fork::before_fork`).
pub fn before_fork(clone_flags: u64) -> Result<ForkTicket, i64> {
    let _ = clone_flags;
    epoll::before_fork();
    Ok(ForkTicket {
        tokens: fork::before_fork()?,
    })
}

/// In the parent after the fork syscall returned `result` (child pid or -errno).
pub fn after_fork_parent(ticket: ForkTicket, result: i64) {
    fork::after_fork_parent(ticket.tokens, result);
}

/// In the child (a separate process) right after the fork syscall.
pub fn after_fork_child(ticket: ForkTicket) {
    let tokens = ticket.tokens;
    epoll::after_fork_child(|d| {
        let t = domain::slot_of(d).and_then(|k| tokens.get(k).copied());
        matches!(t, Some(Some(_)))
    });
    wake::reset_after_fork();
    fork::after_fork_child(ticket.tokens);
}

/// True when this process has forwarded state (registered with a domain, or
/// holds forwarded descriptors or a forwarded cwd): then a CLONE_VM child
/// must not share our memory (intercept drops CLONE_VM).
pub fn has_forwarded_state() -> bool {
    session::has_forwarded_state()
}

pub use exec_image::ExecPlan;

/// An execve/execveat is about to run: returns what to execute natively
/// instead (a program stored in a domain is presented by the client), after
/// saving the descriptor table for the new image.
pub fn before_exec(nr: u64, args: [u64; 6]) -> ExecPlan {
    let plan = exec_image::plan(nr, args);
    if !matches!(plan, ExecPlan::Fail(_)) {
        exec::before_exec();
    }
    plan
}

/// The execve/execveat failed with `result` (-errno); undo `before_exec`.
pub fn after_exec_failed(result: i64) {
    let _ = result;
    exec::after_exec_failed();
    exec_image::release();
    exec_image::abort_claim();
}

/// The process is about to exit (SYS_exit_group).
pub fn on_process_exit() {
    exec_image::on_exit();
}

/// The calling thread is about to exit (SYS_exit).
pub fn on_thread_exit() {
    wake::on_thread_exit();
    pools::on_thread_exit();
}

extern "C" fn atfork_child() {
    fork::claim_pending_now();
}

/// Called once from the library constructor, before interception is armed.
/// May allocate.
pub fn init_process() {
    let record = exec::take_record();
    let cfg = state::Config::from_env(record.as_ref().map(|r| r.mount.as_slice()));
    state::set_config(cfg);
    // SAFETY: registering a plain extern "C" function with no arguments as
    // the child handler of pthread_atfork; it lives as long as the library.
    unsafe {
        libc::pthread_atfork(None, None, Some(atfork_child));
    }
    if let Some(r) = record {
        exec::apply(r);
    }
}

/// Test hook: configure the storage mount and install an already mapped
/// region and state page as this process's session (no daemon involved).
/// Must run before any other forwarding function. Allocates.
#[doc(hidden)]
pub fn install_test_session(
    region_fd: impl rustix::fd::AsFd,
    state_fd: impl rustix::fd::AsFd,
    mount: &str,
) -> Result<(), String> {
    let mut cfg = state::Config::defaults();
    cfg.mount = state::normalized_mount(mount.as_bytes()).ok_or("bad mount")?;
    if !state::set_config(cfg) {
        return Err("configuration already in use".into());
    }
    let s = session::map_session(region_fd, state_fd)?;
    session::install(domain::DOMAIN_STORAGE, s);
    Ok(())
}

/// Test hook: install an already mapped region and state page as this
/// process's network domain session (after `install_test_session`).
/// Allocates.
#[doc(hidden)]
pub fn install_test_network_session(
    region_fd: impl rustix::fd::AsFd,
    state_fd: impl rustix::fd::AsFd,
) -> Result<(), String> {
    let s = session::map_session(region_fd, state_fd)?;
    session::install(domain::DOMAIN_NETWORK, s);
    Ok(())
}
