//! The domain server end to end: this test plays the daemon (control socket
//! as fd 3, AddClient/AttachForked/RemoveClient/Shutdown) and the client
//! (request entries and chunks through `virtuos_abi`). Needs root.

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::control::{self, Credentials, DomainCommand, DomainReply};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::ops::{OP_FD_PATH, OP_FORK_ABORT, OP_FORK_PREPARE, OP_PING};
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, AT_FDCWD_ARG, REGION_SIZE, STATE_SIZE};

const STORAGE: &str = "/storage";

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "virtuos-domain-it-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Domain {
    child: Child,
    ctl: OwnedFd,
    data: PathBuf,
}

impl Domain {
    fn start(name: &str) -> (Domain, u32) {
        let data = temp_dir(name).join("data");
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_timeout(
            &ours,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(20)),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtuos-domain"));
        cmd.args(["--control-fd", "3", "--data-dir"])
            .arg(&data)
            .args(["--mount", STORAGE]);
        let raw = theirs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls dup2, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn virtuos-domain");
        drop(theirs);
        let dom = Domain {
            child,
            ctl: ours,
            data,
        };
        let cpus = match dom.recv() {
            Some(DomainReply::Ready { cpus }) => cpus,
            other => panic!("expected Ready, got {other:?}"),
        };
        (dom, cpus)
    }

    fn recv(&self) -> Option<DomainReply> {
        control::recv::<DomainReply>(self.ctl.as_fd())
            .expect("recv from domain")
            .map(|(r, _)| r)
    }

    fn cmd(&self, cmd: &DomainCommand, fds: &[BorrowedFd<'_>]) -> DomainReply {
        control::send(self.ctl.as_fd(), cmd, fds).expect("send to domain");
        self.recv().expect("domain closed the control socket")
    }

    fn add_client(&self, id: u64, creds: Credentials) -> Client {
        let c = Client::new();
        let r = self.cmd(
            &DomainCommand::AddClient {
                client_id: id,
                pid: std::process::id(),
                creds,
                slot: None,
                nproc: None,
            },
            &[c.region_fd.as_fd(), c.state_fd.as_fd()],
        );
        assert_eq!(r, DomainReply::Ok, "AddClient {id}");
        c
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(start.elapsed() < within, "domain did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(parent) = self.data.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

fn root_creds() -> Credentials {
    Credentials::of_user(0, 0, vec![])
}

struct Client {
    region_fd: OwnedFd,
    state_fd: OwnedFd,
    region: ClientRegion,
    state: StatePage,
}

const POLICY: WaitPolicy = WaitPolicy {
    spin: 1000,
    sleep_slice: Duration::from_millis(50),
    deadline: Some(Duration::from_secs(15)),
};

impl Client {
    fn new() -> Client {
        let region_fd = create_memfd("it-region", REGION_SIZE).unwrap();
        let state_fd = create_memfd("it-state", STATE_SIZE).unwrap();
        let region = ClientRegion::map(&region_fd).unwrap();
        region.init();
        let state = StatePage::map(&state_fd, false).unwrap();
        Client {
            region_fd,
            state_fd,
            region,
            state,
        }
    }

    /// One call on entry `index` (chunk = index, for simplicity).
    fn call_on(&self, index: u16, op: impl Into<i64>, chunk: bool, args: [u64; 6]) -> i64 {
        self.call_from(std::process::id(), index, op, chunk, args)
    }

    /// One call as client thread `task`.
    fn call_from(
        &self,
        task: u32,
        index: u16,
        op: impl Into<i64>,
        chunk: bool,
        args: [u64; 6],
    ) -> i64 {
        let e = self.region.entry(index).unwrap();
        e.fill(op.into() as u16, 0, task, chunk.then_some(index), args);
        let (r, _) = call::submit_and_wait(&self.region, self.state.get(), index, POLICY)
            .expect("call completed");
        r
    }

    fn call(&self, op: impl Into<i64>, chunk: bool, args: [u64; 6]) -> i64 {
        self.call_on(0, op, chunk, args)
    }

    /// Put a NUL-terminated string into chunk 0 at `off`.
    fn put_str(&self, off: u64, s: &str) -> u64 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        assert!(self.region.write_chunk(0, off, &b));
        off
    }

    fn put(&self, off: u64, data: &[u8]) -> u64 {
        assert!(self.region.write_chunk(0, off, data));
        off
    }

    fn get(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        assert!(self.region.read_chunk(0, off, &mut v));
        v
    }

    fn open(&self, path: &str, flags: i32, mode: u32) -> i64 {
        let p = self.put_str(0, path);
        self.call(
            libc::SYS_openat,
            true,
            [AT_FDCWD_ARG, p, flags as u64, mode as u64, 0, 0],
        )
    }

    fn write(&self, fd: i64, data: &[u8]) -> i64 {
        let off = self.put(4096, data);
        self.call(
            libc::SYS_write,
            true,
            [fd as u64, off, data.len() as u64, 0, 0, 0],
        )
    }

    fn read(&self, fd: i64, len: usize) -> Vec<u8> {
        let n = self.call(libc::SYS_read, true, [fd as u64, 8192, len as u64, 0, 0, 0]);
        assert!(n >= 0, "read: {n}");
        self.get(8192, n as usize)
    }

    fn close(&self, fd: i64) -> i64 {
        self.call(libc::SYS_close, false, [fd as u64, 0, 0, 0, 0, 0])
    }

    fn fd_path(&self, fd: i64) -> String {
        let n = self.call(OP_FD_PATH, true, [fd as u64, 0, 4096, 0, 0, 0]);
        assert!(n > 0, "fd path: {n}");
        String::from_utf8(self.get(0, n as usize)).unwrap()
    }
}

fn neg(e: i32) -> i64 {
    -(e as i64)
}

fn dirent_names(buf: &[u8]) -> Vec<String> {
    let mut names = vec![];
    let mut at = 0;
    while at + 19 <= buf.len() {
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        names.push(String::from_utf8_lossy(&name[..end]).into_owned());
        at += reclen;
    }
    names
}

#[test]
fn files_through_the_queue_fork_and_lifecycle() {
    let (mut dom, cpus) = Domain::start("main");
    assert!(cpus >= 1);
    let c = dom.add_client(1, root_creds());
    assert!(c.state.get().serving());
    assert!(
        c.state
            .get()
            .workers
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    assert_eq!(c.call(OP_PING, false, [0; 6]), 0);

    // mkdir + create + write + fsync + close.
    let p = c.put_str(0, "/storage/dir");
    assert_eq!(
        c.call(libc::SYS_mkdirat, true, [AT_FDCWD_ARG, p, 0o755, 0, 0, 0]),
        0
    );
    let fd = c.open(
        "/storage/dir/hello.txt",
        libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
        0o644,
    );
    assert!(fd >= 0, "openat: {fd}");
    assert!(fd < 65536);
    let text = b"hello from the storage domain\n";
    assert_eq!(c.write(fd, text), text.len() as i64);
    assert_eq!(
        c.call(libc::SYS_fsync, false, [fd as u64, 0, 0, 0, 0, 0]),
        0
    );
    assert_eq!(c.close(fd), 0);
    assert_eq!(c.close(fd), neg(libc::EBADF));

    // On the host: in the data directory, not under /storage.
    let host_file = dom.data.join("dir/hello.txt");
    assert_eq!(std::fs::read(&host_file).unwrap(), text);
    assert!(!Path::new("/storage/dir/hello.txt").exists());

    // Read back, fstat.
    let fd = c.open("/storage/dir/hello.txt", libc::O_RDONLY, 0);
    assert!(fd >= 0);
    assert_eq!(c.read(fd, 4096), text);
    assert_eq!(
        c.call(libc::SYS_fstat, true, [fd as u64, 512, 0, 0, 0, 0]),
        0
    );
    let st = c.get(512, 144);
    assert_eq!(
        i64::from_ne_bytes(st[48..56].try_into().unwrap()),
        text.len() as i64
    );
    assert_eq!(c.fd_path(fd), "/storage/dir/hello.txt");

    // getdents64 on the directory.
    let dfd = c.open("/storage/dir", libc::O_RDONLY | libc::O_DIRECTORY, 0);
    assert!(dfd >= 0);
    let n = c.call(
        libc::SYS_getdents64,
        true,
        [dfd as u64, 1024, 32 * 1024, 0, 0, 0],
    );
    assert!(n > 0, "getdents64: {n}");
    let names = dirent_names(&c.get(1024, n as usize));
    assert!(names.contains(&"hello.txt".to_string()), "{names:?}");
    assert_eq!(c.close(dfd), 0);

    // The shadow's cwd is the storage mount: relative paths and getcwd.
    assert_eq!(c.call(libc::SYS_getcwd, true, [0, 256, 0, 0, 0, 0]), 9);
    assert_eq!(c.get(0, 9), b"/storage\0");
    let rel = c.open("dir/hello.txt", libc::O_RDONLY, 0);
    assert!(rel >= 0);
    assert_eq!(c.close(rel), 0);

    // rename: the open fd follows.
    let a = c.put_str(0, "/storage/dir/hello.txt");
    let b = c.put_str(256, "/storage/dir/renamed.txt");
    assert_eq!(
        c.call(
            libc::SYS_renameat,
            true,
            [AT_FDCWD_ARG, a, AT_FDCWD_ARG, b, 0, 0]
        ),
        0
    );
    assert!(dom.data.join("dir/renamed.txt").exists());
    assert!(!host_file.exists());
    assert_eq!(c.fd_path(fd), "/storage/dir/renamed.txt");
    assert_eq!(c.close(fd), 0);

    // Outside the storage mount nothing is writable.
    assert_eq!(
        c.open("/escape", libc::O_CREAT | libc::O_WRONLY, 0o644),
        neg(libc::EROFS)
    );
    assert_eq!(
        c.open("/storage/../../etc/passwd", libc::O_RDONLY, 0),
        neg(libc::ENOENT)
    );

    // Fork: the child shadow shares the open file description.
    let fd = c.open(
        "/storage/forkfile",
        libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
        0o600,
    );
    assert!(fd >= 0);
    assert_eq!(c.write(fd, b"abcdef"), 6);
    assert_eq!(
        c.call(
            libc::SYS_lseek,
            false,
            [fd as u64, 0, libc::SEEK_SET as u64, 0, 0, 0]
        ),
        0
    );
    let token = c.call(OP_FORK_PREPARE, false, [0; 6]);
    assert!(token > 0, "fork prepare: {token}");
    let c2 = Client::new();
    let attach = |client_id, parent, token: i64, cl: &Client| {
        dom.cmd(
            &DomainCommand::AttachForked {
                client_id,
                parent_client_id: parent,
                token: token as u64,
                pid: std::process::id(),
                slot: None,
                creds: None,
            },
            &[cl.region_fd.as_fd(), cl.state_fd.as_fd()],
        )
    };
    assert!(
        matches!(attach(2, 99, token, &c2), DomainReply::Error { .. }),
        "wrong parent"
    );
    assert_eq!(attach(2, 1, token, &c2), DomainReply::Ok);
    assert!(c2.state.get().serving());
    assert_eq!(
        c2.read(fd, 3),
        b"abc",
        "child reads through the inherited fd"
    );
    assert_eq!(c.read(fd, 3), b"def", "shared offset with the parent");
    assert_eq!(c2.fd_path(fd), "/storage/forkfile");
    assert_eq!(c2.close(fd), 0);
    assert_eq!(
        c.call(libc::SYS_pread64, true, [fd as u64, 8192, 6, 0, 0, 0]),
        6,
        "the parent's descriptor survives the child's close"
    );
    assert_eq!(c.close(fd), 0);
    // Cwd is inherited too.
    assert_eq!(c2.call(libc::SYS_getcwd, true, [0, 256, 0, 0, 0, 0]), 9);

    // A token can be attached only once; an aborted one not at all.
    let c3 = Client::new();
    assert!(matches!(
        attach(3, 1, token, &c3),
        DomainReply::Error { .. }
    ));
    let token2 = c.call(OP_FORK_PREPARE, false, [0; 6]);
    assert!(token2 > 0);
    assert_eq!(
        c.call(OP_FORK_ABORT, false, [token2 as u64, 0, 0, 0, 0, 0]),
        0
    );
    assert!(matches!(
        attach(3, 1, token2, &c3),
        DomainReply::Error { .. }
    ));
    // A bogus token (our own pid: not a child of the shadow) is refused.
    assert!(matches!(
        attach(3, 1, std::process::id() as i64, &c3),
        DomainReply::Error { .. }
    ));

    // Clean up through the queue.
    for name in ["/storage/dir/renamed.txt", "/storage/forkfile"] {
        let p = c.put_str(0, name);
        assert_eq!(
            c.call(libc::SYS_unlinkat, true, [AT_FDCWD_ARG, p, 0, 0, 0, 0]),
            0
        );
    }
    let p = c.put_str(0, "/storage/dir");
    assert_eq!(
        c.call(
            libc::SYS_unlinkat,
            true,
            [AT_FDCWD_ARG, p, libc::AT_REMOVEDIR as u64, 0, 0, 0]
        ),
        0
    );
    assert!(!dom.data.join("dir").exists());

    // Lifecycle.
    let rm = |id| dom.cmd(&DomainCommand::RemoveClient { client_id: id }, &[]);
    assert_eq!(rm(2), DomainReply::Ok);
    assert!(matches!(rm(2), DomainReply::Error { .. }));
    assert_eq!(rm(1), DomainReply::Ok);
    assert!(matches!(rm(77), DomainReply::Error { .. }));
    // A duplicate id and a command without descriptors are errors, not crashes.
    let c4 = dom.add_client(4, root_creds());
    let dup = dom.cmd(
        &DomainCommand::AddClient {
            client_id: 4,
            pid: 1,
            creds: root_creds(),
            slot: None,
            nproc: None,
        },
        &[c4.region_fd.as_fd(), c4.state_fd.as_fd()],
    );
    assert!(matches!(dup, DomainReply::Error { .. }));
    let nofds = dom.cmd(
        &DomainCommand::AddClient {
            client_id: 5,
            pid: 1,
            creds: root_creds(),
            slot: None,
            nproc: None,
        },
        &[],
    );
    assert!(matches!(nofds, DomainReply::Error { .. }));
    assert_eq!(c4.call(OP_PING, false, [0; 6]), 0);

    assert_eq!(dom.cmd(&DomainCommand::Shutdown, &[]), DomainReply::Ok);
    let st = dom.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st:?}");
}

/// Pids of the domain's direct children (its shadows).
fn shadows_of(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Soft RLIMIT_NOFILE of a process.
fn nofile_soft(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn shadow_runs_with_the_clients_credentials() {
    let (dom, _) = Domain::start("creds");
    let secret = dom.data.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mine = dom.data.join("mine");
    std::fs::create_dir(&mine).unwrap();
    rustix::fs::chown(
        &mine,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .unwrap();

    let c = dom.add_client(1, Credentials::of_user(65534, 65534, vec![65534]));
    let create = libc::O_CREAT | libc::O_WRONLY;
    assert_eq!(c.open("/storage/x", create, 0o644), neg(libc::EACCES));
    assert_eq!(
        c.open("/storage/secret/y", create, 0o644),
        neg(libc::EACCES)
    );
    assert_eq!(
        c.open("/storage/secret", libc::O_RDONLY | libc::O_DIRECTORY, 0),
        neg(libc::EACCES)
    );
    let fd = c.open("/storage/mine/z", create, 0o644);
    assert!(fd >= 0, "own directory: {fd}");
    assert_eq!(c.fd_path(fd), "/storage/mine/z");
    assert_eq!(c.close(fd), 0);
    let meta = std::fs::metadata(mine.join("z")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let top = c.open("/storage", libc::O_RDONLY | libc::O_DIRECTORY, 0);
    assert!(top >= 0);
    assert_eq!(c.fd_path(top), "/storage");

    // The worker that ran the calls: the client's uid (saved uid 0, so it
    // can switch to another client thread's); its own descriptors out of
    // reach.
    let shadows = shadows_of(dom.child.id());
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    let sh = shadows[0];
    let worker = std::fs::read_dir(format!("/proc/{sh}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).unwrap().trim() == "worker-0")
        .expect("worker-0 thread");
    let status = std::fs::read_to_string(worker.join("status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534", "65534", "0", "65534"]
    );
    let base = nofile_soft(sh);
    assert!((1024..=65536).contains(&base), "client fd limit {base}");
    let mut own = 0;
    for entry in std::fs::read_dir(format!("/proc/{sh}/fd")).unwrap() {
        let n: u64 = entry
            .unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if n >= base {
            own += 1;
            // The shadow's own descriptor exists but the client cannot use it.
            assert_eq!(
                c.call(libc::SYS_fstat, true, [n, 0, 0, 0, 0, 0]),
                neg(libc::EBADF),
                "fd {n}"
            );
        }
    }
    assert!(
        own >= 3,
        "control socket, /proc and log live at or above {base}"
    );
    // Client descriptors start at the bottom.
    assert!(top < 8, "client fd {top}");
}

#[test]
fn set_credentials_changes_what_the_next_call_may_do() {
    let (dom, _) = Domain::start("setcreds");
    let c = dom.add_client(1, root_creds());
    let create = libc::O_CREAT | libc::O_WRONLY;
    let fd = c.open("/storage/secret", create, 0o600);
    assert!(fd >= 0, "root creates: {fd}");
    assert_eq!(c.close(fd), 0);
    let set = |tid: Option<u32>, creds: Credentials| {
        let r = dom.cmd(
            &DomainCommand::SetCredentials {
                client_id: 1,
                tid,
                creds,
            },
            &[],
        );
        assert_eq!(r, DomainReply::Ok);
    };
    let nobody = Credentials::of_user(65534, 65534, vec![]);
    let open_as = |task: u32| {
        let p = c.put_str(0, "/storage/secret");
        c.call_from(
            task,
            0,
            libc::SYS_openat,
            true,
            [AT_FDCWD_ARG, p, 0, 0, 0, 0],
        )
    };
    let me = std::process::id();
    // The whole process drops: refused at once.
    set(None, nobody.clone());
    assert_eq!(open_as(me), neg(libc::EACCES));
    // Back to root.
    set(None, root_creds());
    let fd = open_as(me);
    assert!(fd >= 0, "root again: {fd}");
    assert_eq!(c.close(fd), 0);
    // One thread drops (seteuid from that thread with raw syscalls): only
    // its calls are refused, once another thread has its own record.
    set(Some(me + 1), root_creds());
    set(Some(me + 2), nobody.clone());
    assert_eq!(open_as(me + 2), neg(libc::EACCES));
    let fd = open_as(me + 1);
    assert!(fd >= 0, "thread with root's record: {fd}");
    assert_eq!(c.close(fd), 0);
    // A thread without a record gets the last change (what a thread
    // created after it inherits).
    assert_eq!(open_as(me + 3), neg(libc::EACCES));
    // Real uid root, effective nobody: access() checks the real ids.
    let mut mixed = nobody.clone();
    mixed.uids = [0, 65534, 0, 65534];
    set(None, mixed);
    assert_eq!(open_as(me), neg(libc::EACCES));
    let p = c.put_str(0, "/storage/secret");
    assert_eq!(
        c.call(
            libc::SYS_faccessat,
            true,
            [AT_FDCWD_ARG, p, libc::W_OK as u64, 0, 0, 0]
        ),
        0
    );
    // Files are created with the file-system ids.
    let mut fs = root_creds();
    fs.uids[3] = 4242;
    fs.gids[3] = 4343;
    set(None, fs);
    let fd = c.open("/storage/by-fsuid", create, 0o644);
    assert!(fd >= 0, "{fd}");
    assert_eq!(c.close(fd), 0);
    let meta = std::fs::metadata(dom.data.join("by-fsuid")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    // Unknown clients are refused.
    let r = dom.cmd(
        &DomainCommand::SetCredentials {
            client_id: 99,
            tid: None,
            creds: root_creds(),
        },
        &[],
    );
    assert!(matches!(r, DomainReply::Error { .. }), "{r:?}");
}

#[test]
fn a_blocking_call_does_not_stall_the_client() {
    let (dom, _) = Domain::start("spare");
    let c = dom.add_client(1, root_creds());
    let fifo = dom.data.join("fifo");
    let p = c.put_str(0, "/storage/fifo");
    assert_eq!(
        c.call(
            libc::SYS_mknodat,
            true,
            [AT_FDCWD_ARG, p, (libc::S_IFIFO | 0o600) as u64, 0, 0, 0]
        ),
        0
    );
    // Entry 5: open the FIFO for reading, which blocks until a writer comes.
    let p = "/storage/fifo\0";
    assert!(c.region.write_chunk(5, 0, p.as_bytes()));
    let e = c.region.entry(5).unwrap();
    e.fill(
        libc::SYS_openat as u16,
        0,
        1,
        Some(5),
        [AT_FDCWD_ARG, 0, libc::O_RDONLY as u64, 0, 0, 0],
    );
    c.region.submit(5).unwrap();
    c.region.ring_if_idle(c.state.get());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!e.is_done(), "open of a FIFO without writer must block");
    // Other calls still complete.
    for _ in 0..10 {
        assert_eq!(c.call(OP_PING, false, [0; 6]), 0);
    }
    // Unblock it from the host side.
    let w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let start = Instant::now();
    while !e.is_done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "blocked open never completed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (fd, _) = e.result();
    e.release();
    assert!(fd >= 0, "fifo open: {fd}");
    drop(w);
    assert!(
        c.state
            .get()
            .workers
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[test]
fn domain_exits_when_the_daemon_goes_away() {
    let (mut dom, _) = Domain::start("eof");
    let c = dom.add_client(1, root_creds());
    assert_eq!(c.call(OP_PING, false, [0; 6]), 0);
    let hb = || {
        c.state
            .get()
            .heartbeat
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = hb();
    std::thread::sleep(Duration::from_millis(300));
    assert!(hb() > before, "heartbeat must advance");
    // Close our end of the control socket.
    let (dead, _) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    drop(std::mem::replace(&mut dom.ctl, dead));
    let st = dom.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st:?}");
    // The shadow is gone too: the heartbeat stops.
    std::thread::sleep(Duration::from_millis(300));
    let h1 = hb();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hb(), h1, "shadow still alive");
}

#[test]
fn concurrent_client_threads() {
    let (dom, _) = Domain::start("threads");
    let c = dom.add_client(1, root_creds());
    let fd = c.open(
        "/storage/shared",
        libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
        0o600,
    );
    assert!(fd >= 0);
    const THREADS: u16 = 8;
    const CALLS: u64 = 300;
    std::thread::scope(|s| {
        for t in 1..=THREADS {
            let c = &c;
            s.spawn(move || {
                for i in 0..CALLS {
                    // Each thread owns entry and chunk `t`.
                    let rec = [t as u8; 16];
                    assert!(c.region.write_chunk(t, 0, &rec));
                    let off = ((t as u64 - 1) * CALLS + i) * 16;
                    let r = c.call_on(t, libc::SYS_pwrite64, true, [fd as u64, 0, 16, off, 0, 0]);
                    assert_eq!(r, 16);
                    assert_eq!(c.call_on(t, OP_PING, false, [0; 6]), 0);
                }
            });
        }
    });
    let data = std::fs::read(dom.data.join("shared")).unwrap();
    assert_eq!(data.len() as u64, THREADS as u64 * CALLS * 16);
    for (i, rec) in data.chunks(16).enumerate() {
        let t = (i as u64 / CALLS + 1) as u8;
        assert!(rec.iter().all(|&b| b == t), "record {i}");
    }
    let workers = c
        .state
        .get()
        .workers
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=64).contains(&workers), "workers {workers}");
}

#[test]
fn an_interrupt_request_ends_a_blocked_call_with_eintr() {
    let (dom, _) = Domain::start("interrupt");
    let c = dom.add_client(1, root_creds());
    let p = c.put_str(0, "/storage/fifo");
    assert_eq!(
        c.call(
            libc::SYS_mknodat,
            true,
            [AT_FDCWD_ARG, p, (libc::S_IFIFO | 0o600) as u64, 0, 0, 0]
        ),
        0
    );
    // Entry 5: open the FIFO for reading: blocks, no writer will come.
    assert!(c.region.write_chunk(5, 0, b"/storage/fifo\0"));
    let e = c.region.entry(5).unwrap();
    e.fill(
        libc::SYS_openat as u16,
        0,
        1,
        Some(5),
        [AT_FDCWD_ARG, 0, libc::O_RDONLY as u64, 0, 0, 0],
    );
    c.region.submit(5).unwrap();
    c.region.ring_if_idle(c.state.get());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!e.is_done(), "open of a FIFO without writer must block");
    // A signal arrived in the client: it asks the domain to interrupt.
    let start = Instant::now();
    c.region.request_interrupt(5);
    while !e.is_done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the interrupt request did not end the blocked call"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (r, _) = e.result();
    e.release();
    assert_eq!(r, neg(libc::EINTR), "interrupted call must fail with EINTR");
    // The shadow keeps serving, and later calls are not interrupted.
    for _ in 0..50 {
        assert_eq!(c.call(OP_PING, false, [0; 6]), 0);
    }
    let p = c.put_str(0, "/storage/after");
    let fd = c.call(
        libc::SYS_openat,
        true,
        [
            AT_FDCWD_ARG,
            p,
            (libc::O_CREAT | libc::O_WRONLY) as u64,
            0o644,
            0,
            0,
        ],
    );
    assert!(fd >= 0, "open after an interrupt: {fd}");
}
