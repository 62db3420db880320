//! The network domain end to end: real programs (python3 socket code)
//! under `virtuos run`, whose AF_INET/AF_INET6 sockets live in the network
//! domain. Only loopback (inside the domain's own network namespace) is
//! used.
//!
//! - a TCP echo server and its client, both under virtuos;
//! - a UDP exchange (sendto/recvfrom, sendmsg/recvmsg);
//! - getaddrinfo("localhost");
//! - isolation: a server listening under virtuos does not appear in the
//!   host's stack (`ss -ltn` on the host), and the host cannot connect.

use std::time::{Duration, Instant};
use virtuos_e2e::{python, Domain, Run};

fn show(r: &Run, d: &Domain) -> String {
    format!(
        "{}\n-- stdout --\n{}\n-- stderr --\n{}\n{}",
        r.status_text(),
        r.stdout(),
        r.stderr(),
        d.diagnostics()
    )
}

/// A daemon with a network domain. Each daemon's link gets a subnet of its
/// own by default (derived from its runtime directory, moved to a free one
/// if taken), so tests can run in parallel.
fn start(_test: u32) -> Domain {
    Domain::start()
}

/// The daemon must run a connected network domain (these machines run the
/// tests as root with iproute2 installed by scripts/setup-debian.sh).
fn network_domain(d: &Domain) -> bool {
    let r = d.virtuos(&["status"], Duration::from_secs(20));
    let out = r.stdout();
    assert!(
        out.contains("domain network:"),
        "this daemon runs no network domain (run as root after scripts/setup-debian.sh):\n{out}\n{}",
        d.diagnostics()
    );
    assert!(
        out.contains("domain network: connected"),
        "the network domain is not connected:\n{out}\n{}",
        d.diagnostics()
    );
    true
}

const ECHO_SERVER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
for _ in range(2):
    a, peer = s.accept()
    while True:
        d = a.recv(65536)
        if not d:
            break
        a.sendall(d)
    a.close()
print("server done")
"#;

const ECHO_CLIENT: &str = r#"
import os, socket, sys, time
for _ in range(200):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.05)
port = int(open(sys.argv[1]).read())
for size in (5, 1 << 20):
    c = socket.create_connection(("127.0.0.1", port))
    data = bytes(i % 251 for i in range(size))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += d
    c.close()
    print("echo", size, got == data)
"#;

#[test]
fn tcp_echo_server_and_client_both_under_virtuos() {
    let d = start(0);
    if !network_domain(&d) {
        return;
    }
    std::fs::write(d.tmp.join("server.py"), ECHO_SERVER).unwrap();
    std::fs::write(d.tmp.join("client.py"), ECHO_CLIENT).unwrap();
    let r = d.run_virtuos(
        "$PY server.py $TMP/port > server.out & $PY client.py $TMP/port; wait; cat server.out",
    );
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "echo 5 True\necho 1048576 True\nserver done\n"),
        "TCP echo under virtuos failed:\n{}",
        show(&r, &d)
    );
}

const UDP: &str = r#"
import socket
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("127.0.0.1", 0))
b.sendto(b"ping", a.getsockname())
data, peer = a.recvfrom(100)
print(data.decode(), peer == b.getsockname())
a.sendmsg([b"po", b"ng"], [], 0, peer)
data, anc, flags, addr = b.recvmsg(2)
print(data.decode(), bool(flags & socket.MSG_TRUNC), addr == a.getsockname())
b.settimeout(0.2)
try:
    b.recv(10)
except socket.timeout:
    print("timeout")
"#;

#[test]
fn udp_exchange_under_virtuos() {
    let d = start(1);
    if !network_domain(&d) {
        return;
    }
    let r = d.run(&[&python(), "-c", UDP]);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "ping True\npo True True\ntimeout\n"),
        "UDP under virtuos failed:\n{}",
        show(&r, &d)
    );
}

#[test]
fn getaddrinfo_localhost_under_virtuos() {
    let d = start(2);
    if !network_domain(&d) {
        return;
    }
    let r = d.run(&[
        &python(),
        "-c",
        "import socket\n\
         addrs = sorted({ai[4][0] for ai in socket.getaddrinfo('localhost', 80, type=socket.SOCK_STREAM)})\n\
         print('127.0.0.1' in addrs)\n\
         s = socket.create_server(('localhost', 0)); print(s.getsockname()[0])",
    ]);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "True\n127.0.0.1\n"),
        "getaddrinfo under virtuos failed:\n{}",
        show(&r, &d)
    );
}

const LISTENER: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(1)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
for _ in range(600):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
print("listener done")
"#;

#[test]
fn a_server_under_virtuos_is_not_in_the_hosts_stack() {
    let d = start(3);
    if !network_domain(&d) {
        return;
    }
    std::fs::write(d.tmp.join("listener.py"), LISTENER).unwrap();
    let port_file = d.tmp.join("port");
    let stop_file = d.tmp.join("stop");
    std::thread::scope(|s| {
        let server = s.spawn(|| d.run_virtuos("$PY listener.py $TMP/port $TMP/stop"));
        let start = Instant::now();
        while !port_file.exists() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let port: Option<u16> = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        // On the host, while the server listens.
        let ss = std::process::Command::new("ss")
            .args(["-ltnH"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let refused = port.map(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
        std::fs::write(&stop_file, "").unwrap();
        let r = server.join().unwrap();
        assert_eq!(
            (r.code(), r.stdout().as_str()),
            (0, "listener done\n"),
            "the listener under virtuos failed:\n{}",
            show(&r, &d)
        );
        let port = port.expect("the listener reported its port");
        let ss = ss.expect("run ss on the host");
        let needle = format!(":{port} ");
        assert!(
            !ss.lines().any(|l| l.contains(&needle)),
            "port {port} of a server under virtuos is visible in the host's stack:\n{ss}"
        );
        assert_eq!(
            refused,
            Some(true),
            "the host reached a server listening under virtuos"
        );
    });
}
