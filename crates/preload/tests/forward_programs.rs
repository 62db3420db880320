//! Real, unmodified programs under `LD_PRELOAD=libvirtuos.so` against a
//! fake daemon and fake storage domain living in this test process.
//!
//! The storage mount is a virtual path that does not exist on the host;
//! the fake domain maps it onto a temp directory. So a call on a storage
//! path that leaked to the host fails, and a correct result proves that
//! interception, registration, marshalling, fork claims and the exec
//! record worked end to end. (The fake domain shares one descriptor table
//! between a shadow and its forks: enough for these programs.)

mod forward_common;

use forward_common::Executor;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use virtuos_abi::control::{self, ClientRequest, DaemonReply};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, REGION_SIZE, STATE_SIZE};

struct World {
    runtime: PathBuf,
    real: PathBuf,
    mount: String,
}

struct Client {
    region_fd: OwnedFd,
    state_fd: OwnedFd,
    exec: Arc<Executor>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "virtuos-preload"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(st.success());
        target.join("debug/libvirtuos.so")
    })
}

fn new_client(exec: Executor) -> std::io::Result<Client> {
    let region_fd = create_memfd("fake-region", REGION_SIZE)?;
    let state_fd = create_memfd("fake-state", STATE_SIZE)?;
    let region = ClientRegion::map(&region_fd)?;
    region.init();
    let state = StatePage::map(&state_fd, true)?;
    state.get().init(2);
    let exec = Arc::new(exec);
    // Several workers: a blocking call (accept) must not stall the others.
    let (region, state) = (Arc::new(region), Arc::new(state));
    for _ in 0..4 {
        let (e2, r2, s2) = (exec.clone(), region.clone(), state.clone());
        std::thread::spawn(move || e2.serve(&r2, &s2));
    }
    Ok(Client {
        region_fd,
        state_fd,
        exec,
    })
}

/// Network domain registrations and fork claims the fake daemon answered.
static NET_REGISTERED: AtomicUsize = AtomicUsize::new(0);
static NET_CLAIMED: AtomicUsize = AtomicUsize::new(0);

fn daemon(sock: OwnedFd, mount: String, real: String) {
    // Keyed by (pid, domain): a process has one session per domain.
    let clients: Mutex<HashMap<(u32, String), Client>> = Mutex::new(HashMap::new());
    loop {
        let Ok(conn) = rustix::net::accept(&sock) else {
            continue;
        };
        let pid = rustix::net::sockopt::socket_peercred(&conn)
            .map(|c| c.pid.as_raw_nonzero().get() as u32)
            .unwrap_or(0);
        let Ok(Some((req, _))) = control::recv::<ClientRequest>(conn.as_fd()) else {
            continue;
        };
        let mut map = clients.lock().unwrap();
        let req_kind = match &req {
            ClientRequest::Register { .. } => 0,
            _ => 1,
        };
        let (made, domain) = match req {
            ClientRequest::Register { domain } => (
                new_client(Executor::new(Some((mount.clone(), real.clone())))).ok(),
                domain,
            ),
            ClientRequest::Reattach { domain } => (map.remove(&(pid, domain.clone())), domain),
            ClientRequest::ClaimFork {
                parent_pid, domain, ..
            } => match map.get(&(parent_pid, domain.clone())) {
                Some(p) => (new_client(p.exec.fork()).ok(), domain),
                None => (None, domain),
            },
            _ => (None, String::new()),
        };
        match made {
            Some(c) => {
                if domain == virtuos_abi::control::NETWORK {
                    match req_kind {
                        0 => NET_REGISTERED.fetch_add(1, Ordering::SeqCst),
                        _ => NET_CLAIMED.fetch_add(1, Ordering::SeqCst),
                    };
                }
                let reply = DaemonReply::Registered {
                    client_id: pid as u64,
                    storage_mount: mount.clone(),
                    region_offset: 0,
                    state_offset: 0,
                };
                let _ = control::send(
                    conn.as_fd(),
                    &reply,
                    &[c.region_fd.as_fd(), c.state_fd.as_fd()],
                );
                map.insert((pid, domain), c);
            }
            None => {
                let reply = DaemonReply::Error {
                    message: "fake daemon: no such client".into(),
                };
                let _ = control::send(conn.as_fd(), &reply, &[]);
            }
        }
    }
}

/// The tests of this file share one fake daemon and domain that run on
/// threads of this test process; they run one at a time (a test that runs
/// alongside another one's programs has seen the fake daemon hand out the
/// wrong descriptors — a fault of the fake, not of the library).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("forward-programs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let runtime = base.join("run");
        let real = base.join("storage-data");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        let mount = format!("/virtuos-test-mount-{}", std::process::id());
        assert!(!Path::new(&mount).exists());
        use rustix::net::{
            bind, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
        };
        let sock = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            &sock,
            &SocketAddrUnix::new(runtime.join("virtuosd.sock")).unwrap(),
        )
        .unwrap();
        listen(&sock, 64).unwrap();
        let (m, r) = (mount.clone(), real.display().to_string());
        std::thread::spawn(move || daemon(sock, m, r));
        World {
            runtime,
            real,
            mount,
        }
    })
}

fn sh(script: &str) -> Output {
    let w = world();
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .env("LD_PRELOAD", lib())
        .env("VIRTUOS_RUNTIME_DIR", &w.runtime)
        .env("VIRTUOS_STORAGE_MOUNT", &w.mount)
        .env("M", &w.mount)
        .env("LC_ALL", "C")
        .output()
        .expect("run sh");
    out
}

fn ok(script: &str) -> String {
    let out = sh(script);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "script failed: {script}\nstatus {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("virtuos:"), "virtuos complained: {stderr}");
    stdout
}

#[test]
fn shell_redirection_and_cat() {
    let _serial = serial();
    let w = world();
    let out = ok("echo hello > $M/greeting && cat $M/greeting");
    assert_eq!(out, "hello\n");
    assert_eq!(
        std::fs::read_to_string(w.real.join("greeting")).unwrap(),
        "hello\n"
    );
}

#[test]
fn coreutils_copy_list_move_remove() {
    let _serial = serial();
    let w = world();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = w.runtime.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let script = format!(
        "cp {} $M/c.bin && mkdir $M/cdir && mv $M/c.bin $M/cdir/ && ls $M/cdir && \
         cat $M/cdir/c.bin | wc -c && cp $M/cdir/c.bin {}/back.bin && rm -r $M/cdir && ls $M/cdir 2>/dev/null || echo gone",
        src.display(),
        w.runtime.display()
    );
    let out = ok(&script);
    assert_eq!(out, "c.bin\n700000\ngone\n");
    let back = std::fs::read(w.runtime.join("back.bin")).unwrap();
    if back != data {
        let first = back.iter().zip(&data).position(|(a, b)| a != b);
        panic!(
            "copied back {} bytes, expected {}; first difference at {:?}",
            back.len(),
            data.len(),
            first
        );
    }
}

#[test]
fn cwd_in_the_domain_survives_fork_and_exec() {
    let _serial = serial();
    let w = world();
    std::fs::create_dir_all(w.real.join("wd/sub")).unwrap();
    std::fs::write(w.real.join("wd/sub/f.txt"), "in sub\n").unwrap();
    let out = ok("cd $M/wd && pwd && cd sub && /bin/pwd && cat f.txt && ls && cd .. && ls -d sub");
    assert_eq!(
        out,
        format!("{m}/wd\n{m}/wd/sub\nin sub\nf.txt\nsub\n", m = w.mount)
    );
}

#[test]
fn stat_find_and_head() {
    let _serial = serial();
    let w = world();
    std::fs::create_dir_all(w.real.join("tree/a/b")).unwrap();
    std::fs::write(w.real.join("tree/a/b/leaf"), "0123456789").unwrap();
    let out = ok(
        "stat -c %s $M/tree/a/b/leaf && find $M/tree -type f && head -c 4 $M/tree/a/b/leaf; echo",
    );
    assert_eq!(out, format!("10\n{}/tree/a/b/leaf\n0123\n", w.mount));
}

#[test]
fn forwarded_descriptors_are_inherited_across_fork_and_exec() {
    let _serial = serial();
    let w = world();
    std::fs::write(w.real.join("inherit.txt"), "through fd 3\n").unwrap();
    let _ = std::fs::remove_file(w.real.join("absent"));
    // sh opens fd 3 in the domain, forks, the child dup2s it onto stdin
    // and execs cat, which reads it through the exec-state record.
    let out = ok("exec 3< $M/inherit.txt; cat <&3; exec 3<&-; ls -l /proc/self/fd/ >/dev/null");
    assert_eq!(out, "through fd 3\n");
    // Close-on-exec descriptors do not survive.
    let out = ok("exec 4< $M/inherit.txt; python3 -c 'import os,fcntl; fcntl.fcntl(4, fcntl.F_SETFD, fcntl.FD_CLOEXEC); os.execv(\"/bin/sh\", [\"sh\", \"-c\", \"cat <&4 2>/dev/null || echo closed\"])'");
    assert_eq!(out, "closed\n");
}

#[test]
fn python_threads_write_and_read_back() {
    let _serial = serial();
    let w = world();
    let script = r#"python3 -c '
import os, threading
m = os.environ["M"]
def work(i):
    p = f"{m}/py{i}.bin"
    with open(p, "wb") as f:
        f.write(bytes([i]) * 300000)
    with open(p, "rb") as f:
        assert f.read() == bytes([i]) * 300000
ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sorted(n for n in os.listdir(m) if n.startswith("py")))
'"#;
    let out = ok(script);
    assert_eq!(
        out,
        "['py0.bin', 'py1.bin', 'py2.bin', 'py3.bin', 'py4.bin', 'py5.bin']\n"
    );
    assert_eq!(
        std::fs::metadata(w.real.join("py3.bin")).unwrap().len(),
        300000
    );
}

#[test]
fn no_daemon_means_eio_not_the_host() {
    let _serial = serial();
    let out = Command::new("/bin/cat")
        .arg("/storage/anything")
        .env("LD_PRELOAD", lib())
        .env("VIRTUOS_RUNTIME_DIR", "/nonexistent-virtuos-runtime")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "cannot reach the virtuos daemon at /nonexistent-virtuos-runtime/virtuosd.sock"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("Input/output error"), "{stderr}");
}

#[test]
fn tcp_sockets_are_forwarded_across_fork() {
    let _serial = serial();
    // The parent listens and forks; the child connects and talks; both
    // hold forwarded sockets (the fork claims a network shadow).
    let script = r#"python3 -c '
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4)
port = s.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"from child")
    print("child got", c.recv(100).decode(), flush=True)
    os._exit(0)
a, peer = s.accept()
print("parent got", a.recv(100).decode(), peer[0], flush=True)
a.sendall(b"reply")
os.waitpid(pid, 0)
print("done")
'"#;
    let out = ok(script);
    assert_eq!(
        out,
        "parent got from child 127.0.0.1\nchild got reply\ndone\n"
    );
    assert!(
        NET_REGISTERED.load(Ordering::SeqCst) >= 1,
        "the sockets were not created in the network domain"
    );
    assert!(
        NET_CLAIMED.load(Ordering::SeqCst) >= 1,
        "the forked child did not claim a network shadow"
    );
}
