//! Which local calls may run inside the SIGSYS handler.
//!
//! Inside the handler the program's signals are blocked, so only calls that
//! cannot block waiting for an event (and so never need a signal to
//! interrupt them) run there as they are (`Handler`). Everything else, and
//! anything not listed, is `Blocking`: the handler runs it with the
//! program's own (sanitized) signal mask installed around it, or, with
//! `VIRTUOS_LOCAL=native`, re-executes it natively with the trap flag.

use crate::sys::kernel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Execute with `syscall6` inside the handler.
    Handler,
    /// May wait for an event: must stay interruptible by the program's
    /// signals.
    Blocking,
}

/// Never block: identity, memory, metadata, descriptor bookkeeping, time.
const NONBLOCKING: &[i64] = &[
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getpgrp,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_setpgid,
    libc::SYS_setsid,
    libc::SYS_getcwd,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_times,
    libc::SYS_time,
    libc::SYS_gettimeofday,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_umask,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_utimensat,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_arch_prctl,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_yield,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_getrandom,
    libc::SYS_getcpu,
    libc::SYS_capget,
    libc::SYS_memfd_create,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_alarm,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_exit_group,
    libc::SYS_membarrier,
    libc::SYS_personality,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    // The sigmask-taking waits: run in the handler, they install the
    // (sanitized) mask the program asked for while they wait, so its
    // signals interrupt them exactly as natively.
    libc::SYS_rt_sigsuspend,
];

/// Calls that wait with a temporary mask when their mask argument is set.
pub fn is_masked_wait(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_ppoll | libc::SYS_pselect6 | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2
    )
}

fn regular_or_dir(t: u32) -> bool {
    t == libc::S_IFREG || t == libc::S_IFDIR || t == libc::S_IFBLK
}

/// Where a local call with these arguments runs.
pub fn placement(nr: i64, args: &[u64; 6]) -> Placement {
    use Placement::*;
    if NONBLOCKING.contains(&nr) {
        return Handler;
    }
    match nr {
        // File I/O: disk reads do not wait for events; pipes, sockets and
        // terminals do. One fstat (~0.1 us) is much cheaper than a trap.
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_pread64
        | libc::SYS_pwrite64
        | libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_preadv
        | libc::SYS_pwritev
        | libc::SYS_preadv2
        | libc::SYS_pwritev2
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_copy_file_range => match kernel::fd_type(args[0]) {
            Some(t) if regular_or_dir(t) => Handler,
            // Let the kernel report the bad descriptor.
            None => Handler,
            _ => Blocking,
        },
        // Opening a FIFO (or some devices) blocks; stat the path first.
        libc::SYS_open | libc::SYS_openat => {
            let (dirfd, path, flags) = if nr == libc::SYS_open {
                (libc::AT_FDCWD as i64 as u64, args[0], args[1])
            } else {
                (args[0], args[1], args[2])
            };
            if flags & (libc::O_NONBLOCK | libc::O_PATH) as u64 != 0 {
                return Handler;
            }
            match kernel::path_type(dirfd, path) {
                Ok(t) if regular_or_dir(t) => Handler,
                Ok(_) => Blocking,
                Err(_) => Handler,
            }
        }
        // Wakes, requeues and unlocks never wait.
        libc::SYS_futex => match args[1] as i32 & 0x7f {
            libc::FUTEX_WAKE
            | libc::FUTEX_WAKE_OP
            | libc::FUTEX_WAKE_BITSET
            | libc::FUTEX_REQUEUE
            | libc::FUTEX_CMP_REQUEUE
            | libc::FUTEX_UNLOCK_PI
            | libc::FUTEX_TRYLOCK_PI => Handler,
            _ => Blocking,
        },
        libc::SYS_fcntl => match args[1] as i32 {
            libc::F_SETLKW | libc::F_OFD_SETLKW => Blocking,
            _ => Handler,
        },
        libc::SYS_ioctl => match args[1] as libc::c_ulong {
            libc::TCGETS
            | libc::TIOCGWINSZ
            | libc::FIONREAD
            | libc::FIOCLEX
            | libc::FIONCLEX
            | libc::FIONBIO
            | libc::TIOCGPGRP => Handler,
            _ => Blocking,
        },
        libc::SYS_flock => {
            if args[1] as i32 & libc::LOCK_NB != 0 {
                Handler
            } else {
                Blocking
            }
        }
        _ => Blocking,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(placement(libc::SYS_getppid, &[0; 6]), Placement::Handler);
        assert_eq!(placement(libc::SYS_nanosleep, &[0; 6]), Placement::Blocking);
        assert_eq!(placement(libc::SYS_futex, &[0; 6]), Placement::Blocking);
        let wake = [
            0,
            (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
            1,
            0,
            0,
            0,
        ];
        assert_eq!(placement(libc::SYS_futex, &wake), Placement::Handler);
        assert_eq!(placement(libc::SYS_wait4, &[0; 6]), Placement::Blocking);
        let mut fds = [0i32; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert_eq!(
            placement(libc::SYS_read, &[fds[0] as u64, 0, 0, 0, 0, 0]),
            Placement::Blocking
        );
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(
            placement(libc::SYS_read, &[f.as_raw_fd() as u64, 0, 0, 0, 0, 0]),
            Placement::Handler
        );
        // SAFETY: closing the pipe we created.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
