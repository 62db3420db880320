//! Domain-side fixups of the socket calls that run through the generic
//! executor.
//!
//! - `socket`: a network domain makes only `AF_INET` and `AF_INET6`
//!   sockets, a storage domain only `AF_UNIX` ones (EAFNOSUPPORT
//!   otherwise): a netlink socket would let a client reconfigure the
//!   domain's network namespace. Descriptors never cross (`msg`).
//! - Addresses (`bind`, `connect`, `sendto`; `OP_SENDMSG` in `msg`) are
//!   copied out of the chunk into private memory, checked there and handed
//!   to the kernel from there, so the client cannot change them after the
//!   check. A storage domain takes only named `AF_UNIX` addresses (a path:
//!   never abstract or autobind names, which would live in the domain's
//!   namespace) of at most `sizeof(struct sockaddr_un)` bytes, and
//!   `AF_UNSPEC` for `connect` (dissolving a datagram association).
//! - `setsockopt`: an allow-list per role of options whose values are
//!   plain numbers, names or structs of numbers and addresses
//!   (ENOPROTOOPT otherwise, with one message per shadow): options such
//!   as `SO_ATTACH_FILTER` carry pointers the domain's kernel would follow
//!   into the shadow, `SO_ATTACH_BPF` a descriptor, `TCP_ULP` loads
//!   kernel code. Storage: `SOL_SOCKET` options of Unix sockets. Network:
//!   those plus what servers and clients set on internet sockets
//!   (`network_option`). Privileged ones among them (`SO_MARK`,
//!   `SO_BINDTODEVICE`, `SO_PRIORITY` above 6, `IP_TRANSPARENT`) are
//!   decided by the domain's kernel with the client's capabilities.
//! - `*addrlen` / `*optlen` (the `SOCKLEN` slot): the client may lie, so the
//!   value is read from the chunk, clamped to the room the shape gives the
//!   buffer (`SOCKADDR` or `SOCKOPT`) and written back; the kernel reads and
//!   updates a private copy (so the client cannot raise it between the check
//!   and the call), which is copied back into the chunk afterwards.

use crate::role::Role;
use virtuos_abi::shape::{SOCKADDR, SOCKADDR_UN, SOCKOPT};
use virtuos_abi::{ClientRegion, NULL_ARG};

/// The `socklen_t *` slot of a socket call and the room of the buffer it
/// describes.
pub(crate) fn len_slot(nr: i64) -> Option<(usize, u32)> {
    Some(match nr {
        libc::SYS_accept | libc::SYS_accept4 | libc::SYS_getsockname | libc::SYS_getpeername => {
            (2, SOCKADDR as u32)
        }
        libc::SYS_recvfrom => (5, SOCKADDR as u32),
        libc::SYS_getsockopt => (4, SOCKOPT as u32),
        _ => return None,
    })
}

/// Families a domain creates sockets of; options a storage domain sets.
pub(crate) fn check_socket(role: Role, nr: i64, args: &[u64; 6]) -> Result<(), i32> {
    if nr == libc::SYS_socket {
        let family = args[0] as i32;
        let ok = match role {
            Role::Network => family == libc::AF_INET || family == libc::AF_INET6,
            Role::Storage => family == libc::AF_UNIX,
        };
        if !ok {
            return Err(libc::EAFNOSUPPORT);
        }
    }
    if nr == libc::SYS_setsockopt {
        let ok = match role {
            Role::Storage => plain_option(args[1], args[2]),
            Role::Network => network_option(args[1], args[2]),
        };
        if !ok {
            refused_once(args[1], args[2]);
            return Err(libc::ENOPROTOOPT);
        }
    }
    Ok(())
}

/// Say once per shadow that an option was refused (a program that sets
/// one every connection must not flood the log).
fn refused_once(level: u64, name: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            level = level as i32,
            name = name as i32,
            "setsockopt refused with ENOPROTOOPT: the option is not in the domain's \
             allow-list (its value may carry pointers or descriptors); further refusals \
             are not logged"
        );
    }
}

/// Options of internet sockets a network domain sets: `SOL_SOCKET`
/// options with plain values, and the TCP, UDP, IPv4 and IPv6 options
/// whose values are numbers, a name (`SO_BINDTODEVICE`,
/// `TCP_CONGESTION`) or structs of numbers and addresses (`ip_mreq`,
/// `ip_mreqn`, `ip_mreq_source`, `ipv6_mreq`, `group_req`,
/// `group_source_req`: no pointers).
fn network_option(level: u64, name: u64) -> bool {
    let name = name as i32;
    match level as i32 {
        libc::SOL_SOCKET => {
            plain_option(level, name as u64)
                || matches!(
                    name,
                    libc::SO_REUSEPORT
                        | libc::SO_BROADCAST
                        | libc::SO_DONTROUTE
                        | libc::SO_OOBINLINE
                        | libc::SO_BINDTODEVICE
                        | libc::SO_BINDTOIFINDEX
                        | libc::SO_TIMESTAMP
                        | libc::SO_TIMESTAMPNS
                        | libc::SO_TIMESTAMPING
                        | 63 /* SO_TIMESTAMP_NEW */
                        | 64 /* SO_TIMESTAMPNS_NEW */
                        | 65 /* SO_TIMESTAMPING_NEW */
                        | libc::SO_RXQ_OVFL
                        | libc::SO_WIFI_STATUS
                        | libc::SO_NOFCS
                        | libc::SO_SELECT_ERR_QUEUE
                        | libc::SO_BUSY_POLL
                        | libc::SO_MAX_PACING_RATE
                        | libc::SO_INCOMING_CPU
                        | libc::SO_ZEROCOPY
                        | libc::SO_TXTIME
                        | 69 /* SO_PREFER_BUSY_POLL */
                        | 70 /* SO_BUSY_POLL_BUDGET */
                        | 74 /* SO_RCVMARK */
                )
        }
        libc::IPPROTO_TCP => matches!(
            name,
            libc::TCP_NODELAY
                | libc::TCP_MAXSEG
                | libc::TCP_CORK
                | libc::TCP_KEEPIDLE
                | libc::TCP_KEEPINTVL
                | libc::TCP_KEEPCNT
                | libc::TCP_SYNCNT
                | libc::TCP_LINGER2
                | libc::TCP_DEFER_ACCEPT
                | libc::TCP_WINDOW_CLAMP
                | libc::TCP_QUICKACK
                | libc::TCP_CONGESTION
                | libc::TCP_USER_TIMEOUT
                | libc::TCP_FASTOPEN
                | libc::TCP_FASTOPEN_CONNECT
                | libc::TCP_FASTOPEN_NO_COOKIE
                | libc::TCP_NOTSENT_LOWAT
                | libc::TCP_THIN_LINEAR_TIMEOUTS
                | libc::TCP_THIN_DUPACK
                | libc::TCP_SAVE_SYN
                | 37 /* TCP_TX_DELAY */
                | libc::TCP_INQ
                | libc::TCP_TIMESTAMP
        ),
        libc::IPPROTO_UDP => matches!(
            name,
            libc::UDP_CORK | 103 /* UDP_SEGMENT */ | 104 /* UDP_GRO */
        ),
        libc::IPPROTO_IP => matches!(
            name,
            libc::IP_TOS
                | libc::IP_TTL
                | libc::IP_OPTIONS
                | libc::IP_RECVOPTS
                | libc::IP_RETOPTS
                | libc::IP_PKTINFO
                | libc::IP_RECVTTL
                | libc::IP_RECVTOS
                | libc::IP_RECVERR
                | libc::IP_MTU_DISCOVER
                | libc::IP_FREEBIND
                | libc::IP_TRANSPARENT
                | libc::IP_RECVORIGDSTADDR
                | libc::IP_BIND_ADDRESS_NO_PORT
                | libc::IP_MINTTL
                | libc::IP_NODEFRAG
                | libc::IP_CHECKSUM
                | libc::IP_PASSSEC
                | libc::IP_MULTICAST_IF
                | libc::IP_MULTICAST_TTL
                | libc::IP_MULTICAST_LOOP
                | libc::IP_MULTICAST_ALL
                | libc::IP_ADD_MEMBERSHIP
                | libc::IP_DROP_MEMBERSHIP
                | libc::IP_ADD_SOURCE_MEMBERSHIP
                | libc::IP_DROP_SOURCE_MEMBERSHIP
                | libc::IP_BLOCK_SOURCE
                | libc::IP_UNBLOCK_SOURCE
                | libc::MCAST_JOIN_GROUP
                | libc::MCAST_LEAVE_GROUP
                | libc::MCAST_JOIN_SOURCE_GROUP
                | libc::MCAST_LEAVE_SOURCE_GROUP
                | libc::MCAST_BLOCK_SOURCE
                | libc::MCAST_UNBLOCK_SOURCE
                | 51 /* IP_LOCAL_PORT_RANGE */
        ),
        libc::IPPROTO_IPV6 => matches!(
            name,
            libc::IPV6_V6ONLY
                | libc::IPV6_UNICAST_HOPS
                | libc::IPV6_MULTICAST_IF
                | libc::IPV6_MULTICAST_HOPS
                | libc::IPV6_MULTICAST_LOOP
                | libc::IPV6_ADD_MEMBERSHIP
                | libc::IPV6_DROP_MEMBERSHIP
                | libc::IPV6_MULTICAST_ALL
                | libc::IPV6_RECVPKTINFO
                | libc::IPV6_RECVHOPLIMIT
                | libc::IPV6_RECVTCLASS
                | libc::IPV6_RECVERR
                | libc::IPV6_TCLASS
                | libc::IPV6_MTU_DISCOVER
                | libc::IPV6_DONTFRAG
                | libc::IPV6_RECVORIGDSTADDR
                | libc::IPV6_TRANSPARENT
                | libc::IPV6_FREEBIND
                | libc::IPV6_AUTOFLOWLABEL
                | libc::IPV6_UNICAST_IF
                | libc::MCAST_JOIN_GROUP
                | libc::MCAST_LEAVE_GROUP
                | libc::MCAST_JOIN_SOURCE_GROUP
                | libc::MCAST_LEAVE_SOURCE_GROUP
                | libc::MCAST_BLOCK_SOURCE
                | libc::MCAST_UNBLOCK_SOURCE
        ),
        _ => false,
    }
}

/// `SOL_SOCKET` options of Unix sockets whose values are numbers or
/// structs of numbers (no pointers, no descriptors, no programs).
fn plain_option(level: u64, name: u64) -> bool {
    level as i32 == libc::SOL_SOCKET
        && matches!(
            name as i32,
            libc::SO_SNDBUF
                | libc::SO_RCVBUF
                | libc::SO_SNDBUFFORCE
                | libc::SO_RCVBUFFORCE
                | libc::SO_RCVTIMEO
                | libc::SO_SNDTIMEO
                | 66 /* SO_RCVTIMEO_NEW */
                | 67 /* SO_SNDTIMEO_NEW */
                | libc::SO_RCVLOWAT
                | libc::SO_SNDLOWAT
                | libc::SO_PASSCRED
                | libc::SO_PASSSEC
                | libc::SO_PEEK_OFF
                | libc::SO_LINGER
                | libc::SO_KEEPALIVE
                | libc::SO_REUSEADDR
                | libc::SO_DEBUG
                | libc::SO_PRIORITY
                | libc::SO_MARK
        )
}

/// The (address, length) slots of a call that passes an address in.
pub(crate) fn addr_slots(nr: i64) -> Option<(usize, usize)> {
    match nr {
        libc::SYS_bind | libc::SYS_connect => Some((1, 2)),
        libc::SYS_sendto => Some((4, 5)),
        _ => None,
    }
}

/// Check an address a client passes in, in its private copy.
pub(crate) fn check_addr(role: Role, nr: i64, addr: &[u8]) -> Result<(), i32> {
    let family = match addr {
        [a, b, ..] => u16::from_ne_bytes([*a, *b]) as i32,
        _ => return Err(libc::EINVAL),
    };
    match role {
        Role::Network => Ok(()),
        Role::Storage if family == libc::AF_UNSPEC && nr == libc::SYS_connect => Ok(()),
        Role::Storage => {
            if family != libc::AF_UNIX {
                return Err(libc::EAFNOSUPPORT);
            }
            if addr.len() > SOCKADDR_UN as usize {
                return Err(libc::EINVAL);
            }
            // A path: at least one byte that is not the abstract marker.
            match addr.get(2) {
                Some(&c) if c != 0 => Ok(()),
                _ => Err(libc::EINVAL),
            }
        }
    }
}

/// A private copy of the address in slots `(addr, len)` of `args` (None:
/// a NULL address), checked for `role`; at most `SOCKADDR` bytes.
pub(crate) fn private_addr(
    role: Role,
    region: &ClientRegion,
    chunk: Option<u16>,
    nr: i64,
    args: &[u64; 6],
    (aslot, lslot): (usize, usize),
) -> Result<Option<Vec<u8>>, i32> {
    let (off, len) = (args[aslot], args[lslot]);
    // No address, or a length of 0 (the kernel reads nothing: sendto on a
    // connected socket, or EINVAL).
    if off == NULL_ARG || len == 0 {
        return Ok(None);
    }
    if len > SOCKADDR as u64 {
        return Err(libc::EINVAL);
    }
    let chunk = chunk.ok_or(libc::EFAULT)?;
    let mut buf = vec![0u8; len as usize];
    if !region.read_chunk(chunk, off, &mut buf) {
        return Err(libc::EFAULT);
    }
    check_addr(role, nr, &buf)?;
    Ok(Some(buf))
}

/// A clamped private copy of a client's `socklen_t`.
pub(crate) struct PrivateLen {
    chunk: u16,
    off: u64,
    value: Box<u32>,
}

impl PrivateLen {
    /// Read `*len` at `off` of `chunk` (None: the slot is NULL), clamp it to
    /// `max` and write the clamped value back.
    pub(crate) fn take(
        region: &ClientRegion,
        chunk: Option<u16>,
        off: u64,
        max: u32,
    ) -> Result<Option<PrivateLen>, i32> {
        if off == NULL_ARG {
            return Ok(None);
        }
        let chunk = chunk.ok_or(libc::EFAULT)?;
        let mut b = [0u8; 4];
        if !region.read_chunk(chunk, off, &mut b) {
            return Err(libc::EFAULT);
        }
        let v = u32::from_ne_bytes(b).min(max);
        if !region.write_chunk(chunk, off, &v.to_ne_bytes()) {
            return Err(libc::EFAULT);
        }
        Ok(Some(PrivateLen {
            chunk,
            off,
            value: Box::new(v),
        }))
    }

    /// The pointer to hand to the kernel (valid while `self` lives).
    pub(crate) fn ptr(&mut self) -> u64 {
        let p: *mut u32 = &mut *self.value;
        p as u64
    }

    /// Copy the kernel's value back into the chunk.
    pub(crate) fn finish(self, region: &ClientRegion) {
        let _ = region.write_chunk(self.chunk, self.off, &self.value.to_ne_bytes());
    }
}
