//! nginx (Debian's nginx-light) as the HTTP server under test: a config in
//! a private directory (as crates/e2e/tests/servers.rs runs it: no daemon,
//! no master process, one worker, temp paths in the directory), started
//! natively or under `virtuos run`, in a process group of its own so that
//! stopping it also stops nginx below `virtuos run`.

use super::loadgen::which;
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary, or an error naming the package.
pub fn find() -> anyhow::Result<PathBuf> {
    which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .context(
            "nginx is not installed (Debian package nginx-light, installed by \
             scripts/setup-debian.sh); the HTTP benchmark needs it",
        )
}

/// `nginx version: nginx/1.22.1`.
pub fn version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default()
}

/// The config of one instance: listen on `listen`, serve `root`, keep
/// everything (pid, temp paths, error log) under `dir`.
pub fn config(dir: &Path, listen: &str, root: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    server {{
        listen {listen};
        root {root};
    }}
}}
",
        root = root.display()
    )
}

/// Write `dir/nginx.conf`; the command line that runs it.
pub fn prepare(nginx: &Path, dir: &Path, listen: &str, root: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, listen, root))
        .with_context(|| format!("write {}", conf.display()))?;
    Ok(vec![
        nginx.display().to_string(),
        "-p".into(),
        dir.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
    ])
}

/// A running server process group; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    dir: PathBuf,
    what: String,
}

impl Server {
    /// Start `c` (output to `dir/server.out`) in a new process group.
    pub fn start(mut c: Command, dir: &Path, what: &str) -> anyhow::Result<Server> {
        let out = std::fs::File::create(dir.join("server.out"))?;
        c.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = c.spawn().with_context(|| format!("cannot start {what}"))?;
        Ok(Server {
            child: Some(child),
            dir: dir.to_path_buf(),
            what: what.to_string(),
        })
    }

    /// Wait until `GET /path` on `addr` answers 200 with `len` bytes.
    pub fn wait_ready(&mut self, addr: SocketAddr, path: &str, len: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    self.child = None;
                    bail!("{} exited ({st}): {}", self.what, self.log());
                }
            }
            match get(addr, path) {
                Ok((200, n)) if n == len => return Ok(()),
                Ok((code, n)) => last = format!("HTTP {code}, {n} bytes"),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} not serving http://{addr}{path} after 30 s (last: {last}): {}",
            self.what,
            self.log()
        )
    }

    /// server.out and error.log, for error messages.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let all = read("server.out") + &read("error.log");
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// True while the process (`virtuos run` or nginx) has not exited.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let Ok(pid) = i32::try_from(c.id()) else {
            return;
        };
        // The group this process leads (process_group(0) above).
        let group = rustix::process::Pid::from_raw(pid);
        let signal = |s| {
            if let Some(g) = group {
                let _ = rustix::process::kill_process_group(g, s);
            }
        };
        signal(rustix::process::Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // nginx below `virtuos run` may outlive it: kill the whole group.
        signal(rustix::process::Signal::KILL);
        let _ = c.wait();
    }
}

/// A minimal HTTP/1.0 GET: status code and body length.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, u64)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let body = &resp[end + 4..];
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((code, body.len() as u64))
}

/// A TCP port that is free on the host's 127.0.0.1 right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_its_directory() {
        let c = config(Path::new("/t/n"), "0.0.0.0:8080", Path::new("/t/www"));
        assert!(c.contains("listen 0.0.0.0:8080;"), "{c}");
        assert!(c.contains("root /t/www;"), "{c}");
        assert!(c.contains("pid /t/n/nginx.pid;"), "{c}");
        assert!(c.contains("master_process off;"), "{c}");
        assert!(!c.contains("/var/"), "{c}");
    }
}
