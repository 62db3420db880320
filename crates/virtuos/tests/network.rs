//! The daemon with the real network domain (needs root and iproute2):
//! both domains come up, a process registers with both at once, a port
//! forward reaches a listener created in the domain through the queue, the
//! network domain dying leaves the storage domain alone, and a network
//! domain that cannot start does not stop the storage domain.

mod common;

use common::*;
use rustix::fd::OwnedFd;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{ClientRequest, DaemonReply, NETWORK, STORAGE};
use virtuos_abi::ops::OP_PING;
use virtuos_abi::region::StatePage;
use virtuos_abi::state::status;
use virtuos_abi::ClientRegion;

const WAIT: Duration = Duration::from_secs(10);
const POLICY: WaitPolicy = WaitPolicy {
    spin: 1000,
    sleep_slice: Duration::from_millis(50),
    deadline: Some(Duration::from_secs(10)),
};

struct Conn {
    region: ClientRegion,
    state: StatePage,
}

impl Conn {
    fn register(env: &TestEnv, domain: &str) -> Conn {
        let (reply, fds) = env.request(&ClientRequest::Register {
            domain: domain.into(),
        });
        assert!(
            matches!(reply, DaemonReply::Registered { .. }),
            "Register {domain}: {reply:?}\nlog:\n{}",
            env.log()
        );
        let [region, state]: [OwnedFd; 2] = fds.try_into().unwrap();
        let region = ClientRegion::map(&region).unwrap();
        region.validate().unwrap();
        let state = StatePage::map(&state, false).unwrap();
        Conn { region, state }
    }

    fn call(&self, op: impl Into<i64>, args: [u64; 6]) -> i64 {
        let e = self.region.entry(0).unwrap();
        e.fill(op.into() as u16, 0, std::process::id(), Some(0), args);
        call::submit_and_wait(&self.region, self.state.get(), 0, POLICY)
            .expect("call completed")
            .0
    }

    fn put(&self, off: u64, data: &[u8]) {
        assert!(self.region.write_chunk(0, off, data));
    }

    fn get(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        assert!(self.region.read_chunk(0, off, &mut v));
        v
    }

    fn status(&self) -> u32 {
        self.state.get().status.load(Ordering::Acquire)
    }
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[4..8].copy_from_slice(&ip.octets());
    a
}

/// A host loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn host_if_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn both_domains_forwards_and_independent_failure() {
    let env = TestEnv::new(real_domain());
    let subnet = unique_subnet();
    let host_port = free_port();
    const DOMAIN_PORT: u16 = 7777;
    // No automatic restart: this test looks at the failed state (a
    // restarted domain would bring the host link back at once).
    env.write_config(&format!(
        "network_subnet = \"{subnet}\"\nforward = [\"{host_port}:{DOMAIN_PORT}\"]\nrestart = false\n"
    ));
    let out = env.ok(&["up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("network domain at"), "{stderr}");

    let st = env.status();
    let storage = env.storage();
    let net = env.network();
    assert_eq!(storage["name"], STORAGE);
    assert_eq!(storage["state"], "connected", "{st}");
    assert_eq!(net["state"], "connected", "{st}\n{}", env.log());
    assert_eq!(net["backend"], "process");
    let net_pid = net["pid"].as_u64().unwrap() as u32;
    assert_ne!(Some(net_pid as u64), storage["pid"].as_u64());
    let base: Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    let domain_addr = Ipv4Addr::from(u32::from(base) + 2);
    assert_eq!(net["address"], domain_addr.to_string());
    let host_if = format!("vtos-h{:08x}", u32::from(base));
    assert!(
        net["host_link"].as_str().unwrap().starts_with(&host_if),
        "{net}"
    );
    assert!(host_if_exists(&host_if));
    assert_eq!(
        net["forwards"][0],
        format!("127.0.0.1:{host_port} -> {domain_addr}:{DOMAIN_PORT}")
    );
    let text = String::from_utf8_lossy(&env.ok(&["status"]).stdout).into_owned();
    assert!(text.contains("domain network: connected"), "{text}");
    assert!(text.contains(&format!("address: {domain_addr}")), "{text}");

    // One process, registered with both domains at once.
    let s = Conn::register(&env, STORAGE);
    let n = Conn::register(&env, NETWORK);
    assert_eq!(s.call(OP_PING, [0; 6]), 0);
    assert_eq!(n.call(OP_PING, [0; 6]), 0);
    let me = std::process::id() as u64;
    assert_eq!(env.network()["clients"][0]["pid"], me);
    assert_eq!(env.storage()["clients"][0]["pid"], me);
    // Reattach works per domain too.
    let (reply, fds) = env.request(&ClientRequest::Reattach {
        domain: NETWORK.into(),
    });
    assert!(matches!(reply, DaemonReply::Registered { .. }), "{reply:?}");
    assert_eq!(fds.len(), 2);
    // The network domain serves no files, the storage domain no network
    // sockets (only AF_UNIX ones, for socket files under the mount).
    let sock = [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
    assert_eq!(s.call(libc::SYS_socket, sock), -(libc::EAFNOSUPPORT as i64));

    // A listener in the domain, created through the queue; the port forward
    // reaches it from the host's loopback.
    let l = n.call(libc::SYS_socket, sock);
    assert!(l >= 0, "socket: {l}");
    let l = l as u64;
    n.put(0, &sockaddr_in(Ipv4Addr::UNSPECIFIED, DOMAIN_PORT));
    assert_eq!(n.call(libc::SYS_bind, [l, 0, 16, 0, 0, 0]), 0);
    assert_eq!(n.call(libc::SYS_listen, [l, 8, 0, 0, 0, 0]), 0);
    let mut outside = TcpStream::connect(("127.0.0.1", host_port)).expect("connect to the forward");
    outside
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let a = n.call(libc::SYS_accept4, [l, u64::MAX, u64::MAX, 0, 0, 0]);
    assert!(a >= 0, "accept4: {a}");
    let a = a as u64;
    outside.write_all(b"GET / through the forward").unwrap();
    let got = n.call(
        libc::SYS_recvfrom,
        [a, 4096, 25, libc::MSG_WAITALL as u64, u64::MAX, u64::MAX],
    );
    assert_eq!(got, 25);
    assert_eq!(n.get(4096, 25), b"GET / through the forward");
    n.put(4096, b"200 OK from the domain");
    assert_eq!(n.call(libc::SYS_write, [a, 4096, 22, 0, 0, 0]), 22);
    let mut buf = [0u8; 22];
    outside.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"200 OK from the domain");
    // Closing in the domain closes the forwarded connection cleanly (EOF).
    assert_eq!(n.call(libc::SYS_close, [a, 0, 0, 0, 0, 0]), 0);
    let mut rest = Vec::new();
    outside.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // The domain's listener is not on the host itself.
    assert!(TcpStream::connect(("127.0.0.1", DOMAIN_PORT)).is_err() || DOMAIN_PORT == host_port);

    // The network domain dies: storage is not affected.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(net_pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("network disconnected", WAIT, || {
        env.network()["state"] == "disconnected"
    });
    assert_eq!(env.storage()["state"], "connected");
    assert!(env.network()["error"].as_str().unwrap().contains("exited"));
    assert_eq!(n.status(), status::FAILED);
    assert_eq!(s.status(), status::SERVING);
    assert_eq!(s.call(OP_PING, [0; 6]), 0);
    wait_for("host link removed", WAIT, || !host_if_exists(&host_if));
    let (reply, _) = env.request(&ClientRequest::Register {
        domain: NETWORK.into(),
    });
    assert!(
        matches!(&reply, DaemonReply::Error { message } if message.contains("disconnected")),
        "{reply:?}"
    );
    // A forwarded connection now fails instead of hanging.
    if let Ok(mut c) = TcpStream::connect(("127.0.0.1", host_port)) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    }
    // `up` still succeeds: storage works.
    env.ok(&["up"]);
    env.ok(&["down"]);
    assert!(!host_if_exists(&host_if));
}

#[test]
fn storage_works_when_the_network_domain_cannot_start() {
    let mut env = TestEnv::new(real_domain());
    // No `ip` on the PATH: the network domain fails, storage must not.
    let empty = env.dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    env.extra_env
        .push(("PATH".into(), empty.display().to_string()));
    let out = env.ok(&["up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("network domain is disconnected"),
        "{stderr}"
    );
    assert_eq!(env.storage()["state"], "connected");
    let net = env.network();
    assert_eq!(net["state"], "disconnected");
    assert!(
        net["error"].as_str().unwrap_or("").contains("iproute2"),
        "{net}\n{}",
        env.log()
    );
    let s = Conn::register(&env, STORAGE);
    assert_eq!(s.call(OP_PING, [0; 6]), 0);
    let text = String::from_utf8_lossy(&env.ok(&["status"]).stdout).into_owned();
    assert!(text.contains("error:"), "{text}");
}
