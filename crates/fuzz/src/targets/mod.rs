//! The fuzz targets, by the side that parses the input.
//!
//! - domain side (`domain`): the submit list, request entries and the
//!   region's chunk accessors, the executor's argument decoding
//!   (`virtuos_abi::decode::marshal` with the fcntl/ioctl tables), the
//!   `OP_POLL` array, ancillary data of `OP_SENDMSG`/`OP_RECVMSG`;
//! - client side (`client`): completions from a hostile domain (the
//!   shape-driven copy-back of the preload library, `OP_RECVMSG`'s extra
//!   word) and the keys a domain reports for epoll events;
//! - daemon side (`daemon`): control messages (JSON, framed streams,
//!   `SOCK_SEQPACKET` packets with descriptors), `DomainReply::Slots`,
//!   slot tags, and VM bells.

use crate::{Spec, Target};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::{ClientRegion, REGION_SIZE};

pub mod client;
pub mod daemon;
pub mod domain;

fn boxed<T: Target + Default + 'static>() -> Box<dyn Target> {
    Box::<T>::default()
}

pub static ALL: &[Spec] = &[
    Spec {
        name: "list",
        what: "domain: submit-list pop/push on a corrupted head and links",
        make: boxed::<domain::List>,
    },
    Spec {
        name: "region",
        what: "domain: region header, entry claim, chunk ranges and strings",
        make: boxed::<domain::Region>,
    },
    Spec {
        name: "exec-args",
        what: "domain: shape-driven argument decoding (fd limits, offsets, strings, fcntl/ioctl)",
        make: boxed::<domain::ExecArgs>,
    },
    Spec {
        name: "pollfd",
        what: "domain: OP_POLL pollfd array from the chunk",
        make: boxed::<domain::PollFds>,
    },
    Spec {
        name: "cmsg",
        what: "domain: ancillary data of OP_SENDMSG (check) and OP_RECVMSG (filter)",
        make: boxed::<domain::Cmsg>,
    },
    Spec {
        name: "completion",
        what: "client: copy-back of a hostile completion (result, chunk, extra word)",
        make: boxed::<client::Completion>,
    },
    Spec {
        name: "epoll-keys",
        what: "client: epoll event keys reported by a hostile domain",
        make: boxed::<client::EpollKeys>,
    },
    Spec {
        name: "proc-status",
        what: "daemon: a client's credentials from /proc/PID/task/TID/status text",
        make: boxed::<daemon::ProcStatus>,
    },
    Spec {
        name: "control-json",
        what: "daemon: ClientRequest/DaemonReply/DomainCommand/DomainReply from hostile JSON",
        make: boxed::<daemon::Json>,
    },
    Spec {
        name: "control-framed",
        what: "daemon: recv_framed over a stream cut at random points",
        make: boxed::<daemon::Framed>,
    },
    Spec {
        name: "control-recv",
        what: "daemon: control::recv of SOCK_SEQPACKET packets with descriptors",
        make: boxed::<daemon::Recv>,
    },
    Spec {
        name: "slots",
        what: "daemon: DomainReply::Slots check, slot tags, view offsets",
        make: boxed::<daemon::Slots>,
    },
    Spec {
        name: "bells",
        what: "daemon: VM bell decoding and stream reassembly",
        make: boxed::<daemon::Bells>,
    },
];

/// A fresh, initialised request region (a sparse memfd).
pub(crate) fn region() -> ClientRegion {
    let fd = create_memfd("virtuos-fuzz", REGION_SIZE).expect("memfd");
    let r = ClientRegion::map(&fd).expect("map region");
    r.init();
    r
}
