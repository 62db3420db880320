//! A stand-in client process for the daemon's tests: connects to
//! `$VIRTUOS_RUNTIME_DIR/virtuosd.sock`, sends `Register` (or `ClaimFork
//! PARENT_PID TOKEN` with `claim-fork PARENT_PID TOKEN`), prints one line
//! (`registered <id> <fds>` or `error <message>`), then stays alive until
//! its stdin closes.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use virtuos_abi::control::{self, ClientRequest, DaemonReply, STORAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let req = match args.first().map(String::as_str) {
        Some("claim-fork") => ClientRequest::ClaimFork {
            domain: STORAGE.into(),
            parent_pid: args[1].parse().unwrap(),
            token: args[2].parse().unwrap(),
        },
        _ => ClientRequest::Register {
            domain: STORAGE.into(),
        },
    };
    let dir = std::env::var_os("VIRTUOS_RUNTIME_DIR").expect("VIRTUOS_RUNTIME_DIR");
    let path = std::path::Path::new(&dir).join("virtuosd.sock");
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
    control::send(sock.as_fd(), &req, &[]).unwrap();
    let line = match control::recv::<DaemonReply>(sock.as_fd()) {
        Ok(Some((DaemonReply::Registered { client_id, .. }, fds))) => {
            format!("registered {client_id} {}", fds.len())
        }
        Ok(Some((DaemonReply::Error { message }, _))) => format!("error {message}"),
        other => format!("error unexpected {other:?}"),
    };
    println!("{line}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
