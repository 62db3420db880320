//! A stand-in storage domain for the daemon's tests: speaks the daemon <->
//! domain protocol on `--control-fd` and serves `OP_PING` (everything else
//! gets ENOSYS) with one worker thread per client. No namespaces, no files.
//!
//! `FAKE_DOMAIN_REFUSE=1` makes it refuse every AddClient; `AttachForked`
//! succeeds for token 77 only.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use virtuos_abi::call;
use virtuos_abi::control::{self, DomainCommand, DomainReply};
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::ClientRegion;

fn serve(region: ClientRegion, state: StatePage, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match region.take_submitted() {
            Ok(Some(i)) => {
                let Some(entry) = region.entry(i) else {
                    continue;
                };
                let Some(req) = entry.claim() else { continue };
                let result = if req.op == OP_PING {
                    0
                } else {
                    -(libc::ENOSYS as i64)
                };
                call::complete(entry, result, 0);
            }
            Ok(None) => region.worker_sleep(state.get(), Duration::from_millis(50)),
            Err(e) => {
                eprintln!("fake-domain: bad submit list: {e}");
                return;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fd: i32 = args
        .iter()
        .position(|a| a == "--control-fd")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .expect("usage: fake_domain --control-fd N ...");
    // SAFETY: the daemon passes us this descriptor, open and owned by no one
    // else in this process.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let refuse = std::env::var_os("FAKE_DOMAIN_REFUSE").is_some();
    // The daemon's hang detection watches this page (`FAKE_DOMAIN_SILENT=1`:
    // no heartbeat, to test that).
    let heartbeat: Option<i32> = args
        .iter()
        .position(|a| a == "--heartbeat-fd")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    if let Some(hb) = heartbeat {
        // SAFETY: as for the control socket.
        let hb = unsafe { OwnedFd::from_raw_fd(hb) };
        let page = StatePage::map(&hb, true).expect("heartbeat page");
        if std::env::var_os("FAKE_DOMAIN_SILENT").is_none() {
            std::thread::spawn(move || loop {
                page.get().heartbeat.fetch_add(1, Ordering::Release);
                std::thread::sleep(Duration::from_millis(100));
            });
        }
    }
    eprintln!("fake-domain: up, args {:?}", &args[1..]);
    control::send(sock.as_fd(), &DomainReply::Ready { cpus: 2 }, &[]).unwrap();
    let mut clients: HashMap<u64, Arc<AtomicBool>> = HashMap::new();
    loop {
        let (cmd, fds) = match control::recv::<DomainCommand>(sock.as_fd()) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                eprintln!("fake-domain: {e}");
                return;
            }
        };
        let reply = match cmd {
            DomainCommand::AddClient { client_id, .. } if !refuse && fds.len() == 2 => {
                let region = ClientRegion::map(&fds[0]).unwrap();
                region.validate().unwrap();
                let state = StatePage::map(&fds[1], true).unwrap();
                state.get().init(2);
                let stop = Arc::new(AtomicBool::new(false));
                clients.insert(client_id, stop.clone());
                std::thread::spawn(move || serve(region, state, stop));
                DomainReply::Ok
            }
            DomainCommand::AddClient { .. } => DomainReply::Error {
                message: "fake domain refuses".into(),
            },
            DomainCommand::Ping => DomainReply::Ok,
            DomainCommand::InjectFault { .. } => DomainReply::Error {
                message: "the fake domain injects no faults".into(),
            },
            // Token 77 stands for a pending forked shadow; others are unknown.
            DomainCommand::AttachForked {
                client_id, token, ..
            } if token == 77 && fds.len() == 2 => {
                let region = ClientRegion::map(&fds[0]).unwrap();
                let state = StatePage::map(&fds[1], true).unwrap();
                state.get().init(2);
                let stop = Arc::new(AtomicBool::new(false));
                clients.insert(client_id, stop.clone());
                std::thread::spawn(move || serve(region, state, stop));
                DomainReply::Ok
            }
            DomainCommand::AttachForked { token, .. } => DomainReply::Error {
                message: format!("no pending shadow {token}"),
            },
            // The fake domain executes nothing: credentials do not matter.
            DomainCommand::SetCredentials { client_id, .. } if clients.contains_key(&client_id) => {
                DomainReply::Ok
            }
            DomainCommand::SetCredentials { client_id, .. } => DomainReply::Error {
                message: format!("unknown client {client_id}"),
            },
            DomainCommand::RemoveClient { client_id } => match clients.remove(&client_id) {
                Some(stop) => {
                    stop.store(true, Ordering::Relaxed);
                    DomainReply::Ok
                }
                None => DomainReply::Error {
                    message: format!("no client {client_id}"),
                },
            },
            DomainCommand::Shutdown => {
                control::send(sock.as_fd(), &DomainReply::Ok, &[]).unwrap();
                eprintln!("fake-domain: shutdown");
                return;
            }
        };
        control::send(sock.as_fd(), &reply, &[]).unwrap();
    }
}
