//! What a domain serves: per-family tables (as in gVisor). A storage domain
//! executes file, descriptor and socket calls, a network domain socket and
//! descriptor calls; anything else is ENOSYS, so a hostile client cannot
//! make the network domain open files. Which sockets each may make is the
//! address-family check of `exec::socket`: the storage domain only
//! `AF_UNIX` (sockets bound at paths in its file system), the network
//! domain only `AF_INET`/`AF_INET6`.

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
            // Both serve sockets, so both serve the socket virtual ops
            // (sendmsg/recvmsg, poll, epoll).
            return true;
        }
        match family(op) {
            Some(Family::Descriptor | Family::Socket) => true,
            Some(Family::File) => self == Role::Storage,
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
        // Both make sockets: of which families is `exec::socket`'s check.
        for s in [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_getsockopt,
        ] {
            assert!(Role::Network.serves(nr(s)), "{s}");
            assert!(Role::Storage.serves(nr(s)), "{s}");
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
        assert!(Role::Storage.serves(ops::OP_RECVMSG));
        for op in [ops::OP_EPOLL_CREATE, ops::OP_EPOLL_CTL, ops::OP_EPOLL_WAIT] {
            assert!(Role::Network.serves(op) && Role::Storage.serves(op));
        }
        assert!(Role::Storage.serves(ops::OP_PING) && Role::Network.serves(ops::OP_FORK_PREPARE));
    }
}
