//! The optional config file and the effective settings of one invocation.
//!
//! Precedence, highest first: command-line option, environment variable
//! (`VIRTUOS_DATA_DIR`), config file (`virtuos.toml`), built-in default.

use crate::network::{Forward, Subnet};
use crate::paths::{self, Env, Runtime};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The default storage mount: paths under it go to the storage domain.
pub const DEFAULT_STORAGE_MOUNT: &str = "/storage";

/// How a service domain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Each domain server runs as a host process in its own namespaces.
    #[default]
    Process,
    /// Each domain server (storage and network) runs as PID 1 of its own
    /// QEMU VM.
    Vm,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Vm => "vm",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `virtuos.toml`. Every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Paths under this directory go to the storage domain.
    pub storage_mount: Option<PathBuf>,
    /// Where the domains keep their files (the storage tree is `<data_dir>/storage`).
    pub data_dir: Option<PathBuf>,
    /// `process` or `vm`.
    pub backend: Option<Backend>,
    /// Start the network domain (default true).
    pub network: Option<bool>,
    /// Subnet of the host <-> network domain link (default 169.254.199.0/30).
    pub network_subnet: Option<String>,
    /// TCP port forwards `HOSTPORT:DOMAINPORT` (host 127.0.0.1:HOSTPORT ->
    /// the network domain's DOMAINPORT).
    pub forward: Option<Vec<String>>,
    /// vm backend: the storage disk image (default `<data_dir>/storage.img`).
    pub storage_image: Option<PathBuf>,
    /// A domain whose heartbeat stops for this long counts as hung and is
    /// restarted (default 3000).
    pub hang_timeout_ms: Option<u64>,
    /// Restart a failed domain automatically (default true).
    pub restart: Option<bool>,
}

/// Default of `hang_timeout_ms`.
pub const DEFAULT_HANG_TIMEOUT_MS: u64 = 3000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The source is not repeated here: `{:#}` prints it after the message.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {why}")]
    NotAFile { path: PathBuf, why: String },
    #[error("bad config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("bad storage mount {path:?}: {why}")]
    Mount { path: PathBuf, why: String },
    #[error("bad network setting: {0}")]
    Network(String),
    #[error("bad hang timeout {ms} ms: {why}")]
    HangTimeout { ms: u64, why: String },
}

/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Bounds of `hang_timeout_ms`: below the minimum a busy but healthy
/// domain (its heartbeat every 50-200 ms, a VM's over a serial port) would
/// be killed and restarted over and over.
pub const MIN_HANG_TIMEOUT_MS: u64 = 500;
pub const MAX_HANG_TIMEOUT_MS: u64 = 3_600_000;

impl FileConfig {
    /// Parse config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Load `path`; a missing file is the default configuration. Only a
    /// regular file of at most `MAX_CONFIG_BYTES` is read (`/dev/zero` or
    /// a FIFO would never end).
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let not_a_file = |why: String| ConfigError::NotAFile {
            path: path.to_path_buf(),
            why,
        };
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
            Err(e) => return Err(read_err(e)),
        };
        let md = file.metadata().map_err(read_err)?;
        if !md.is_file() {
            return Err(not_a_file("not a regular file".into()));
        }
        if md.len() > MAX_CONFIG_BYTES {
            return Err(not_a_file(format!(
                "{} bytes (at most {MAX_CONFIG_BYTES})",
                md.len()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(not_a_file(format!("more than {MAX_CONFIG_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| not_a_file("not UTF-8 text".into()))?;
        FileConfig::parse(&text, path)
    }
}

/// Options a command line may give (all optional).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub runtime_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub storage_mount: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// `--no-network`.
    pub no_network: bool,
    pub network_subnet: Option<String>,
    /// `--forward` (replaces the config file's list when given).
    pub forwards: Vec<String>,
    pub storage_image: Option<PathBuf>,
    pub vm_kernel: Option<PathBuf>,
    pub vm_initrd: Option<PathBuf>,
    pub vm_slots: Option<usize>,
    pub hang_timeout_ms: Option<u64>,
    /// `--no-restart`.
    pub no_restart: bool,
}

/// The effective settings of the daemon this invocation talks to or starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub runtime: Runtime,
    pub data_dir: PathBuf,
    pub storage_mount: String,
    /// True when the storage mount came from the command line or config
    /// file, false when it is the default (then a running daemon's wins).
    pub mount_explicit: bool,
    /// True when the data dir was chosen (option, environment, config file).
    pub data_explicit: bool,
    pub backend: Backend,
    /// True when the backend was chosen (option or config file); the
    /// default one yields to a running daemon's.
    pub backend_explicit: bool,
    /// Start the network domain.
    pub network: bool,
    pub network_subnet: Subnet,
    /// True when the subnet was chosen (option or config file); a default
    /// one moves to a free link if another daemon holds it.
    pub subnet_explicit: bool,
    pub forwards: Vec<Forward>,
    /// vm backend: the storage disk image.
    pub storage_image: PathBuf,
    /// vm backend: kernel and initramfs already prepared (by `virtuos up`).
    pub vm_kernel: Option<PathBuf>,
    pub vm_initrd: Option<PathBuf>,
    /// vm backend: region slots of each domain VM.
    pub vm_slots: usize,
    /// A domain without heartbeat for this long is hung (killed, restarted).
    pub hang_timeout: std::time::Duration,
    /// Restart failed domains automatically.
    pub restart: bool,
}

/// The vm backend's default disk image inside the data directory.
pub const STORAGE_IMAGE: &str = "storage.img";
/// The vm backend's default region slots per domain VM: client processes
/// (and forks) one VM serves at once (`--vm-slots`).
pub const DEFAULT_VM_SLOTS: usize = 16;

impl Settings {
    /// Resolve settings from overrides, the environment and the config file.
    pub fn resolve(o: &Overrides, env: &Env) -> Result<Settings, ConfigError> {
        let file = match paths::config_file(env) {
            Some(p) => FileConfig::load(&p)?,
            None => FileConfig::default(),
        };
        Settings::from_parts(o, &file, env)
    }

    /// Resolution without reading any file.
    pub fn from_parts(
        o: &Overrides,
        file: &FileConfig,
        env: &Env,
    ) -> Result<Settings, ConfigError> {
        let runtime = o
            .runtime_dir
            .clone()
            .unwrap_or_else(|| paths::runtime_dir(env));
        let chosen_data = o
            .data_dir
            .clone()
            .or_else(|| paths::env_data_dir(env))
            .or_else(|| file.data_dir.clone());
        let data_explicit = chosen_data.is_some();
        let data_dir = chosen_data.unwrap_or_else(|| paths::default_data_dir(env));
        let mount = o
            .storage_mount
            .clone()
            .or_else(|| file.storage_mount.clone());
        let mount_explicit = mount.is_some();
        let storage_mount =
            normalize_mount(&mount.unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_MOUNT)))?;
        let runtime = absolute(runtime);
        let subnet = o
            .network_subnet
            .as_deref()
            .or(file.network_subnet.as_deref());
        let subnet_explicit = subnet.is_some();
        let network_subnet = match subnet {
            Some(s) => Subnet::parse(s).map_err(ConfigError::Network)?,
            None => crate::network::default_subnet_for(&runtime),
        };
        let forwards = if o.forwards.is_empty() {
            file.forward.clone().unwrap_or_default()
        } else {
            o.forwards.clone()
        };
        let forwards = forwards
            .iter()
            .map(|f| Forward::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Network)?;
        crate::network::check_forwards(&forwards).map_err(ConfigError::Network)?;
        let data_dir = absolute(data_dir);
        let storage_image = o
            .storage_image
            .clone()
            .or_else(|| file.storage_image.clone())
            .map(absolute)
            .unwrap_or_else(|| data_dir.join(STORAGE_IMAGE));
        let hang_ms = o
            .hang_timeout_ms
            .or(file.hang_timeout_ms)
            .unwrap_or(DEFAULT_HANG_TIMEOUT_MS);
        if !(MIN_HANG_TIMEOUT_MS..=MAX_HANG_TIMEOUT_MS).contains(&hang_ms) {
            return Err(ConfigError::HangTimeout {
                ms: hang_ms,
                why: format!(
                    "must be {MIN_HANG_TIMEOUT_MS}..={MAX_HANG_TIMEOUT_MS} ms (a domain \
                     quiet for this long is killed and restarted)"
                ),
            });
        }
        Ok(Settings {
            hang_timeout: std::time::Duration::from_millis(hang_ms),
            restart: !o.no_restart && file.restart.unwrap_or(true),
            storage_image,
            vm_kernel: o.vm_kernel.clone().map(absolute),
            vm_initrd: o.vm_initrd.clone().map(absolute),
            vm_slots: o.vm_slots.unwrap_or(DEFAULT_VM_SLOTS),
            network: !o.no_network && file.network.unwrap_or(true),
            network_subnet,
            forwards,
            subnet_explicit,
            runtime: Runtime::new(runtime),
            data_dir,
            storage_mount,
            mount_explicit,
            data_explicit,
            backend: o.backend.or(file.backend).unwrap_or_default(),
            backend_explicit: o.backend.or(file.backend).is_some(),
        })
    }

    /// The storage domain's tree.
    pub fn storage_dir(&self) -> PathBuf {
        self.data_dir.join(paths::STORAGE_SUBDIR)
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
    }
}

/// System directories a storage mount may neither be, nor lie under, nor
/// contain: the programs under virtuos would lose the host's view of them
/// (their libraries, `/proc/self`, device nodes, configuration, sockets,
/// temporary files).
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/home",
    "/snap",
    "/lost+found",
];

/// Longest storage mount (it travels in the environment and the region).
pub const MAX_MOUNT_LEN: usize = 256;

/// The storage mount rule: an absolute path (`//`, `/./` and a trailing
/// `/` are normalised away; `..` is refused), valid UTF-8 without control
/// characters, at most `MAX_MOUNT_LEN` bytes, that is not `/` and neither
/// is, lies under, nor contains one of `SYSTEM_DIRS`. So `/storage`,
/// `/data/vault` or `/mnt/virtuos` are fine; `/`, `/proc`, `/dev/shm`,
/// `/etc`, `/tmp/x`, `/var/lib/x` and `/home/me/x` are not.
pub fn normalize_mount(p: &Path) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::Mount {
        path: p.to_path_buf(),
        why: why.to_string(),
    };
    if !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    let mut out = String::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => {
                let s = s.to_str().ok_or_else(|| bad("must be valid UTF-8"))?;
                if s.chars().any(char::is_control) {
                    return Err(bad("must not contain control characters"));
                }
                out.push('/');
                out.push_str(s);
            }
            Component::ParentDir => return Err(bad("must not contain `..`")),
            Component::Prefix(_) => return Err(bad("unsupported path")),
        }
    }
    if out.is_empty() {
        return Err(bad("cannot be `/` (everything would go to the domain)"));
    }
    if out.len() > MAX_MOUNT_LEN {
        return Err(bad(&format!("longer than {MAX_MOUNT_LEN} bytes")));
    }
    let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    if let Some(sys) = SYSTEM_DIRS
        .iter()
        .find(|d| under(&out, d) || under(d, &out))
    {
        return Err(bad(&format!(
            "{sys} is a system directory: the storage mount may not be, lie under or \
             contain one (choose e.g. /storage or /mnt/NAME)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
            root: true,
        }
    }

    #[test]
    fn defaults_without_anything() {
        let s =
            Settings::from_parts(&Overrides::default(), &FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(s.runtime.dir, PathBuf::from("/run/virtuos"));
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/virtuos"));
        assert_eq!(s.storage_dir(), PathBuf::from("/var/lib/virtuos/storage"));
        assert_eq!(s.storage_mount, "/storage");
        assert!(!s.mount_explicit);
        assert!(!s.data_explicit);
        assert_eq!(s.backend, Backend::Process);
        assert_eq!(
            s.storage_image,
            PathBuf::from("/var/lib/virtuos/storage.img")
        );
    }

    #[test]
    fn storage_image_option_and_file() {
        let file = FileConfig::parse("storage_image = \"/img/f.img\"\n", Path::new("t")).unwrap();
        let s = Settings::from_parts(&Overrides::default(), &file, &env(&[])).unwrap();
        assert_eq!(s.storage_image, PathBuf::from("/img/f.img"));
        let o = Overrides {
            storage_image: Some("/cli.img".into()),
            ..Default::default()
        };
        let s = Settings::from_parts(&o, &file, &env(&[])).unwrap();
        assert_eq!(s.storage_image, PathBuf::from("/cli.img"));
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let file = FileConfig::parse(
            "storage_mount = \"/mnt/fs\"\ndata_dir = \"/file\"\nbackend = \"vm\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let e = env(&[("VIRTUOS_DATA_DIR", "/envdata")]);
        let s = Settings::from_parts(&Overrides::default(), &file, &e).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/envdata"));
        assert_eq!(s.storage_mount, "/mnt/fs");
        assert!(s.mount_explicit);
        assert_eq!(s.backend, Backend::Vm);
        let o = Overrides {
            data_dir: Some("/cli".into()),
            storage_mount: Some("/cli/mount/".into()),
            backend: Some(Backend::Process),
            runtime_dir: Some("/rt".into()),
            ..Default::default()
        };
        let s = Settings::from_parts(&o, &file, &e).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/cli"));
        assert_eq!(s.storage_mount, "/cli/mount");
        assert_eq!(s.backend, Backend::Process);
        assert_eq!(s.runtime.dir, PathBuf::from("/rt"));
        let s = Settings::from_parts(&Overrides::default(), &file, &env(&[])).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/file"));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let e = FileConfig::parse("storage_mount = 3", Path::new("/etc/v.toml")).unwrap_err();
        assert!(e.to_string().contains("/etc/v.toml"), "{e}");
        let e = FileConfig::parse("colour = \"red\"", Path::new("v.toml")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = FileConfig::parse("backend = \"xen\"", Path::new("v.toml")).unwrap_err();
        assert!(e.to_string().contains("xen"), "{e}");
    }

    #[test]
    fn missing_config_file_is_default_and_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("virtuos.toml");
        assert_eq!(FileConfig::load(&p).unwrap(), FileConfig::default());
        std::fs::write(&p, "storage_mount = \"/data\"\n").unwrap();
        let e = env(&[("VIRTUOS_CONFIG", p.to_str().unwrap())]);
        let s = Settings::resolve(&Overrides::default(), &e).unwrap();
        assert_eq!(s.storage_mount, "/data");
        std::fs::write(&p, "[[[").unwrap();
        assert!(Settings::resolve(&Overrides::default(), &e).is_err());
    }

    #[test]
    fn network_settings() {
        let s =
            Settings::from_parts(&Overrides::default(), &FileConfig::default(), &env(&[])).unwrap();
        assert!(s.network);
        assert_eq!(s.network_subnet.to_string(), "169.254.199.0/30");
        assert!(!s.subnet_explicit);
        assert!(s.forwards.is_empty());
        let file = FileConfig::parse(
            "network = false\nnetwork_subnet = \"10.9.0.0/30\"\nforward = [\"8080:80\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let s = Settings::from_parts(&Overrides::default(), &file, &env(&[])).unwrap();
        assert!(!s.network);
        assert_eq!(s.network_subnet.to_string(), "10.9.0.0/30");
        assert_eq!(s.forwards[0].to_string(), "8080:80");
        let o = Overrides {
            forwards: vec!["1:2".into(), "3:4".into()],
            network_subnet: Some("10.1.0.4/30".into()),
            ..Default::default()
        };
        let s = Settings::from_parts(&o, &file, &env(&[])).unwrap();
        assert_eq!(s.forwards.len(), 2);
        assert_eq!(s.network_subnet.to_string(), "10.1.0.4/30");
        let o = Overrides {
            no_network: true,
            ..Default::default()
        };
        let s = Settings::from_parts(&o, &FileConfig::default(), &env(&[])).unwrap();
        assert!(!s.network);
        let bad = Overrides {
            forwards: vec!["80".into()],
            ..Default::default()
        };
        assert!(Settings::from_parts(&bad, &FileConfig::default(), &env(&[])).is_err());
        let bad = FileConfig::parse("network_subnet = \"1.2.3.5/30\"", Path::new("t")).unwrap();
        assert!(Settings::from_parts(&Overrides::default(), &bad, &env(&[])).is_err());
    }

    #[test]
    fn storage_mount_validation() {
        assert_eq!(normalize_mount(Path::new("/a//b/./c/")).unwrap(), "/a/b/c");
        for ok in [
            "/storage",
            "/mnt/virtuos",
            "/data/vault",
            "/srv/x",
            "/opt/v",
            "/varnish",
        ] {
            assert_eq!(normalize_mount(Path::new(ok)).unwrap(), ok);
        }
        for bad in [
            "rel",
            "/",
            "//",
            "/a/../b",
            "/proc",
            "/proc/self",
            "/dev",
            "/dev/shm",
            "/etc",
            "/tmp",
            "/tmp/x",
            "/var",
            "/var/lib/x",
            "/usr/local",
            "/run",
            "/sys",
            "/home",
            "/home/me/x",
            "/root",
            "/a\nb",
        ] {
            let e = normalize_mount(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("storage mount"), "{bad}: {e}");
        }
        let long = format!("/{}", "x".repeat(300));
        assert!(normalize_mount(Path::new(&long)).is_err());
    }

    #[test]
    fn hang_timeout_bounds() {
        let with = |ms| Overrides {
            hang_timeout_ms: Some(ms),
            ..Default::default()
        };
        let e = env(&[]);
        for bad in [0, 1, 499, 3_600_001] {
            let err = Settings::from_parts(&with(bad), &FileConfig::default(), &e).unwrap_err();
            assert!(err.to_string().contains("hang timeout"), "{err}");
        }
        let s = Settings::from_parts(&with(500), &FileConfig::default(), &e).unwrap();
        assert_eq!(s.hang_timeout.as_millis(), 500);
    }

    #[test]
    fn config_file_must_be_a_small_regular_file() {
        let e = FileConfig::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = FileConfig::load(Path::new("/proc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let e = FileConfig::load(&big).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = FileConfig::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
