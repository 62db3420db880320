//! Process-wide configuration, read once from the environment by
//! `init_process` (the environment may change later; we never re-read it).

use std::sync::OnceLock;

/// A string in a fixed buffer (no allocation to read it).
#[derive(Clone, Copy)]
pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedStr<N> {
    pub const fn empty() -> Self {
        FixedStr {
            buf: [0; N],
            len: 0,
        }
    }

    /// None if `s` (plus a NUL) does not fit.
    pub fn new(s: &[u8]) -> Option<Self> {
        if s.len() >= N || s.contains(&0) {
            return None;
        }
        let mut f = Self::empty();
        f.buf[..s.len()].copy_from_slice(s);
        f.len = s.len();
        Some(f)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// With the terminating NUL.
    pub fn as_cbytes(&self) -> &[u8] {
        &self.buf[..self.len + 1]
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

pub const DEFAULT_MOUNT: &str = "/storage";
pub const DEFAULT_SPIN: u32 = 2000;

#[derive(Clone, Copy)]
pub struct Config {
    /// Normalised absolute storage mount path, never "/".
    pub mount: FixedStr<256>,
    /// `<runtime dir>/virtuosd.sock`.
    pub socket: FixedStr<512>,
    /// Spin polls before sleeping (`$VIRTUOS_SPIN`).
    pub spin: u32,
    /// Re-open storage files after a restart of the storage domain
    /// (`$VIRTUOS_REOPEN`, default on; `0`/`off`/`no`/`false` turn it off).
    pub reopen: bool,
}

impl Config {
    pub fn defaults() -> Config {
        Config {
            mount: FixedStr::new(DEFAULT_MOUNT.as_bytes()).unwrap_or(FixedStr::empty()),
            socket: FixedStr::new(b"/run/virtuos/virtuosd.sock").unwrap_or(FixedStr::empty()),
            spin: DEFAULT_SPIN,
            reopen: true,
        }
    }

    /// Build from the environment (allocates). `mount_override` is the
    /// mount carried by an exec-state record, which wins over the env.
    pub fn from_env(mount_override: Option<&[u8]>) -> Config {
        let mut c = Config::defaults();
        let env_mount = std::env::var_os("VIRTUOS_STORAGE_MOUNT");
        let mount = match mount_override {
            Some(m) => Some(m.to_vec()),
            None => {
                env_mount.map(|m| std::os::unix::ffi::OsStrExt::as_bytes(m.as_os_str()).to_vec())
            }
        };
        if let Some(m) = mount {
            match normalized_mount(&m) {
                Some(f) => c.mount = f,
                None => super::log::emit(format_args!(
                    "ignoring invalid storage mount {:?} (must be an absolute path other than /); using {}",
                    String::from_utf8_lossy(&m),
                    DEFAULT_MOUNT
                )),
            }
        }
        let runtime = runtime_dir();
        let sock = format!("{}/virtuosd.sock", runtime.display());
        if let Some(f) = FixedStr::new(sock.as_bytes()) {
            c.socket = f;
        }
        if let Some(spin) = std::env::var("VIRTUOS_SPIN")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            c.spin = spin;
        }
        if let Some(v) = std::env::var_os("VIRTUOS_REOPEN") {
            c.reopen = !matches!(
                v.to_str().map(|s| s.trim().to_ascii_lowercase()).as_deref(),
                Some("0" | "off" | "no" | "false")
            );
        }
        c
    }
}

/// The runtime directory, as the daemon computes it.
pub fn runtime_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("VIRTUOS_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if rustix::process::geteuid().is_root() {
        return "/run/virtuos".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("virtuos"),
        None => format!("/run/user/{}/virtuos", rustix::process::geteuid().as_raw()).into(),
    }
}

/// Validate and normalise a mount path.
pub fn normalized_mount(m: &[u8]) -> Option<FixedStr<256>> {
    if m.first() != Some(&b'/') || m.len() >= 256 || m.contains(&0) {
        return None;
    }
    let mut buf = [0u8; 256];
    buf[..m.len()].copy_from_slice(m);
    let n = super::path::normalize_in_place(&mut buf, m.len());
    if n <= 1 {
        return None;
    }
    FixedStr::new(&buf[..n])
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn config() -> &'static Config {
    CONFIG.get_or_init(Config::defaults)
}

/// Install the configuration; false if one was already in use.
pub fn set_config(c: Config) -> bool {
    CONFIG.set(c).is_ok()
}

pub fn mount() -> &'static [u8] {
    config().mount.as_bytes()
}
