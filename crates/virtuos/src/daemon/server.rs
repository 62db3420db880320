//! The control socket. One thread ("control") waits with epoll on the
//! listening socket and on every connection; an idle connection costs a
//! descriptor and a table entry, no thread. A request is read there and
//! handled on a short-lived thread of its own ("request": registration
//! waits for the domain, a fault report probes it), which sends the reply
//! and hands the connection back. One request per connection at a time
//! (`EPOLLONESHOT`): the next one is read after the reply went out.
//!
//! Limits, so that one local user cannot starve the others (root and the
//! daemon's owner are "privileged" and only bound by the total):
//! - connections: at most `MAX_CONNECTIONS_PER_UID` per unprivileged uid,
//!   and the last `RESERVED_FOR_PRIVILEGED` of the total are kept for
//!   privileged callers; a refused connection gets an `Error` reply and is
//!   closed;
//! - requests handled at once: at most `MAX_ACTIVE_PER_UID` per
//!   unprivileged uid and `MAX_ACTIVE` for all of them; more wait (their
//!   connections are not read meanwhile);
//! - a connection idle for `IDLE_TIMEOUT` is closed; a reply the client
//!   does not take within `SEND_TIMEOUT` closes its connection.
//!
//! Adding a request: a variant of `ClientRequest` and its arm in
//! `Daemon::handle` (requests.rs); nothing here changes.

use super::clients::Peer;
use super::requests::privileged;
use super::Daemon;
use anyhow::{Context, Result};
use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtuos_abi::control::{self, ClientRequest, DaemonReply};

/// Connections of one unprivileged uid at once.
pub const MAX_CONNECTIONS_PER_UID: usize = 64;
/// Connections of everyone at once (lowered to fit `RLIMIT_NOFILE`).
const MAX_CONNECTIONS: usize = 4096;
/// Of `MAX_CONNECTIONS`, kept for root and the daemon's owner.
const RESERVED_FOR_PRIVILEGED: usize = 64;
/// Requests of one unprivileged uid handled at once.
const MAX_ACTIVE_PER_UID: usize = 8;
/// Requests of all unprivileged uids handled at once.
const MAX_ACTIVE: usize = 64;
/// A client that does not take its reply within this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle for this long is closed (clients connect per request).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A uid's refused connections are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
const HANDLER_STACK: usize = 256 * 1024;

const LISTENER: u64 = 0;
const DONE: u64 = 1;
const FIRST_CONN: u64 = 2;

/// Bind the daemon's socket (replacing a stale one: we hold the pid lock).
pub fn listen(path: &Path) -> Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path).context("socket path too long")?;
    rustix::net::bind(&fd, &addr).with_context(|| format!("cannot bind {}", path.display()))?;
    // Anyone may connect: SO_PEERCRED decides what a caller gets.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .with_context(|| format!("cannot make {} connectable", path.display()))?;
    rustix::net::listen(&fd, 128)?;
    Ok(fd)
}

struct Conn {
    fd: Arc<OwnedFd>,
    peer: Peer,
    privileged: bool,
    last: Instant,
    /// A request is being handled (or waits for a handler).
    busy: bool,
    /// Read, waiting for a handler (the uid is at its limit).
    queued: Option<ClientRequest>,
}

struct Loop {
    daemon: Arc<Daemon>,
    epoll: OwnedFd,
    listener: OwnedFd,
    /// Handlers post (connection, keep it) here and poke `done_fd`.
    done_fd: Arc<OwnedFd>,
    done_tx: mpsc::Sender<(u64, bool)>,
    done_rx: mpsc::Receiver<(u64, bool)>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    max_connections: usize,
    conns_of: HashMap<u32, usize>,
    /// Unprivileged requests being handled, per uid and in all.
    active_of: HashMap<u32, usize>,
    active: usize,
    /// Connections whose request waits for a handler, oldest first.
    waiting: VecDeque<u64>,
    refusals_logged: HashMap<u32, Instant>,
}

/// Serve the control socket forever (the "control" thread).
pub fn run(daemon: Arc<Daemon>, listener: OwnedFd) {
    let mut l = match Loop::new(daemon, listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve the control socket: {e:#}");
            std::process::exit(1);
        }
    };
    l.serve();
}

impl Loop {
    fn new(daemon: Arc<Daemon>, listener: OwnedFd) -> Result<Loop> {
        let epoll = epoll::create(CreateFlags::CLOEXEC).context("epoll_create")?;
        let done_fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .context("eventfd")?;
        epoll::add(
            &epoll,
            &listener,
            EventData::new_u64(LISTENER),
            EventFlags::IN,
        )?;
        epoll::add(&epoll, &done_fd, EventData::new_u64(DONE), EventFlags::IN)?;
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        // Leave room for the domains, regions, pidfds and forwards.
        let max_connections = (nofile.saturating_sub(512) as usize)
            .clamp(2 * RESERVED_FOR_PRIVILEGED, MAX_CONNECTIONS);
        let (done_tx, done_rx) = mpsc::channel();
        Ok(Loop {
            daemon,
            epoll,
            listener,
            done_fd: Arc::new(done_fd),
            done_tx,
            done_rx,
            conns: HashMap::new(),
            next_id: FIRST_CONN,
            max_connections,
            conns_of: HashMap::new(),
            active_of: HashMap::new(),
            active: 0,
            waiting: VecDeque::new(),
            refusals_logged: HashMap::new(),
        })
    }

    fn serve(&mut self) -> ! {
        let mut events: Vec<Event> = Vec::with_capacity(256);
        let mut last_sweep = Instant::now();
        let tick = rustix::time::Timespec {
            tv_sec: SWEEP_EVERY.as_secs() as i64,
            tv_nsec: SWEEP_EVERY.subsec_nanos() as i64,
        };
        loop {
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&tick)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!("epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let ready: Vec<u64> = events.iter().map(|e| e.data.u64()).collect();
            for key in ready {
                match key {
                    LISTENER => self.accept_all(),
                    DONE => self.finished(),
                    id => self.readable(id),
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.close_idle();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let conn = match rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(c) => c,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    // EMFILE and the like: the listener stays readable, so
                    // do not spin on it.
                    tracing::error!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
            };
            self.admit(conn);
        }
    }

    /// A new connection: admit it within the limits, or refuse it.
    fn admit(&mut self, fd: OwnedFd) {
        let peer = match peer_of(&fd) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("connection without peer credentials: {e}");
                return;
            }
        };
        let privileged = privileged(peer);
        let total = self.conns.len();
        let mine = self.conns_of.get(&peer.uid).copied().unwrap_or(0);
        let refusal = if total >= self.max_connections {
            Some(format!(
                "the daemon has too many connections ({total}); try again later"
            ))
        } else if !privileged && total >= self.max_connections - RESERVED_FOR_PRIVILEGED {
            Some(format!(
                "the daemon has too many connections ({total}; the rest are kept for root)"
            ))
        } else if !privileged && mine >= MAX_CONNECTIONS_PER_UID {
            Some(format!(
                "uid {} has too many connections to the daemon ({mine}, limit \
                 {MAX_CONNECTIONS_PER_UID} per user)",
                peer.uid
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            let due = self
                .refusals_logged
                .get(&peer.uid)
                .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
            if due {
                self.refusals_logged.insert(peer.uid, Instant::now());
                tracing::warn!(
                    pid = peer.pid,
                    uid = peer.uid,
                    "connection refused: {message} (logged once per {}s per uid)",
                    REFUSAL_LOG_EVERY.as_secs()
                );
            }
            refuse(&fd, &DaemonReply::Error { message });
            return;
        }
        let _ = rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Send,
            Some(SEND_TIMEOUT),
        );
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = epoll::add(
            &self.epoll,
            &fd,
            EventData::new_u64(id),
            EventFlags::IN | EventFlags::ONESHOT,
        ) {
            tracing::error!("cannot watch a connection: {e}");
            return;
        }
        *self.conns_of.entry(peer.uid).or_default() += 1;
        self.conns.insert(
            id,
            Conn {
                fd: Arc::new(fd),
                peer,
                privileged,
                last: Instant::now(),
                busy: false,
                queued: None,
            },
        );
    }

    fn close(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, c.fd.as_fd());
        if let Some(n) = self.conns_of.get_mut(&c.peer.uid) {
            *n -= 1;
            if *n == 0 {
                self.conns_of.remove(&c.peer.uid);
            }
        }
    }

    /// Connection `id` has a request (or hung up).
    fn readable(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c.peer;
        let req = match control::recv::<ClientRequest>(c.fd.as_fd()) {
            Ok(Some((req, _fds))) => req,
            Ok(None) => return self.close(id),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(
                    pid = peer.pid,
                    uid = peer.uid,
                    "bad request: {}",
                    control::escape(&e.to_string())
                );
                let reply = DaemonReply::Error {
                    message: format!("bad request: {e}"),
                };
                let _ = control::send(c.fd.as_fd(), &reply, &[]);
                return self.close(id);
            }
            Err(e) => {
                tracing::debug!(pid = peer.pid, "connection error: {e}");
                return self.close(id);
            }
        };
        tracing::debug!(pid = peer.pid, uid = peer.uid, ?req, "request");
        c.last = Instant::now();
        c.busy = true;
        if self.may_start(id) {
            self.start(id, req);
        } else {
            if let Some(c) = self.conns.get_mut(&id) {
                c.queued = Some(req);
            }
            self.waiting.push_back(id);
        }
    }

    fn may_start(&self, id: u64) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        c.privileged
            || (self.active < MAX_ACTIVE
                && self.active_of.get(&c.peer.uid).copied().unwrap_or(0) < MAX_ACTIVE_PER_UID)
    }

    /// Handle `req` of connection `id` on a thread of its own.
    fn start(&mut self, id: u64, req: ClientRequest) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        let (fd, peer, privileged) = (c.fd.clone(), c.peer, c.privileged);
        if !privileged {
            self.active += 1;
            *self.active_of.entry(peer.uid).or_default() += 1;
        }
        let daemon = self.daemon.clone();
        let tx = self.done_tx.clone();
        let poke = self.done_fd.clone();
        let spawned = std::thread::Builder::new()
            .name("request".into())
            .stack_size(HANDLER_STACK)
            .spawn(move || {
                let keep = serve_one(&daemon, &fd, peer, req);
                let _ = tx.send((id, keep));
                let _ = rustix::io::write(&*poke, &1u64.to_ne_bytes());
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a request thread: {e}");
            self.release(peer, privileged);
            if let Some(c) = self.conns.get(&id) {
                let reply = DaemonReply::Error {
                    message: "the daemon is out of threads; try again".into(),
                };
                let _ = control::send(c.fd.as_fd(), &reply, &[]);
            }
            self.close(id);
        }
    }

    fn release(&mut self, peer: Peer, privileged: bool) {
        if privileged {
            return;
        }
        self.active -= 1;
        if let Some(n) = self.active_of.get_mut(&peer.uid) {
            *n -= 1;
            if *n == 0 {
                self.active_of.remove(&peer.uid);
            }
        }
    }

    /// Handlers finished: re-arm (or close) their connections, start
    /// requests that waited.
    fn finished(&mut self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&*self.done_fd, &mut buf);
        while let Ok((id, keep)) = self.done_rx.try_recv() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let (peer, privileged) = (c.peer, c.privileged);
            c.busy = false;
            c.last = Instant::now();
            let rearmed = keep
                && epoll::modify(
                    &self.epoll,
                    c.fd.as_fd(),
                    EventData::new_u64(id),
                    EventFlags::IN | EventFlags::ONESHOT,
                )
                .is_ok();
            self.release(peer, privileged);
            if !rearmed {
                self.close(id);
            }
        }
        let n = self.waiting.len();
        for _ in 0..n {
            let Some(id) = self.waiting.pop_front() else {
                break;
            };
            if !self.conns.contains_key(&id) {
                continue;
            }
            if self.may_start(id) {
                if let Some(req) = self.conns.get_mut(&id).and_then(|c| c.queued.take()) {
                    self.start(id, req);
                }
            } else {
                self.waiting.push_back(id);
            }
        }
    }

    fn close_idle(&mut self) {
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.busy && c.last.elapsed() > IDLE_TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            self.close(id);
        }
    }
}

fn peer_of(conn: &OwnedFd) -> io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(conn)?;
    Ok(Peer {
        pid: cred.pid.as_raw_nonzero().get() as u32,
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// Handle one request and send its reply. False: drop the connection.
fn serve_one(daemon: &Daemon, conn: &OwnedFd, peer: Peer, req: ClientRequest) -> bool {
    match daemon.handle(peer, req) {
        Ok(granted) => {
            let reply = DaemonReply::Registered {
                client_id: granted.client_id,
                storage_mount: daemon.settings.storage_mount.clone(),
                region_offset: granted.offsets.0,
                state_offset: granted.offsets.1,
            };
            if let Err(e) = control::send(conn.as_fd(), &reply, &granted.fds()) {
                tracing::warn!(pid = peer.pid, "cannot send Registered: {e}");
                return false;
            }
            true
        }
        Err(answer) => {
            let sent = control::send(conn.as_fd(), &answer.reply, &[]);
            if answer.shutdown {
                daemon.shutdown(&format!("requested by pid {} (uid {})", peer.pid, peer.uid));
            }
            if let Err(e) = sent {
                tracing::debug!(pid = peer.pid, "cannot send reply: {e}");
                return false;
            }
            true
        }
    }
}

/// Answer a connection that is not admitted, then close it so the peer
/// reads the answer. Closing a SEQPACKET socket with a request still
/// unread makes the peer's next receive fail with ECONNRESET *before* it
/// sees the answer queued for it: so stop further sends first (the peer's
/// `send` then fails with EPIPE instead of queueing), drop what already
/// arrived, and only then close.
fn refuse(fd: &OwnedFd, reply: &DaemonReply) {
    // A fresh socket's buffer is empty: this does not block.
    let _ = control::send(fd.as_fd(), reply, &[]);
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Read);
    let mut sink = [0u8; 256];
    while let Ok((n, _)) = rustix::net::recv(fd, &mut sink, rustix::net::RecvFlags::DONTWAIT) {
        if n == 0 {
            break;
        }
    }
}
