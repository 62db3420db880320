//! What a domain serves: per-family tables (as in gVisor). A storage domain
//! executes file and descriptor calls, a network domain socket and
//! descriptor calls; anything else is ENOSYS, so a hostile client cannot
//! make the storage domain open sockets or the network domain open files.

use virtuos_abi::ops;
use virtuos_abi::shape::{family, Family};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Storage,
    Network,
}

impl Role {
    /// Whether this domain executes system call (or virtual op) `op`.
    pub fn serves(self, op: u16) -> bool {
        if ops::is_virtual(op) {
            return match op {
                ops::OP_SENDMSG
                | ops::OP_RECVMSG
                | ops::OP_EPOLL_CREATE
                | ops::OP_EPOLL_CTL
                | ops::OP_EPOLL_WAIT => self == Role::Network,
                _ => true,
            };
        }
        match family(op) {
            Some(Family::Descriptor) => true,
            Some(Family::File) => self == Role::Storage,
            Some(Family::Socket) => self == Role::Network,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_split_by_role() {
        let nr = |n: i64| n as u16;
        for f in [
            libc::SYS_openat,
            libc::SYS_mkdir,
            libc::SYS_stat,
            libc::SYS_lseek,
        ] {
            assert!(Role::Storage.serves(nr(f)), "{f}");
            assert!(!Role::Network.serves(nr(f)), "{f}");
        }
        for s in [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_getsockopt,
        ] {
            assert!(Role::Network.serves(nr(s)), "{s}");
            assert!(!Role::Storage.serves(nr(s)), "{s}");
        }
        for d in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_fcntl,
        ] {
            assert!(Role::Storage.serves(nr(d)) && Role::Network.serves(nr(d)));
        }
        for bad in [libc::SYS_execve, libc::SYS_kill, libc::SYS_mmap] {
            assert!(!Role::Storage.serves(nr(bad)) && !Role::Network.serves(nr(bad)));
        }
        assert!(Role::Network.serves(ops::OP_SENDMSG));
        assert!(!Role::Storage.serves(ops::OP_RECVMSG));
        for op in [ops::OP_EPOLL_CREATE, ops::OP_EPOLL_CTL, ops::OP_EPOLL_WAIT] {
            assert!(Role::Network.serves(op) && !Role::Storage.serves(op));
        }
        assert!(Role::Storage.serves(ops::OP_PING) && Role::Network.serves(ops::OP_FORK_PREPARE));
    }
}
