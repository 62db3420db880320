//! Daemon side: control messages from clients and domains, the guest's
//! slot report, and VM bells.

use crate::rng::Rng;
use crate::{Counts, Target};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    sendmsg, socketpair, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    SocketFlags, SocketType,
};
use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use virtuos_abi::control::{
    self, ClientRequest, ClientStatus, Credentials, DaemonReply, DomainCommand, DomainReply,
    DomainStatus, Fault, SlotView, StatusReport, MAX_FDS, MAX_MESSAGE,
};
use virtuos_abi::layout::{NUM_ENTRIES, PAGE_SIZE};
use virtuos_abi::slot::{self, Bell, BellReader, BELL_SIZE, MAX_SLOTS, SLOT_FILE_SIZE, SLOT_USED};

fn text(rng: &mut Rng) -> String {
    let pieces = [
        "storage",
        "network",
        "",
        "\"",
        "\\",
        "\u{0}",
        "é",
        "\u{10ffff}",
        "/x",
        "{}",
    ];
    (0..rng.index(4)).map(|_| rng.pick(&pieces)).collect()
}

fn fault(rng: &mut Rng) -> Fault {
    rng.pick(&[Fault::Kill, Fault::Panic, Fault::Hang, Fault::Corrupt])
}

fn client_request(rng: &mut Rng) -> ClientRequest {
    match rng.below(8) {
        0 => ClientRequest::Register { domain: text(rng) },
        1 => ClientRequest::Reattach { domain: text(rng) },
        2 => ClientRequest::ClaimFork {
            domain: text(rng),
            parent_pid: rng.edgy(&[]) as u32,
            token: rng.edgy(&[]),
        },
        3 => ClientRequest::Status,
        4 => ClientRequest::Shutdown,
        5 => ClientRequest::ReportFault {
            domain: text(rng),
            reason: text(rng),
        },
        6 => ClientRequest::Crash {
            domain: text(rng),
            how: fault(rng),
        },
        _ => ClientRequest::Restart { domain: text(rng) },
    }
}

fn daemon_reply(rng: &mut Rng) -> DaemonReply {
    match rng.below(4) {
        0 => DaemonReply::Registered {
            client_id: rng.edgy(&[]),
            storage_mount: text(rng),
            region_offset: rng.edgy(&[]),
            state_offset: rng.edgy(&[]),
        },
        1 => DaemonReply::Status(StatusReport {
            daemon_pid: rng.u32(),
            domains: (0..rng.index(2))
                .map(|_| DomainStatus {
                    name: text(rng),
                    backend: text(rng),
                    state: text(rng),
                    pid: rng.bool().then(|| rng.u32()),
                    data: text(rng),
                    clients: vec![ClientStatus {
                        client_id: rng.u64(),
                        pid: rng.u32(),
                    }],
                    address: rng.bool().then(|| text(rng)),
                    host_link: None,
                    forwards: vec![text(rng)],
                    error: None,
                    accel: None,
                    boot_ms: rng.bool().then(|| rng.u64()),
                    memory_mib: None,
                    console: None,
                    restarts: rng.u32(),
                    last_failure: None,
                    last_recovery_ms: None,
                    last_launch_ms: None,
                })
                .collect(),
            notes: vec![text(rng)],
        }),
        2 => DaemonReply::Ok,
        _ => DaemonReply::Error { message: text(rng) },
    }
}

fn credentials(rng: &mut Rng) -> Credentials {
    Credentials {
        uids: [rng.u32(), rng.u32(), rng.u32(), rng.u32()],
        gids: [rng.u32(), rng.u32(), rng.u32(), rng.u32()],
        groups: (0..rng.index(4)).map(|_| rng.u32()).collect(),
        cap_effective: rng.u64(),
    }
}

fn domain_command(rng: &mut Rng) -> DomainCommand {
    match rng.below(5) {
        0 => DomainCommand::AddClient {
            client_id: rng.u64(),
            pid: rng.u32(),
            creds: credentials(rng),
            slot: rng.bool().then(|| rng.edgy(&[MAX_SLOTS as u64]) as u32),
            nproc: rng.bool().then(|| rng.u64()),
        },
        1 => DomainCommand::AttachForked {
            client_id: rng.u64(),
            parent_client_id: rng.u64(),
            token: rng.u64(),
            pid: rng.u32(),
            slot: None,
            creds: rng.bool().then(|| credentials(rng)),
        },
        2 => DomainCommand::RemoveClient {
            client_id: rng.u64(),
        },
        3 => DomainCommand::InjectFault { how: fault(rng) },
        _ => DomainCommand::Shutdown,
    }
}

fn views(rng: &mut Rng, count: usize) -> Vec<SlotView> {
    let mut v: Vec<SlotView> = (0..count as u32)
        .map(|slot| SlotView {
            slot,
            offset: rng.pick(&[8192, 4096, 2 << 20, 0]),
        })
        .collect();
    for _ in 0..rng.pick(&[0, 0, 1, 2]) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.index(v.len());
                v.remove(i);
            }
            1 if !v.is_empty() => {
                let d = v[rng.index(v.len())];
                v.push(d);
            }
            2 if !v.is_empty() => {
                let i = rng.index(v.len());
                v[i].offset =
                    rng.edgy(&[SLOT_FILE_SIZE as u64, (SLOT_FILE_SIZE - SLOT_USED) as u64]);
            }
            _ => v.push(SlotView {
                slot: rng.edgy(&[count as u64, MAX_SLOTS as u64]) as u32,
                offset: 8192,
            }),
        }
    }
    if rng.bool() {
        for i in (1..v.len()).rev() {
            v.swap(i, rng.index(i + 1));
        }
    }
    v
}

fn domain_reply(rng: &mut Rng) -> DomainReply {
    match rng.below(4) {
        0 => DomainReply::Ready {
            cpus: rng.edgy(&[]) as u32,
        },
        1 => {
            let n = rng.index(MAX_SLOTS + 2);
            DomainReply::Slots {
                slots: views(rng, n),
            }
        }
        2 => DomainReply::Ok,
        _ => DomainReply::Error { message: text(rng) },
    }
}

/// A serialized message of a random kind.
fn any_message(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => serde_json::to_vec(&client_request(rng)),
        1 => serde_json::to_vec(&daemon_reply(rng)),
        2 => serde_json::to_vec(&domain_command(rng)),
        _ => serde_json::to_vec(&domain_reply(rng)),
    }
    .expect("serializable")
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "-1",
    "1e999",
    "18446744073709551616",
    "-0",
    "4294967296",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"slot\"",
    "\"Slots\"",
    "\"offset\"",
    "\"Register\"",
    "\"domain\"",
    "\"AddClient\"",
    "\"groups\"",
    "1.5",
    " ",
];

/// Hostile JSON: a valid message mutated, a token soup, deep nesting, or
/// random bytes.
fn hostile_json(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            let n = rng.len(64);
            rng.bytes(n)
        }
        1 => {
            let n = rng.index(40);
            (0..n).flat_map(|_| rng.pick(TOKENS).bytes()).collect()
        }
        2 => {
            let depth = rng.len(300);
            let open: &[u8] = if rng.bool() { b"[" } else { b"{\"Slots\":" };
            let mut v: Vec<u8> = (0..depth).flat_map(|_| open.iter().copied()).collect();
            v.extend((0..depth).map(|_| if open.len() == 1 { b']' } else { b'}' }));
            v
        }
        _ => {
            let mut v = any_message(rng);
            for _ in 0..1 + rng.index(3) {
                if v.is_empty() {
                    break;
                }
                let at = rng.index(v.len());
                match rng.below(5) {
                    0 => v[at] = rng.u8(),
                    1 => v.truncate(at),
                    2 => {
                        let t = rng.pick(TOKENS);
                        v.splice(at..at, t.bytes());
                    }
                    3 => {
                        v.remove(at);
                    }
                    _ => {
                        // Replace a number with a hostile one.
                        if let Some(p) = v[at..].iter().position(|b| b.is_ascii_digit()) {
                            let p = at + p;
                            let e = v[p..]
                                .iter()
                                .position(|b| !b.is_ascii_digit())
                                .map_or(v.len(), |e| p + e);
                            let n =
                                rng.pick(&["-1", "18446744073709551616", "1e3", "4294967296", "0"]);
                            v.splice(p..e, n.bytes());
                        }
                    }
                }
            }
            v
        }
    }
}

/// A message that parsed must survive a round trip unchanged.
fn parse_checked<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(b: &[u8]) -> bool {
    match serde_json::from_slice::<T>(b) {
        Ok(m) => {
            let again = serde_json::to_vec(&m).expect("reserialize");
            let back: T = serde_json::from_slice(&again).expect("own output parses");
            assert_eq!(back, m);
            true
        }
        Err(_) => false,
    }
}

/// The four control message types from hostile JSON; `Slots` that parse
/// go through the daemon's check.
#[derive(Default)]
pub struct Json {
    c: Counts,
}

impl Target for Json {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let b = hostile_json(rng);
        let parsed = [
            parse_checked::<ClientRequest>(&b),
            parse_checked::<DaemonReply>(&b),
            parse_checked::<DomainCommand>(&b),
            parse_checked::<DomainReply>(&b),
        ];
        self.c.hit(if parsed.contains(&true) {
            "parsed"
        } else {
            "refused"
        });
        if parsed[3] {
            if let Ok(DomainReply::Slots { slots }) = serde_json::from_slice(&b) {
                check_views_against_model(rng.index(MAX_SLOTS + 1), &slots);
            }
        }
    }
}

/// A reader that returns short reads and `Interrupted` errors.
struct Choppy<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.chance(1, 10) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (1 + self.rng.index(9)).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

enum Frame {
    /// A well-formed frame of these JSON bytes.
    Json(Vec<u8>),
    /// A length above the limit.
    Oversize(u32),
}

/// `recv_framed` over a stream of frames (good, bad JSON, oversized), cut
/// anywhere, read in random pieces: exactly the frames' messages come out,
/// then the right error.
#[derive(Default)]
pub struct Framed;

impl Target for Framed {
    fn case(&mut self, rng: &mut Rng) {
        let mut frames = Vec::new();
        let mut stream = Vec::new();
        for _ in 0..rng.index(5) {
            let f = match rng.below(6) {
                0 => Frame::Json(hostile_json(rng)),
                1 => Frame::Oversize(
                    rng.edgy(&[MAX_MESSAGE as u64 + 1])
                        .clamp(MAX_MESSAGE as u64 + 1, u32::MAX as u64) as u32,
                ),
                _ => Frame::Json(serde_json::to_vec(&domain_reply(rng)).unwrap()),
            };
            match &f {
                Frame::Json(b) => {
                    stream.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    stream.extend_from_slice(b);
                }
                Frame::Oversize(n) => stream.extend_from_slice(&n.to_le_bytes()),
            }
            frames.push((stream.len(), f));
        }
        let cut = if rng.chance(1, 3) {
            rng.index(stream.len() + 1)
        } else {
            stream.len()
        };
        let mut r = Choppy {
            data: &stream[..cut],
            rng: Rng::new(rng.u64()),
        };
        let mut start = 0usize;
        for (end, f) in &frames {
            let got = control::recv_framed::<DomainReply>(&mut r);
            if cut == start {
                assert!(matches!(got, Ok(None)), "clean end: {got:?}");
                return;
            }
            if let Frame::Oversize(_) = f {
                if cut >= start + 4 {
                    assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidData);
                    return;
                }
            }
            if cut < *end {
                assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
                return;
            }
            let Frame::Json(b) = f else { unreachable!() };
            match serde_json::from_slice::<DomainReply>(b) {
                Ok(m) => assert_eq!(got.unwrap(), Some(m)),
                Err(_) => {
                    assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidData);
                    return;
                }
            }
            start = *end;
        }
        assert!(matches!(
            control::recv_framed::<DomainReply>(&mut r),
            Ok(None)
        ));
    }
}

/// `control::recv` of one `SOCK_SEQPACKET` packet (empty, hostile JSON,
/// oversized) with 0..=10 descriptors attached: the right answer, at most
/// `MAX_FDS` descriptors, and no descriptor leaked.
pub struct Recv {
    ours: OwnedFd,
    peer: OwnedFd,
    memfd: OwnedFd,
    cases: u64,
    baseline: Option<usize>,
    c: Counts,
}

impl Default for Recv {
    fn default() -> Self {
        let (ours, peer) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair");
        let memfd = virtuos_abi::mapping::create_memfd("fuzz-fd", 4096).expect("memfd");
        Recv {
            ours,
            peer,
            memfd,
            cases: 0,
            baseline: None,
            c: Counts::default(),
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

impl Target for Recv {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let body = match rng.below(10) {
            0 => Vec::new(),
            1 => vec![b' '; MAX_MESSAGE + rng.index(3)],
            2..=4 => serde_json::to_vec(&client_request(rng)).unwrap(),
            _ => hostile_json(rng),
        };
        let nfds = rng.pick(&[0, 0, 0, 1, 2, MAX_FDS, MAX_FDS + 1, 10]);
        let fds: Vec<BorrowedFd<'_>> = (0..nfds).map(|_| self.memfd.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        }
        let sent = sendmsg(
            &self.peer,
            &[IoSlice::new(&body)],
            &mut anc,
            SendFlags::NOSIGNAL,
        )
        .expect("send");
        assert_eq!(sent, body.len());
        let got = control::recv::<ClientRequest>(self.ours.as_fd());
        self.c.hit(match &got {
            Ok(None) => "closed",
            Ok(Some(_)) => "message",
            Err(_) => "refused",
        });
        match got {
            Ok(None) => assert!(body.is_empty() && nfds == 0),
            Ok(Some((m, fds))) => {
                assert!(body.len() <= MAX_MESSAGE && nfds <= MAX_FDS);
                assert_eq!(serde_json::from_slice::<ClientRequest>(&body).ok(), Some(m));
                assert_eq!(fds.len(), nfds);
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(
                    body.len() > MAX_MESSAGE
                        || nfds > MAX_FDS
                        || serde_json::from_slice::<ClientRequest>(&body).is_err()
                );
            }
        }
        self.cases += 1;
        if self.cases % 4096 == 1 {
            let now = open_fds();
            let base = *self.baseline.get_or_insert(now);
            assert!(now <= base, "descriptors leak: {base} -> {now}");
        }
    }
}

/// The daemon's check of a slot report against a model.
fn check_views_against_model(count: usize, v: &[SlotView]) -> bool {
    let got = slot::check_views(count, v);
    let mut seen = vec![0usize; count];
    let mut ok = true;
    for s in v {
        match seen.get_mut(s.slot as usize) {
            Some(c) => *c += 1,
            None => ok = false,
        }
        ok &= slot::valid_offset(s.offset);
    }
    ok &= seen.iter().all(|&c| c == 1);
    match got {
        Ok(offsets) => {
            assert!(ok, "accepted a bad report {v:?}");
            assert_eq!(offsets.len(), count);
            for s in v {
                assert_eq!(offsets[s.slot as usize], s.offset);
                let off = s.offset;
                assert!(off % PAGE_SIZE as u64 == 0);
                assert!(off + (SLOT_USED + PAGE_SIZE) as u64 <= SLOT_FILE_SIZE as u64);
            }
        }
        Err(_) => assert!(!ok, "refused a good report {v:?}"),
    }
    ok
}

/// `DomainReply::Slots`, slot tags, DAX view offsets.
#[derive(Default)]
pub struct Slots {
    c: Counts,
}

impl Target for Slots {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let count = rng.index(MAX_SLOTS + 1);
        let v = views(rng, count);
        let ok = check_views_against_model(count, &v);
        self.c.hit(if ok { "report ok" } else { "report refused" });
        // A tag read from the guest's view.
        let mut t = slot::encode_tag(rng.edgy(&[MAX_SLOTS as u64]) as u32).to_vec();
        if rng.bool() {
            let at = rng.index(t.len());
            t[at] = rng.u8();
        }
        t.truncate(rng.len(24));
        if let Some(s) = slot::decode_tag(&t) {
            assert!((s as usize) < MAX_SLOTS);
            assert_eq!(&slot::encode_tag(s)[..], &t[..]);
        }
        let size = rng.edgy(&[SLOT_FILE_SIZE as u64, (SLOT_USED + PAGE_SIZE) as u64]);
        if let Some(off) = slot::view_offset(size) {
            assert!(slot::valid_offset(off));
            assert_eq!(off + size, SLOT_FILE_SIZE as u64);
        }
    }
}

/// VM bells: decoding in range, and reassembly from a stream read in
/// random pieces.
#[derive(Default)]
pub struct Bells;

fn check_bell(raw: [u8; BELL_SIZE], b: Option<Bell>) {
    match b {
        None => {}
        Some(Bell::Doorbell { slot }) | Some(Bell::Interrupt { slot }) => {
            assert!((slot as usize) < MAX_SLOTS)
        }
        Some(Bell::Complete { slot, entry }) => {
            assert!((slot as usize) < MAX_SLOTS);
            assert!((entry as usize) < NUM_ENTRIES);
        }
        Some(Bell::Heartbeat) => {}
    }
    if let Some(b) = b {
        assert_eq!(b.encode(), raw, "decode is not the inverse of encode");
    }
}

impl Target for Bells {
    fn case(&mut self, rng: &mut Rng) {
        let one = |rng: &mut Rng| -> [u8; BELL_SIZE] {
            if rng.bool() {
                let e = rng.edgy(&[NUM_ENTRIES as u64]) as u16;
                let s = rng.edgy(&[MAX_SLOTS as u64]) as u8;
                match rng.below(4) {
                    0 => Bell::Doorbell { slot: s },
                    1 => Bell::Interrupt { slot: s },
                    2 => Bell::Complete { slot: s, entry: e },
                    _ => Bell::Heartbeat,
                }
                .encode()
            } else {
                let mut b = [0u8; BELL_SIZE];
                rng.fill(&mut b);
                b[0] %= 6;
                b
            }
        };
        let n = rng.index(100);
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for _ in 0..n {
            let raw = one(rng);
            let d = Bell::decode(raw);
            check_bell(raw, d);
            want.push(d.ok_or(raw));
            stream.extend_from_slice(&raw);
        }
        let tail = rng.index(BELL_SIZE);
        stream.extend((0..tail).map(|_| rng.u8()));
        let mut reader = BellReader::default();
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let space = reader.space();
            assert!(!space.is_empty());
            let k = (1 + rng.index(40)).min(space.len()).min(stream.len() - at);
            space[..k].copy_from_slice(&stream[at..at + k]);
            at += k;
            reader.filled(k, &mut |b| got.push(b));
            assert!(reader.pending() < BELL_SIZE);
        }
        assert_eq!(got, want);
        assert_eq!(reader.pending(), tail);
    }
}

/// `/proc/PID/status` text as the daemon reads it for a client's
/// credentials: well-formed texts parse to exactly their values; mangled
/// ones (cut, garbage, wrong counts, huge numbers) are refused or parsed
/// without panicking, never guessed from another line.
#[derive(Default)]
pub struct ProcStatus {
    c: Counts,
}

impl Target for ProcStatus {
    fn stats(&self) -> String {
        self.c.show()
    }

    fn case(&mut self, rng: &mut Rng) {
        let want = credentials(rng);
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("\t");
        let mut lines = [
            "Name:\tprog".to_string(),
            format!("Tgid:\t{}", rng.u32()),
            format!("Uid:\t{}", join(&want.uids)),
            format!("Gid:\t{}", join(&want.gids)),
            format!("Groups:\t{} ", join(&want.groups).replace('\t', " ")),
            format!("CapEff:\t{:016x}", want.cap_effective),
        ];
        if rng.bool() {
            let n = lines.len();
            let (i, j) = (rng.index(n), rng.index(n));
            lines.swap(i, j);
        }
        let text = lines.join("\n") + "\n";
        if rng.chance(1, 3) {
            assert_eq!(
                virtuos_abi::control::Credentials::from_proc_status(&text).as_ref(),
                Some(&want),
                "well-formed status"
            );
            self.c.hit("well-formed");
            return;
        }
        let mut bytes = text.into_bytes();
        for _ in 0..1 + rng.index(4) {
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let at = rng.index(bytes.len());
                    bytes[at] = rng.pick(b"\t\n :0f9x-\xff");
                }
                1 => {
                    let at = rng.index(bytes.len() + 1);
                    let n = rng.len(24);
                    let junk = rng.bytes(n);
                    bytes.splice(at..at, junk);
                }
                2 if !bytes.is_empty() => bytes.truncate(rng.index(bytes.len())),
                _ => bytes.extend_from_slice(b"Uid:\t99999999999\t0\n"),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match virtuos_abi::control::Credentials::from_proc_status(&text) {
            Some(c) => {
                assert!(c.groups.len() <= text.len());
                self.c.hit("parsed");
            }
            None => self.c.hit("refused"),
        }
    }
}
