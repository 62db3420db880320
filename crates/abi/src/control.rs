//! Control messages: client <-> daemon and daemon <-> domain.
//!
//! Transport: `SOCK_SEQPACKET` Unix sockets, one JSON document per packet,
//! descriptors (region memfds) attached with `SCM_RIGHTS`. Control traffic is
//! rare (registration, fork, status), so readability beats compactness.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;

/// Largest control message.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// Name of the storage domain.
pub const STORAGE: &str = "storage";
/// Name of the network domain.
pub const NETWORK: &str = "network";

/// Credentials a shadow's worker takes on before executing a call of one
/// of its client's threads: what the kernel says that thread has (the
/// daemon reads them from `/proc/PID/task/TID/status`, never from the
/// client's word).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and file-system user ids (`Uid:`).
    pub uids: [u32; 4],
    /// Real, effective, saved and file-system group ids (`Gid:`).
    pub gids: [u32; 4],
    /// Supplementary groups (`Groups:`).
    pub groups: Vec<u32>,
    /// Effective capabilities (`CapEff:`), bit N = capability N.
    pub cap_effective: u64,
}

impl Credentials {
    /// All ids `uid`/`gid`, these groups, no capabilities unless root (then
    /// every capability, as a root process has).
    pub fn of_user(uid: u32, gid: u32, groups: Vec<u32>) -> Credentials {
        Credentials {
            uids: [uid; 4],
            gids: [gid; 4],
            groups,
            cap_effective: if uid == 0 { u64::MAX } else { 0 },
        }
    }

    /// The effective user id.
    pub fn euid(&self) -> u32 {
        self.uids[1]
    }

    /// Parse the `Uid:`, `Gid:`, `Groups:` and `CapEff:` lines of a
    /// `/proc/PID/status` text.
    pub fn from_proc_status(status: &str) -> Option<Credentials> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then_some(v.trim())
            })
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            v.try_into().ok()
        };
        let groups = field("Groups")?
            .split_whitespace()
            .map(|g| g.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Credentials {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            groups,
            cap_effective: u64::from_str_radix(field("CapEff")?, 16).ok()?,
        })
    }
}

/// Client -> daemon. The daemon identifies the sender by `SO_PEERCRED`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClientRequest {
    /// A new process wants regions for `domain`.
    Register { domain: String },
    /// The same process after `execve`: hand back its existing regions.
    Reattach { domain: String },
    /// A forked child claims the shadow its parent prepared (`OP_FORK_PREPARE`).
    ClaimFork {
        domain: String,
        parent_pid: u32,
        token: u64,
    },
    /// What runs, for `virtuos status`.
    Status,
    /// Stop every domain and the daemon (`virtuos down`).
    Shutdown,
    /// A client read garbage from `domain`'s queue (a result out of range,
    /// a broken entry): the daemon treats the domain as failed. Only
    /// accepted from a process registered with that domain.
    ReportFault { domain: String, reason: String },
    /// Inject a fault into `domain` (tests, demos): root or the daemon's
    /// owner only.
    Crash { domain: String, how: Fault },
    /// Restart `domain` now (its clients' calls fail as on a crash): root
    /// or the daemon's owner only.
    Restart { domain: String },
    /// Thread `tid` of the sender changed its credentials (set*id,
    /// setgroups, capset returned): the daemon reads them from the kernel
    /// and hands them to the sender's shadows before it answers.
    SyncCredentials { tid: u32 },
}

/// A fault `virtuos domain crash` injects.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL of the domain's main process (the daemon sends it).
    Kill,
    /// The domain server aborts from inside (SIGABRT).
    Panic,
    /// Every process of the domain stops (SIGSTOP): no service, no heartbeat.
    Hang,
    /// The domain's shadows complete every request with garbage.
    Corrupt,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Panic => "panic",
            Fault::Hang => "hang",
            Fault::Corrupt => "corrupt",
        }
    }
}

/// Daemon -> client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum DaemonReply {
    /// Attached: descriptors [request region (rw), state page (read-only)].
    Registered {
        client_id: u64,
        storage_mount: String,
        /// Where the region starts in its descriptor (VM slots: not 0).
        #[serde(default)]
        region_offset: u64,
        /// Where the state page starts in its descriptor.
        #[serde(default)]
        state_offset: u64,
    },
    Status(StatusReport),
    Ok,
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub domains: Vec<DomainStatus>,
    /// Remarks about the configuration (e.g. a domain not started on this
    /// backend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainStatus {
    pub name: String,
    pub backend: String,
    /// registered, connecting, connected, disconnected (the paper's states).
    pub state: String,
    pub pid: Option<u32>,
    pub data: String,
    pub clients: Vec<ClientStatus>,
    /// Network domain: its address on the host link (e.g. `169.254.199.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Network domain: the host side of the link (`vtos-h... 169.254.199.1/30`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_link: Option<String>,
    /// Port forwards into this domain (`127.0.0.1:8080 -> 169.254.199.2:80`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<String>,
    /// Why the domain is not serving (start failure, crash), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// VM backend: the accelerator QEMU runs with (`kvm` or `tcg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// VM backend: launch of QEMU to the domain's `Ready`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<u64>,
    /// VM backend: guest memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// VM backend: the guest's serial console log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// Automatic and requested restarts since the daemon started.
    #[serde(default)]
    pub restarts: u32,
    /// The last failure the daemon detected (what, when).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Detection of the last failure to the new domain's `Ready`, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery_ms: Option<u64>,
    /// Launch of the last restarted domain to its `Ready`, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_launch_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientStatus {
    pub client_id: u64,
    pub pid: u32,
}

/// A slot as the guest found it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u32,
    /// Offset of the DAX view's byte 0 in the slot file.
    pub offset: u64,
}

/// Daemon -> domain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum DomainCommand {
    /// Start a shadow for a client; descriptors [region, state page] (rw).
    AddClient {
        client_id: u64,
        pid: u32,
        creds: Credentials,
        /// VM backend: the region slot (`slot` module) instead of
        /// descriptors; its DAX view holds the region and, at
        /// `slot::STATE_IN_SLOT`, the state page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<u32>,
        /// The client's `RLIMIT_NPROC` soft limit (None: unlimited). The
        /// shadow forks pending shadows (`OP_FORK_PREPARE`) under it, so
        /// they count against the client's limit as its own children do.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nproc: Option<u64>,
    },
    /// Give the pending shadow `token` (forked from `parent_client_id`'s
    /// shadow) its own regions; descriptors [region, state page].
    AttachForked {
        client_id: u64,
        parent_client_id: u64,
        token: u64,
        pid: u32,
        /// VM backend: as in `AddClient`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<u32>,
        /// The child's credentials (it may have changed them before it
        /// claimed the shadow); `None`: keep the parent's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        creds: Option<Credentials>,
    },
    /// A client's credentials changed: thread `tid`'s (and the default
    /// for threads without their own), or with `tid: None` the whole
    /// process's (after execve: per-thread records are dropped).
    SetCredentials {
        client_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tid: Option<u32>,
        creds: Credentials,
    },
    /// The client is gone: end its shadow.
    RemoveClient {
        client_id: u64,
    },
    /// Are you there? Answered `Ok` by the main loop (the daemon's probe
    /// of a domain a client reported, when it cannot probe through a
    /// shadow).
    Ping,
    /// Fault injection from inside (`Fault::Panic`, `Fault::Corrupt`; the
    /// daemon does `Kill` and `Hang` with signals). Answered before it acts.
    InjectFault {
        how: Fault,
    },
    Shutdown,
}

/// Domain -> daemon, in answer to each command (and `Ready` once at start).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum DomainReply {
    Ready {
        cpus: u32,
    },
    /// VM backend, just before `Ready`: where each slot's DAX view starts
    /// in its slot file.
    Slots {
        slots: Vec<SlotView>,
    },
    Ok,
    Error {
        message: String,
    },
}

/// Send one message with descriptors attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "control message too large",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let sent = sendmsg(sock, &[IoSlice::new(&bytes)], &mut anc, SendFlags::NOSIGNAL)?;
    if sent != bytes.len() {
        return Err(io::Error::other("short control message"));
    }
    Ok(())
}

/// Receive one message and its descriptors. `Ok(None)` when the peer closed.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    // The ancillary buffer has alignment slack, so a peer can attach a few
    // more than MAX_FDS (and the kernel cuts the rest, CTRUNC): refuse both
    // rather than act on a message whose descriptors are not all there.
    // Dropping `fds` closes what did arrive.
    if fds.len() > MAX_FDS || got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control message with more than {MAX_FDS} descriptors"),
        ));
    }
    let msg = serde_json::from_slice(&buf[..got.bytes]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad control message: {e}"),
        )
    })?;
    Ok(Some((msg, fds)))
}

/// Send one message on a byte stream (a virtio-serial port, a unix stream
/// socket): a 4-byte little-endian length, then the JSON document. No
/// descriptors can travel this way.
pub fn send_framed<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "control message too large",
        ));
    }
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    frame.extend_from_slice(&bytes);
    w.write_all(&frame)?;
    w.flush()
}

/// Receive one message sent with [`send_framed`]. `Ok(None)` when the
/// stream ended cleanly between messages; an end inside a message is
/// `UnexpectedEof`. An oversized length or bad JSON is `InvalidData` (the
/// stream cannot be trusted to be in sync after either).
pub fn recv_framed<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes (limit {MAX_MESSAGE})"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    let msg = serde_json::from_slice(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad control message: {e}"),
        )
    })?;
    Ok(Some(msg))
}

/// A string from an untrusted peer (a client's crash reason, a shadow's
/// report), made safe for a log line: control characters (newline, escape
/// sequences, ...) and backslashes are escaped (`\n`, `\u{1b}`, `\\`),
/// so a client cannot forge log lines or drive a terminal; at most `MAX`
/// characters are kept.
pub fn escape(s: &str) -> String {
    const MAX: usize = 512;
    let mut out = String::with_capacity(s.len().min(MAX));
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c == '\\' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Convenience: a borrowed view of owned descriptors.
pub fn borrow_all(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(|f| f.as_fd()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    #[test]
    fn message_with_fds_roundtrip_and_garbage_is_an_error() {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let memfd = crate::mapping::create_memfd("x", 4096).unwrap();
        let msg = ClientRequest::ClaimFork {
            domain: STORAGE.into(),
            parent_pid: 7,
            token: 3,
        };
        send(a.as_fd(), &msg, &[memfd.as_fd()]).unwrap();
        let (got, fds): (ClientRequest, _) = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 1);
        assert_eq!(rustix::fs::fstat(&fds[0]).unwrap().st_size, 4096);

        rustix::net::send(&a, b"{not json", SendFlags::empty()).unwrap();
        assert!(recv::<ClientRequest>(b.as_fd()).is_err());
        drop(a);
        assert!(recv::<ClientRequest>(b.as_fd()).unwrap().is_none());
    }

    /// Found by the fuzzer (crates/fuzz, control-recv): 9 or 10 descriptors
    /// fit the receive buffer's alignment slack and were handed out; more
    /// were cut silently. (That the refused ones are closed is checked by
    /// the fuzz target, single-threaded: here other tests open descriptors.)
    #[test]
    fn more_than_max_fds_is_refused() {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let memfd = crate::mapping::create_memfd("x", 4096).unwrap();
        let body = serde_json::to_vec(&ClientRequest::Status).unwrap();
        for n in [MAX_FDS, MAX_FDS + 1, MAX_FDS + 2, 16] {
            let fds: Vec<BorrowedFd<'_>> = (0..n).map(|_| memfd.as_fd()).collect();
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
            let mut anc = SendAncillaryBuffer::new(&mut space);
            assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
            sendmsg(&a, &[IoSlice::new(&body)], &mut anc, SendFlags::empty()).unwrap();
            let got = recv::<ClientRequest>(b.as_fd());
            if n <= MAX_FDS {
                assert_eq!(got.unwrap().unwrap().1.len(), n);
            } else {
                assert_eq!(
                    got.unwrap_err().kind(),
                    io::ErrorKind::InvalidData,
                    "{n} fds"
                );
            }
        }
    }

    #[test]
    fn credentials_parse_from_proc_status() {
        let status = "Name:\tsh\nTgid:\t42\nUid:\t0\t1001\t0\t1001\n\
            Gid:\t0\t65534\t0\t65534\nGroups:\t4 24 \nCapInh:\t0000000000000000\n\
            CapEff:\t000001ffffffffff\n";
        let c = Credentials::from_proc_status(status).unwrap();
        assert_eq!(c.uids, [0, 1001, 0, 1001]);
        assert_eq!(c.gids, [0, 65534, 0, 65534]);
        assert_eq!(c.groups, vec![4, 24]);
        assert_eq!(c.cap_effective, 0x1ff_ffff_ffff);
        assert_eq!(c.euid(), 1001);
        let no_groups = status.replace("Groups:\t4 24 ", "Groups:\t");
        assert_eq!(
            Credentials::from_proc_status(&no_groups).unwrap().groups,
            Vec::<u32>::new()
        );
        // Missing or malformed lines are refused, never guessed.
        assert!(Credentials::from_proc_status("Uid:\t0\t0\t0\n").is_none());
        let bad = status.replace("CapEff:\t000001ffffffffff", "CapEff:\tzz");
        assert!(Credentials::from_proc_status(&bad).is_none());
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let me = Credentials::from_proc_status(&own).unwrap();
        assert_eq!(me.euid(), rustix::process::geteuid().as_raw());
    }

    #[test]
    fn escape_keeps_log_lines_whole() {
        assert_eq!(escape("plain text é"), "plain text é");
        assert_eq!(escape("a\nERROR forged"), "a\\nERROR forged");
        assert_eq!(escape("\u{1b}[2J\r\t\\"), "\\u{1b}[2J\\r\\t\\\\");
        assert!(!escape("x\u{2028}y").contains('\u{2028}'));
        let long = "x".repeat(2000);
        assert_eq!(escape(&long).len(), 515);
    }

    #[test]
    fn framed_messages_roundtrip_and_reject_garbage() {
        let mut buf = Vec::new();
        send_framed(&mut buf, &DomainReply::Ready { cpus: 1 }).unwrap();
        send_framed(&mut buf, &DomainCommand::Shutdown).unwrap();
        let mut r = &buf[..];
        let a: DomainReply = recv_framed(&mut r).unwrap().unwrap();
        assert_eq!(a, DomainReply::Ready { cpus: 1 });
        let b: DomainCommand = recv_framed(&mut r).unwrap().unwrap();
        assert_eq!(b, DomainCommand::Shutdown);
        assert!(recv_framed::<DomainCommand>(&mut r).unwrap().is_none());
        // Cut inside a frame.
        let mut r = &buf[..6];
        let e = recv_framed::<DomainReply>(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut r = &buf[..2];
        assert!(recv_framed::<DomainReply>(&mut r).is_err());
        // Oversized length, bad JSON.
        let huge = (MAX_MESSAGE as u32 + 1).to_le_bytes();
        let e = recv_framed::<DomainReply>(&mut &huge[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut bad = 3u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        let e = recv_framed::<DomainReply>(&mut &bad[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
