//! AF_UNIX sockets bound at paths under the storage mount live in the
//! storage domain (compared with native runs, the socket files included in
//! the tree comparison):
//!
//! - stream sockets at relative and absolute paths: `lstat` says socket,
//!   chmod/rename/unlink of the socket file, listen/connect/accept,
//!   getsockname/getpeername as the program gave the path;
//! - datagram sockets: sendto/sendmsg to a path from an unbound socket,
//!   recvfrom reporting the sender's path, connected datagrams;
//! - two programs meeting through a socket file;
//! - poll/select/epoll on those sockets, alone and with a pipe or a
//!   network socket in the same set;
//! - `mknod(S_IFSOCK)` nodes;
//! - abstract names, unnamed pairs and host paths stay on the host (a
//!   relative host path while the cwd is in the domain included), and
//!   nothing lands in the host's directories.
//!
//! What cannot cross domains is refused (not compared: natively it works):
//! descriptors in SCM_RIGHTS, and a socket of the storage domain reaching
//! a host path.

use virtuos_e2e::{python, Case, Domain, Run};

/// A script that runs the Python program `py` with `$ROOT` as its cwd,
/// then lists `$TMP` (a socket created in the stale host cwd would show).
fn py(code: &str) -> Case {
    Case::new(&format!(
        "cd \"$ROOT\"\n\"$PY\" - <<'PYEOF'\n{}\nPYEOF\necho \"rc=$?\"\nls -A \"$TMP\"\n",
        dedent(code)
    ))
    .needs(&[&python()])
}

fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn stream_sockets_at_storage_paths_are_socket_files_of_the_domain() {
    py(r#"
        import os, socket, stat
        root = os.environ["ROOT"]
        os.mkdir("d")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("d/rel.sock")
        print("name", s.getsockname())
        st = os.lstat("d/rel.sock")
        print("socket?", stat.S_ISSOCK(st.st_mode), oct(st.st_mode & 0o777))
        os.chmod("d/rel.sock", 0o600)
        print("mode", oct(os.stat("d/rel.sock").st_mode & 0o777))
        os.rename("d/rel.sock", "d/moved.sock")
        print("renamed", sorted(os.listdir("d")))
        s.listen(4)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(root + "/d/moved.sock")
        a, peer = s.accept()
        print("accepted from", repr(peer), "peer of client", c.getpeername())
        print("server name still", s.getsockname())
        c.sendall(b"hello " * 1000)
        got = b""
        while len(got) < 6000:
            got += a.recv(65536)
        print("server got", len(got))
        a.sendall(b"bye")
        print("client got", c.recv(16))
        c.shutdown(socket.SHUT_WR)
        print("eof", a.recv(16))
        try:
            socket.socket(socket.AF_UNIX).connect("d/nosuch.sock")
        except OSError as e:
            print("connect nosuch:", e.strerror)
        try:
            socket.socket(socket.AF_UNIX).bind("d/moved.sock")
        except OSError as e:
            print("bind taken:", e.strerror)
        abs_ = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        abs_.bind(root + "/abs.sock")
        print("abs name", abs_.getsockname() == root + "/abs.sock")
        os.unlink("d/moved.sock")
        print("after unlink", sorted(os.listdir("d")))
        a.close(); c.close(); s.close()
        # A non-blocking, close-on-exec socket keeps its flags in the domain.
        import fcntl
        nb = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        nb.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        nb.bind("nb.sock")
        nb.listen(1)
        print("nonblock", bool(fcntl.fcntl(nb, fcntl.F_GETFL) & os.O_NONBLOCK),
              "cloexec", bool(fcntl.fcntl(nb, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
              "sndbuf", nb.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        try:
            nb.accept()
        except BlockingIOError:
            print("accept would block")
        print("type", nb.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM)
        dup = os.dup(nb.fileno())
        print("dup is a socket", stat.S_ISSOCK(os.fstat(dup).st_mode))
        os.close(dup)
        "#)
    .native_contains("server got 6000")
    .check();
}

#[test]
fn datagram_sockets_send_to_storage_paths() {
    py(r#"
        import os, socket, stat
        root = os.environ["ROOT"]
        r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        r.bind("recv.sock")
        # An unbound socket sends to the path (it moves to the domain).
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        u.sendto(b"one", "recv.sock")
        print(r.recvfrom(64))
        u.sendmsg([b"two", b"+parts"], [], 0, root + "/recv.sock")
        print(r.recvfrom(64))
        # A bound sender: recvfrom reports its path as it was bound.
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.bind("send.sock")
        b.sendto(b"three", "recv.sock")
        data, frm = r.recvfrom(64)
        print(data, frm)
        b.sendto(b"reply", frm) if False else r.sendto(b"reply", frm)
        print(b.recv(64))
        # Connected datagrams; recvmsg.
        cn = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cn.connect("recv.sock")
        print("peer", cn.getpeername())
        cn.send(b"four")
        msg, anc, flags, addr = r.recvmsg(64)
        print(msg, anc, flags, repr(addr))
        try:
            cn.sendto(b"x", "nosuch.sock")
        except OSError as e:
            print("sendto nosuch:", e.strerror)
        print(sorted(p for p in os.listdir(".") if stat.S_ISSOCK(os.lstat(p).st_mode)))
        "#)
    .native_contains("b'reply'")
    .check();
}

#[test]
fn two_programs_talk_through_a_storage_socket() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir srv
        cat > server.py <<'EOF'
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(4)
os.rename("ready.tmp", "ready") if os.path.exists("ready.tmp") else open("ready", "w").close()
for _ in range(2):
    a, _ = s.accept()
    data = b""
    while not data.endswith(b"\n"):
        data += a.recv(4096)
    a.sendall(data.upper())
    a.close()
s.close()
os.unlink(sys.argv[1])
with open("server.out", "w") as f:
    f.write("server done\n")
EOF
        cat > client.py <<'EOF'
import socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sys.argv[1])
c.sendall(sys.argv[2].encode() + b"\n")
data = b""
while not data.endswith(b"\n"):
    data += c.recv(4096)
print(data.decode().strip(), c.getpeername())
EOF
        "$PY" server.py srv/echo.sock &
        for _ in $(seq 1 300); do [ -e ready ] && break; sleep 0.1; done
        test -S srv/echo.sock && echo "socket file present"
        "$PY" client.py srv/echo.sock "relative path"
        (cd srv && "$PY" ../client.py "$ROOT/srv/echo.sock" "from another cwd")
        wait
        cat server.out
        ls -A srv
        "#,
    )
    .needs(&[&python(), "seq", "ls"])
    .native_contains("FROM ANOTHER CWD")
    .check();
}

#[test]
fn poll_select_and_epoll_wait_on_storage_sockets() {
    py(r#"
        import os, select, socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("w.sock")
        s.listen(4)
        ep = select.epoll()
        ep.register(s.fileno(), select.EPOLLIN)
        print("epoll idle", ep.poll(0.05))
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect("w.sock")
        print("epoll listener ready", [e for _, e in ep.poll(2)])
        a, _ = s.accept()
        p = select.poll()
        p.register(a.fileno(), select.POLLIN)
        print("poll idle", p.poll(50))
        c.send(b"x")
        print("poll ready", [e for _, e in p.poll(2000)])
        r, w, _ = select.select([a], [c], [], 2)
        print("select", len(r), len(w))
        a.recv(1)
        # A pipe and a storage socket in one set: either side wakes it.
        rp, wp = os.pipe()
        p2 = select.poll()
        p2.register(rp, select.POLLIN)
        p2.register(a.fileno(), select.POLLIN)
        os.write(wp, b"p")
        print("mixed: pipe", [(fd == rp, e) for fd, e in p2.poll(2000)])
        os.read(rp, 1)
        c.send(b"y")
        print("mixed: socket", [(fd == rp, e) for fd, e in p2.poll(2000)])
        a.recv(1)
        r, _, _ = select.select([rp, a], [], [], 0.05)
        print("mixed select idle", r)
        # A network socket and a storage socket in one poll set.
        n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        n.bind(("127.0.0.1", 0))
        p3 = select.poll()
        p3.register(n.fileno(), select.POLLIN)
        p3.register(a.fileno(), select.POLLIN)
        print("two domains idle", p3.poll(50))
        c.send(b"z")
        print("two domains: unix", [(fd == a.fileno(), e) for fd, e in p3.poll(2000)])
        a.recv(1)
        n.sendto(b"u", n.getsockname())
        print("two domains: inet", [(fd == a.fileno(), e) for fd, e in p3.poll(2000)])
        r, _, _ = select.select([n, a], [], [], 2)
        print("two domains select", [f is n for f in r])
        # Edge-triggered epoll on the connection.
        ep2 = select.epoll()
        ep2.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
        c.send(b"e")
        print("edge", [e for _, e in ep2.poll(2)], ep2.poll(0.05))
        c.close()
        print("hangup", [e & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP) != 0 for _, e in ep2.poll(2)])
        "#)
    .native_contains("two domains select")
    .check();
}

#[test]
fn mknod_makes_socket_nodes_in_the_domain() {
    Case::new(
        r#"
        cd "$ROOT"
        "$PY" -c 'import os, stat; os.mknod("node.sock", stat.S_IFSOCK | 0o640)'
        stat -c '%F %a %s' node.sock
        test -S node.sock && echo "test -S: socket"
        find . -type s
        "$PY" -c '
import socket
try:
    socket.socket(socket.AF_UNIX).connect("node.sock")
except OSError as e:
    print("connect to a bare node:", e.strerror)
'
        mv node.sock moved.sock
        ls -l moved.sock | cut -c1-10
        rm moved.sock
        ls -A
        "#,
    )
    .needs(&[&python(), "stat", "find", "ls", "cut", "mv", "rm"])
    .native_contains("test -S: socket")
    .check();
}

#[test]
fn abstract_unnamed_and_host_path_sockets_stay_on_the_host() {
    py(r#"
        import os, socket, stat
        tmp = os.environ["TMP"]
        name = "\0virtuos-e2e-abstract-%d" % os.getpid()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(name)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.sendto(b"abstract", name)
        print(s.recv(64), s.getsockname() == name.encode())
        x, y = socket.socketpair()
        x.send(b"pair")
        print(y.recv(16))
        h = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        h.bind(tmp + "/host.sock")
        h.listen(1)
        k = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        k.connect(tmp + "/host.sock")
        print("host socket", stat.S_ISSOCK(os.lstat(tmp + "/host.sock").st_mode), h.getsockname() == tmp + "/host.sock")
        os.unlink(tmp + "/host.sock")
        # A relative path that leaves the storage mount (the cwd is in the
        # domain): the host socket is made where the path leads.
        rel = os.path.relpath(tmp + "/rel.sock")
        r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        r.bind(rel)
        print("relative host socket", stat.S_ISSOCK(os.lstat(tmp + "/rel.sock").st_mode))
        os.unlink(tmp + "/rel.sock")
        print("nothing in the cwd", os.listdir("."))
        "#)
    .native_contains("relative host socket True")
    .check();
}

fn show(r: &Run, d: &Domain) -> String {
    format!(
        "{}\n-- stdout --\n{}\n-- stderr --\n{}\n{}",
        r.status_text(),
        r.stdout(),
        r.stderr(),
        d.diagnostics()
    )
}

/// Descriptors cannot cross domains, and a socket of the storage domain
/// cannot reach the host: refused with EINVAL and EXDEV.
#[test]
fn what_cannot_cross_domains_is_refused() {
    let d = Domain::start();
    let r = d.run(&[
        &python(),
        "-c",
        r#"
import errno, os, socket, struct, select
os.chdir("/storage")
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a.bind("a.sock")
b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
b.connect("a.sock")
for what, anc in [("rights", [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", 0))]),
                  ("credentials", [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("3i", os.getpid(), 0, 0))])]:
    try:
        b.sendmsg([b"x"], anc)
        print(what, "sent")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
for target in ["/tmp/virtuos-e2e-nowhere.sock", "\0virtuos-e2e-abstract"]:
    try:
        b.sendto(b"x", target)
    except OSError as e:
        print("to host", errno.errorcode[e.errno])
h = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
h.bind("\0virtuos-e2e-bound-%d" % os.getpid())
try:
    h.connect("a.sock")
except OSError as e:
    print("bound host socket", errno.errorcode[e.errno])
ep = select.epoll()
ep.register(a.fileno(), select.EPOLLIN)
n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    ep.register(n.fileno(), select.EPOLLIN)
except OSError as e:
    print("epoll of two domains", errno.errorcode[e.errno])
os.unlink("a.sock")
"#,
    ]);
    let want = "rights EINVAL\ncredentials EINVAL\nto host EXDEV\nto host EXDEV\n\
                bound host socket EXDEV\nepoll of two domains EXDEV\n";
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, want),
        "{}",
        show(&r, &d)
    );
}
