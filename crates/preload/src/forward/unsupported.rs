//! System calls without a shape that take descriptors or paths: when one of
//! them names something in a domain, it fails with a clear errno (reported
//! once per call number) instead of running on the host.

use super::action::Action;
use super::generic::{decide, Decision};
use super::route::PathScratch;
use super::{fds, host, log};

struct Rule {
    fds: &'static [usize],
    paths: &'static [(Option<usize>, usize)],
    errno: i32,
}

const fn r(fds: &'static [usize], paths: &'static [(Option<usize>, usize)], errno: i32) -> Rule {
    Rule { fds, paths, errno }
}

fn rule(nr: u64) -> Option<Rule> {
    Some(match nr as i64 {
        libc::SYS_connect | libc::SYS_accept | libc::SYS_sendto | libc::SYS_recvfrom | libc::SYS_sendmsg | libc::SYS_recvmsg
        | libc::SYS_shutdown | libc::SYS_bind | libc::SYS_listen | libc::SYS_getsockname | libc::SYS_getpeername
        | libc::SYS_setsockopt | libc::SYS_getsockopt | libc::SYS_accept4 | libc::SYS_recvmmsg | libc::SYS_sendmmsg => {
            r(&[0], &[], libc::ENOTSOCK)
        }
        libc::SYS_getdents => r(&[0], &[], libc::EINVAL),
        libc::SYS_vmsplice => r(&[0], &[], libc::EBADF),
        libc::SYS_tee => r(&[0, 1], &[], libc::EINVAL),
        libc::SYS_setns => r(&[0], &[], libc::EINVAL),
        libc::SYS_io_uring_register | libc::SYS_io_uring_enter => r(&[0], &[], libc::EBADF),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => r(&[0], &[], libc::EINVAL),
        libc::SYS_inotify_add_watch => r(&[], &[(None, 1)], libc::ENOSYS),
        libc::SYS_fanotify_mark => r(&[], &[(Some(3), 4)], libc::EOPNOTSUPP),
        libc::SYS_name_to_handle_at => r(&[], &[(Some(0), 1)], libc::EOPNOTSUPP),
        libc::SYS_open_by_handle_at => r(&[0], &[], libc::EOPNOTSUPP),
        libc::SYS_chroot | libc::SYS_acct | libc::SYS_swapon | libc::SYS_swapoff | libc::SYS_umount2 => {
            r(&[], &[(None, 0)], libc::EPERM)
        }
        libc::SYS_pivot_root => r(&[], &[(None, 0), (None, 1)], libc::EPERM),
        libc::SYS_mount => r(&[], &[(None, 1)], libc::EPERM),
        libc::SYS_quotactl => r(&[], &[(None, 1)], libc::EPERM),
        libc::SYS_uselib => r(&[], &[(None, 0)], libc::ENOSYS),
        libc::SYS_execveat => r(&[], &[], 0),
        428 /* open_tree */ | 433 /* fspick */ | 442 /* mount_setattr */ => {
            r(&[], &[(Some(0), 1)], libc::EOPNOTSUPP)
        }
        429 /* move_mount */ => r(&[], &[(Some(0), 1), (Some(2), 3)], libc::EOPNOTSUPP),
        443 /* quotactl_fd */ | 451 /* cachestat */ => r(&[0], &[], libc::EOPNOTSUPP),
        463..=466 /* setxattrat .. removexattrat */ | 468 | 469 /* file_getattr/setattr */ => {
            r(&[], &[(Some(0), 1)], libc::EOPNOTSUPP)
        }
        _ => return None,
    })
}

pub fn check(nr: u64, args: [u64; 6]) -> Action {
    let Some(rule) = rule(nr) else {
        return Action::Local;
    };
    if rule.paths.is_empty() {
        if !rule.fds.iter().any(|&i| fds::is_forwarded(args[i])) {
            return Action::Local;
        }
        log::unsupported(nr, "on a descriptor of the storage domain", rule.errno);
        return Action::Done(-(rule.errno as i64));
    }
    let mut s = [PathScratch::new(), PathScratch::new()];
    match decide(nr, &args, rule.fds, rule.paths, &mut s) {
        Decision::Local => Action::Local,
        Decision::LocalRewritten(a) => Action::Done(host::reissue(nr, a)),
        Decision::Fail(e) => Action::Done(e),
        Decision::Remote(..) => {
            log::unsupported(nr, "on a file in the storage domain", rule.errno);
            Action::Done(-(rule.errno as i64))
        }
    }
}
