//! `virtuos demo`: a throw-away daemon (runtime and data dir under /tmp)
//! runs a few unmodified programs against /storage, shows where their files
//! went, and compares `dd` under virtuos with native. Each step prints ok or
//! FAILED; a failing step does not stop the others.

use super::{down, run, up};
use crate::config::{Backend, Settings, DEFAULT_STORAGE_MOUNT};
use crate::paths::Runtime;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a demo program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);
const DD: [&str; 4] = ["if=/dev/zero", "bs=4096", "count=2000", "conv=fsync"];

struct Steps {
    failed: usize,
    passed: usize,
}

impl Steps {
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<String>) -> bool {
        match f() {
            Ok(detail) => {
                self.passed += 1;
                println!("[ ok ] {name}");
                print_indented(&detail);
                true
            }
            Err(e) => {
                self.failed += 1;
                println!("[FAILED] {name}");
                print_indented(&format!("{e:#}"));
                false
            }
        }
    }

    fn skip(&mut self, name: &str, why: &str) {
        println!("[skip] {name}: {why}");
    }
}

fn print_indented(text: &str) {
    for l in text.lines() {
        println!("       {l}");
    }
}

struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Captured {
    fn output(&self) -> String {
        let mut s = String::new();
        for l in self.stdout.lines() {
            s.push_str(&format!("| {l}\n"));
        }
        for l in self.stderr.lines() {
            s.push_str(&format!("! {l}\n"));
        }
        s
    }

    fn expect(self, want: &str) -> Result<String> {
        let out = self.output();
        if !self.status.success() {
            bail!("exited with {}:\n{out}", self.status);
        }
        if !self.stdout.contains(want) {
            bail!("output lacks {want:?}:\n{out}");
        }
        Ok(out)
    }
}

/// Run with captured output, killing the program after `timeout`.
fn captured(mut cmd: Command, timeout: Duration) -> Result<Captured> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the program")?;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .iter_mut()
        .map(|p| {
            let mut p = p.take();
            std::thread::spawn(move || {
                let mut s = Vec::new();
                if let Some(p) = p.as_mut() {
                    let _ = p.read_to_end(&mut s);
                }
                String::from_utf8_lossy(&s).into_owned()
            })
        })
        .collect();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let mut out = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Ok(Captured {
        status,
        stdout: out.next().unwrap_or_default(),
        stderr: out.next().unwrap_or_default(),
        elapsed,
    })
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn temp_root() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("virtuos-demo-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

struct Demo {
    settings: Settings,
    lib: PathBuf,
}

impl Demo {
    fn under(&self, argv: &[&str]) -> Command {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        run::command(
            &self.settings.runtime,
            &self.settings.storage_mount,
            &self.lib,
            &argv,
        )
    }

    fn run(&self, argv: &[&str]) -> Result<Captured> {
        captured(self.under(argv), PROGRAM_TIMEOUT)
    }
}

pub fn cmd(keep: bool) -> Result<i32> {
    let root = temp_root()?;
    let runtime = root.join("run");
    let settings = Settings {
        storage_image: root.join("data").join(crate::config::STORAGE_IMAGE),
        vm_kernel: None,
        vm_initrd: None,
        vm_slots: crate::config::DEFAULT_VM_SLOTS,
        network_subnet: crate::network::default_subnet_for(&runtime),
        subnet_explicit: false,
        runtime: Runtime::new(runtime),
        data_dir: root.join("data"),
        storage_mount: DEFAULT_STORAGE_MOUNT.to_string(),
        mount_explicit: true,
        data_explicit: true,
        backend: Backend::Process,
        backend_explicit: true,
        // The demo only shows storage.
        network: false,
        forwards: vec![],
        hang_timeout: std::time::Duration::from_millis(crate::config::DEFAULT_HANG_TIMEOUT_MS),
        restart: true,
    };
    println!("virtuos demo: throw-away daemon in {}", root.display());
    let mut steps = Steps {
        failed: 0,
        passed: 0,
    };
    let host_mount = Path::new(DEFAULT_STORAGE_MOUNT);
    let host_had_mount = host_mount.exists();
    let host_demo = host_mount.join("demo");
    let host_had_demo = host_demo.exists();

    let up_ok = steps.step("start virtuosd and the storage domain", || {
        let (info, _) = up::start(&settings)?;
        Ok(format!(
            "daemon pid {}, storage domain files in {}",
            info.pid,
            settings.storage_dir().display()
        ))
    });
    let mut lib = None;
    if up_ok {
        steps.step("find the preload library", || {
            let l = run::preload_lib()?;
            let shown = l.display().to_string();
            lib = Some(l);
            Ok(shown)
        });
    }
    match lib {
        Some(lib) => programs(
            &mut steps,
            &Demo {
                settings: settings.clone(),
                lib,
            },
            &root,
            host_had_demo,
        ),
        None => steps.skip("programs", "no daemon or no preload library"),
    }
    if up_ok {
        steps.step("stop the daemon (virtuos down)", || {
            down::stop(&settings.runtime)
        });
    }

    if !host_had_demo && host_demo.exists() {
        // The library let calls through to the host: undo exactly what the
        // demo programs create there.
        for f in ["hello.txt", "python.txt", "demo.db", "f"] {
            let _ = std::fs::remove_file(host_demo.join(f));
        }
        let _ = std::fs::remove_dir(&host_demo);
        if !host_had_mount {
            let _ = std::fs::remove_dir(host_mount);
        }
        println!(
            "(removed what leaked into the host's {})",
            host_demo.display()
        );
    }
    if keep {
        println!("kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    println!("\n{} step(s) ok, {} failed", steps.passed, steps.failed);
    Ok(if steps.failed == 0 { 0 } else { 1 })
}

fn programs(steps: &mut Steps, demo: &Demo, root: &Path, host_had_demo: bool) {
    let shell = "mkdir -p /storage/demo && echo hello > /storage/demo/hello.txt \
                 && cat /storage/demo/hello.txt && ls -l /storage/demo";
    println!("\n$ virtuos run -- sh -c '{shell}'");
    steps.step("sh: mkdir, echo >, cat, ls in /storage/demo", || {
        demo.run(&["sh", "-c", shell])?.expect("hello")
    });

    if in_path("python3").is_some() {
        let py = "p = '/storage/demo/python.txt'\n\
                  open(p, 'w').write('written by python\\n')\n\
                  print(open(p).read().strip())";
        println!("\n$ virtuos run -- python3 -c ...");
        steps.step("python3: write and read back a file", || {
            demo.run(&["python3", "-c", py])?
                .expect("written by python")
        });
    } else {
        steps.skip("python3", "not installed");
    }

    if in_path("sqlite3").is_some() {
        let sql = "create table if not exists t(x); insert into t values('a sqlite row'); \
                   select x from t;";
        println!("\n$ virtuos run -- sqlite3 /storage/demo/demo.db \"{sql}\"");
        steps.step("sqlite3: create a database", || {
            demo.run(&["sqlite3", "/storage/demo/demo.db", sql])?
                .expect("a sqlite row")
        });
    } else {
        steps.skip("sqlite3", "not installed");
    }

    println!();
    let inside = demo.settings.storage_dir().join("demo/hello.txt");
    steps.step("the file lives in the storage domain's tree", || {
        let text = std::fs::read_to_string(&inside)
            .with_context(|| format!("{} is missing", inside.display()))?;
        if text != "hello\n" {
            bail!("{} holds {text:?}", inside.display());
        }
        Ok(format!("{} = {text:?}", inside.display()))
    });
    let host = Path::new("/storage/demo/hello.txt");
    if host_had_demo {
        steps.skip(
            "host /storage untouched",
            "/storage/demo already existed on the host",
        );
    } else {
        steps.step("the host's /storage does not have it", || {
            if host.exists() {
                bail!(
                    "{} exists on the host: the calls were not forwarded",
                    host.display()
                );
            }
            Ok(format!("{} does not exist on the host", host.display()))
        });
    }

    println!(
        "\n$ dd {} of=/storage/demo/f   (x3, vs. native)",
        DD.join(" ")
    );
    steps.step("dd 8 MB: virtuos vs native (median of 3)", || {
        let native_dir = root.join("native");
        std::fs::create_dir_all(&native_dir)?;
        let native_out = format!("of={}", native_dir.join("f").display());
        let mut ours = Vec::new();
        let mut native = Vec::new();
        for _ in 0..3 {
            let mut argv = vec!["dd"];
            argv.extend(DD);
            argv.push("of=/storage/demo/f");
            let c = demo.run(&argv)?;
            if !c.status.success() {
                bail!("dd under virtuos exited with {}:\n{}", c.status, c.output());
            }
            ours.push(c.elapsed);
            let mut cmd = Command::new("dd");
            cmd.args(DD).arg(&native_out);
            let c = captured(cmd, PROGRAM_TIMEOUT)?;
            if !c.status.success() {
                bail!("native dd exited with {}:\n{}", c.status, c.output());
            }
            native.push(c.elapsed);
        }
        let inside = demo.settings.storage_dir().join("demo/f");
        let size = std::fs::metadata(&inside)
            .with_context(|| format!("{} is missing", inside.display()))?
            .len();
        if size != 4096 * 2000 {
            bail!(
                "{} has {size} bytes, expected {}",
                inside.display(),
                4096 * 2000
            );
        }
        let (o, n) = (median(ours), median(native));
        Ok(format!(
            "virtuos {:.1} ms, native {:.1} ms: ratio {:.2}x (whole dd process incl. start-up)",
            o.as_secs_f64() * 1e3,
            n.as_secs_f64() * 1e3,
            o.as_secs_f64() / n.as_secs_f64().max(1e-9)
        ))
    });
}
