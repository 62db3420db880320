//! Real servers under virtuos: their sockets live in the network domain,
//! their files in the storage domain, and they wait with epoll (or poll)
//! across both. Every client also runs under virtuos and talks to
//! 127.0.0.1 inside the domain's network namespace (each daemon has its own
//! namespace, so the fixed ports below cannot collide between tests).
//!
//! - a python asyncio TCP echo server and client (epoll);
//! - one epoll set with a pipe and a network socket (edge-triggered,
//!   one-shot), and a poll set that adds a storage file;
//! - `python3 -m http.server` serving /storage, fetched with curl;
//! - redis-server with its append-only file in /storage, driven by
//!   redis-benchmark and redis-cli;
//! - nginx serving /storage, fetched with curl and loaded with ab.
//!
//! A missing program is a failure (scripts/setup-debian.sh installs them).

use virtuos_e2e::{require_programs, Domain, Run};

fn show(r: &Run, d: &Domain) -> String {
    format!(
        "{}\n-- stdout --\n{}\n-- stderr --\n{}\n{}",
        r.status_text(),
        r.stdout(),
        tail(&r.stderr(), 60),
        d.diagnostics()
    )
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Shell helper for the scripts: wait until `$1` (a command) succeeds.
const WAIT_FOR: &str = r#"
wait_for() { for _ in $(seq 1 300); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.1; done; echo "timed out waiting for: $1" >&2; return 1; }
"#;

const ASYNC_ECHO: &str = r#"
import asyncio, os, sys

async def handle(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()

async def client(port, size):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = bytes(i % 251 for i in range(size))
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    got = await reader.read(-1)
    writer.close()
    return got == data

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if sys.argv[1] == "server":
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        # Serve until the other process says it is done.
        while not os.path.exists(sys.argv[3]):
            await asyncio.sleep(0.05)
        print("server done")
        return
    # In-process: several concurrent clients, then a timer-only wait.
    results = await asyncio.gather(*(client(port, s) for s in (1, 1000, 1 << 20, 7)))
    print("local", results)
    await asyncio.sleep(0.1)
    server.close()

async def remote():
    for _ in range(300):
        if os.path.exists(sys.argv[2]):
            break
        await asyncio.sleep(0.05)
    port = int(open(sys.argv[2]).read())
    results = await asyncio.gather(*(client(port, s) for s in (5, 1 << 16, 1 << 20)))
    print("remote", results)
    open(sys.argv[3], "w").close()

if sys.argv[1] == "client":
    asyncio.run(remote())
else:
    asyncio.run(main())
"#;

#[test]
fn asyncio_echo_server_and_client_under_virtuos() {
    let d = Domain::start();
    std::fs::write(d.tmp.join("echo.py"), ASYNC_ECHO).unwrap();
    let r = d.run_virtuos(
        "$PY echo.py self x y && \
         ($PY echo.py server $TMP/port $TMP/stop > server.out & \
          $PY echo.py client $TMP/port $TMP/stop; wait; cat server.out)",
    );
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (
            0,
            "local [True, True, True, True]\nremote [True, True, True]\nserver done\n"
        ),
        "asyncio echo under virtuos failed:\n{}",
        show(&r, &d)
    );
}

const MIXED: &str = r#"
import os, select, signal, socket, time
class Alarm(Exception):
    pass
def on_alarm(*_):
    raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
def interrupted(e):
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    t0 = time.monotonic()
    try:
        e.poll(5)
        return "not interrupted"
    except Alarm:
        return time.monotonic() - t0 < 2
ep = select.epoll()
r, w = os.pipe()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(4)
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
ep.register(r, select.EPOLLIN)
ep.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
ep.register(srv.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
f = open("/storage/mixed.txt", "w+")
try:
    ep.register(f.fileno(), select.EPOLLIN)
    print("storage file: registered?!")
except PermissionError:
    print("storage file: EPERM")
names = {r: "pipe", a.fileno(): "sock", srv.fileno(): "listener"}
def ready(t):
    return sorted(names[fd] for fd, ev in ep.poll(t))
t0 = time.monotonic()
print("idle", ready(0.2), 0.15 < time.monotonic() - t0 < 2)
os.write(w, b"x")
print("pipe", ready(1))
c.send(b"hello")
print("both", ready(1))
print("edge", ready(0.05))
os.read(r, 1)
c.send(b"more")
print("new edge", ready(1))
c2 = socket.create_connection(srv.getsockname())
print("oneshot", ready(1))
c3 = socket.create_connection(srv.getsockname())
print("disarmed", ready(0.05))
print("alarm", interrupted(ep))
# Only forwarded members: one remote wait (exact timeout, signals).
ep2 = select.epoll()
ep2.register(c.fileno(), select.EPOLLIN)
t0 = time.monotonic()
print("remote idle", ep2.poll(0.3), 0.25 < time.monotonic() - t0 < 2)
print("remote alarm", interrupted(ep2))
a.send(b"to c")
print("remote ready", [fd == c.fileno() for fd, _ in ep2.poll(1)])
ep.modify(srv.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
print("rearmed", ready(1))
ep.unregister(srv.fileno())
# Closing a registered socket takes it out of the set; its number can be
# registered again.
a2, _ = srv.accept()
ep.register(a2.fileno(), select.EPOLLIN)
names[a2.fileno()] = "sock2"
c2.send(b"z")
print("sock2", ready(1))
a2.close()
print("closed", ready(0.05))
a3, _ = srv.accept()
ep.register(a3.fileno(), select.EPOLLIN)
names[a3.fileno()] = "sock3"
c3.send(b"w")
print("sock3", ready(1))
# Nested: an epoll of local members inside another.
inner = select.epoll()
r2, w2 = os.pipe()
inner.register(r2, select.EPOLLIN)
outer = select.epoll()
outer.register(inner.fileno(), select.EPOLLIN)
os.write(w2, b"y")
print("nested", [fd == inner.fileno() for fd, _ in outer.poll(1)])
# poll: a pipe, a socket and a storage file.
p = select.poll()
p.register(r, select.POLLIN)
p.register(a.fileno(), select.POLLIN)
p.register(f.fileno(), select.POLLIN)
kinds = {r: "pipe", a.fileno(): "sock", f.fileno(): "file"}
print("poll", sorted(kinds[fd] for fd, ev in p.poll(1000)))
"#;

#[test]
fn one_epoll_set_mixes_a_pipe_and_a_socket_and_poll_adds_a_storage_file() {
    let d = Domain::start();
    let r = d.run(&[&virtuos_e2e::python(), "-c", MIXED]);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (
            0,
            "storage file: EPERM\n\
             idle [] True\n\
             pipe ['pipe']\n\
             both ['pipe', 'sock']\n\
             edge ['pipe']\n\
             new edge ['sock']\n\
             oneshot ['listener']\n\
             disarmed []\n\
             alarm True\n\
             remote idle [] True\n\
             remote alarm True\n\
             remote ready [True]\n\
             rearmed ['listener']\n\
             sock2 ['sock2']\n\
             closed []\n\
             sock3 ['sock3']\n\
             nested [True]\n\
             poll ['file', 'sock']\n"
        ),
        "mixed epoll/poll under virtuos failed:\n{}",
        show(&r, &d)
    );
}

#[test]
fn python_http_server_serves_storage_to_curl() {
    require_programs(&["curl"]);
    let d = Domain::start();
    let script = format!(
        "{WAIT_FOR}
mkdir -p /storage/www && cd /storage/www || exit 1
$PY -c 'import sys; sys.stdout.buffer.write(bytes(i * 7 % 256 for i in range(300000)))' > blob.bin
echo 'hello from the storage domain' > index.txt
$PY -m http.server --bind 127.0.0.1 8123 > $TMP/http.log 2>&1 &
srv=$!
wait_for 'curl -sf http://127.0.0.1:8123/index.txt'
curl -sS -o $TMP/blob.got http://127.0.0.1:8123/blob.bin
curl -sS http://127.0.0.1:8123/index.txt
cmp blob.bin $TMP/blob.got && echo same
kill $srv; wait $srv 2>/dev/null
true"
    );
    let r = d.run_virtuos(&script);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "hello from the storage domain\nsame\n"),
        "http.server under virtuos failed:\n{}\n-- http.log --\n{}",
        show(&r, &d),
        std::fs::read_to_string(d.tmp.join("http.log")).unwrap_or_default()
    );
    d.assert_in_domain("www/blob.bin");
}

#[test]
fn redis_keeps_its_append_only_file_in_storage() {
    require_programs(&["redis-server", "redis-cli", "redis-benchmark"]);
    let d = Domain::start();
    let script = format!(
        "{WAIT_FOR}
mkdir -p /storage/redis || exit 1
redis-server --dir /storage/redis --appendonly yes --port 6391 --bind 127.0.0.1 --save '' \
    --daemonize no --logfile $TMP/redis.log &
srv=$!
wait_for 'redis-cli -p 6391 ping | grep -q PONG'
redis-benchmark -p 6391 -q -n 2000 -t set,get > $TMP/bench.out 2>&1 || echo benchmark failed
grep -c 'requests per second' $TMP/bench.out
redis-cli -p 6391 set greeting 'from virtuos'
redis-cli -p 6391 get greeting
redis-cli -p 6391 shutdown
wait $srv
echo exit $?"
    );
    let r = d.run_virtuos(&script);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "2\nOK\nfrom virtuos\nexit 0\n"),
        "redis under virtuos failed:\n{}\n-- bench --\n{}\n-- redis.log --\n{}",
        show(&r, &d),
        std::fs::read_to_string(d.tmp.join("bench.out")).unwrap_or_default(),
        tail(
            &std::fs::read_to_string(d.tmp.join("redis.log")).unwrap_or_default(),
            40
        )
    );
    // Redis 7: a manifest and base/incremental files in appendonlydir.
    let dir = "redis/appendonlydir";
    let files = d.list_domain_dir(dir);
    assert!(
        files.iter().any(|f| f.ends_with(".manifest")),
        "no AOF manifest in the domain's {dir}: {files:?}"
    );
    let incr: Vec<u8> = files
        .iter()
        .filter(|f| f.ends_with(".incr.aof"))
        .flat_map(|f| d.read_domain_file(&format!("{dir}/{f}")))
        .collect();
    assert!(
        String::from_utf8_lossy(&incr).contains("from virtuos"),
        "the AOF does not hold the last SET: {files:?}"
    );
    d.assert_in_domain("redis/appendonlydir");
}

#[test]
fn nginx_serves_storage_to_curl_and_ab() {
    require_programs(&["nginx", "curl", "ab"]);
    let d = Domain::start();
    let tmp = d.tmp.display().to_string();
    let conf = format!(
        "daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:8124;
        root /storage/www;
    }}
}}
"
    );
    std::fs::write(d.tmp.join("nginx.conf"), conf).unwrap();
    let script = format!(
        "{WAIT_FOR}
mkdir -p /storage/www && cd /storage/www || exit 1
$PY -c 'import sys; sys.stdout.buffer.write(bytes(i * 13 % 256 for i in range(200000)))' > big.bin
echo 'small file' > small.txt
nginx -p $TMP -c $TMP/nginx.conf > $TMP/nginx.log 2>&1 &
srv=$!
wait_for 'curl -sf http://127.0.0.1:8124/small.txt'
curl -sS http://127.0.0.1:8124/small.txt
curl -sS -o $TMP/big.got http://127.0.0.1:8124/big.bin
cmp big.bin $TMP/big.got && echo same
ab -q -n 500 -c 4 http://127.0.0.1:8124/small.txt > $TMP/ab.out 2>&1 || echo ab failed
grep -E '^(Complete requests|Failed requests)' $TMP/ab.out
kill $srv; wait $srv 2>/dev/null
true"
    );
    let r = d.run_virtuos(&script);
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (
            0,
            "small file\nsame\nComplete requests:      500\nFailed requests:        0\n"
        ),
        "nginx under virtuos failed:\n{}\n-- ab --\n{}\n-- nginx.log --\n{}",
        show(&r, &d),
        std::fs::read_to_string(d.tmp.join("ab.out")).unwrap_or_default(),
        tail(
            &std::fs::read_to_string(d.tmp.join("nginx.log")).unwrap_or_default(),
            40
        )
    );
}
