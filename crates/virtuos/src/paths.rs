//! Where virtuos keeps its files: runtime dir (socket, pid file, log), data
//! dir (the storage domain's tree) and the optional config file.
//!
//! Resolution is a pure function of an [`Env`] snapshot so it can be tested
//! without touching the process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variables that the daemon and the CLI read.
pub mod vars {
    /// Overrides the runtime directory (socket, pid file, log).
    pub const RUNTIME_DIR: &str = "VIRTUOS_RUNTIME_DIR";
    /// Overrides the data directory (the storage domain keeps `storage/` in it).
    pub const DATA_DIR: &str = "VIRTUOS_DATA_DIR";
    /// Overrides the config file path.
    pub const CONFIG: &str = "VIRTUOS_CONFIG";
    /// Overrides the domain server binary.
    pub const DOMAIN_BIN: &str = "VIRTUOS_DOMAIN_BIN";
    /// Overrides the preload library.
    pub const PRELOAD: &str = "VIRTUOS_PRELOAD";
    /// Set for programs run under virtuos: the storage mount path.
    pub const STORAGE_MOUNT: &str = "VIRTUOS_STORAGE_MOUNT";
    /// Log filter of the daemon (tracing-subscriber `EnvFilter` syntax).
    pub const LOG: &str = "VIRTUOS_LOG";
}

/// File names inside the runtime directory.
pub const SOCKET_NAME: &str = "virtuosd.sock";
pub const PID_NAME: &str = "virtuosd.pid";
pub const LOG_NAME: &str = "virtuosd.log";
/// What the running daemon serves (storage mount, data dir, backend), JSON.
pub const INFO_NAME: &str = "virtuosd.json";
/// The storage domain's tree inside the data directory.
pub const STORAGE_SUBDIR: &str = "storage";
/// Name of the preload library next to the `virtuos` binary.
pub const PRELOAD_NAME: &str = "libvirtuos.so";
/// Name of the domain server binary next to the `virtuos` binary.
pub const DOMAIN_NAME: &str = "virtuos-domain";

/// A snapshot of what path resolution depends on.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub vars: BTreeMap<String, OsString>,
    pub root: bool,
}

impl Env {
    /// The current process's environment and effective uid.
    pub fn current() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
            root: rustix::process::geteuid().is_root(),
        }
    }

    /// A non-empty variable.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        self.vars
            .get(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME")
    }
}

/// `$VIRTUOS_RUNTIME_DIR`, else `/run/virtuos` as root, else
/// `$XDG_RUNTIME_DIR/virtuos`, else `/tmp/virtuos-<uid>`.
pub fn runtime_dir(env: &Env) -> PathBuf {
    if let Some(p) = env.get(vars::RUNTIME_DIR) {
        return p;
    }
    if env.root {
        return PathBuf::from("/run/virtuos");
    }
    if let Some(p) = env.get("XDG_RUNTIME_DIR") {
        return p.join("virtuos");
    }
    PathBuf::from(format!(
        "/tmp/virtuos-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// The default data directory: `$VIRTUOS_DATA_DIR`, else `/var/lib/virtuos`
/// as root, else `$XDG_DATA_HOME/virtuos`, else `~/.local/share/virtuos`.
/// (The config file's `data_dir` and `--data-dir` take precedence; see
/// `config::Settings`.)
pub fn env_data_dir(env: &Env) -> Option<PathBuf> {
    env.get(vars::DATA_DIR)
}

pub fn default_data_dir(env: &Env) -> PathBuf {
    if env.root {
        return PathBuf::from("/var/lib/virtuos");
    }
    if let Some(p) = env.get("XDG_DATA_HOME") {
        return p.join("virtuos");
    }
    match env.home() {
        Some(h) => h.join(".local/share/virtuos"),
        None => PathBuf::from("/var/tmp/virtuos"),
    }
}

/// `$VIRTUOS_CONFIG`, else `/etc/virtuos/virtuos.toml` as root, else
/// `$XDG_CONFIG_HOME/virtuos/virtuos.toml` or `~/.config/virtuos/virtuos.toml`.
pub fn config_file(env: &Env) -> Option<PathBuf> {
    if let Some(p) = env.get(vars::CONFIG) {
        return Some(p);
    }
    if env.root {
        return Some(PathBuf::from("/etc/virtuos/virtuos.toml"));
    }
    if let Some(p) = env.get("XDG_CONFIG_HOME") {
        return Some(p.join("virtuos/virtuos.toml"));
    }
    env.home().map(|h| h.join(".config/virtuos/virtuos.toml"))
}

/// The files of one runtime directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    pub dir: PathBuf,
}

impl Runtime {
    pub fn new(dir: impl Into<PathBuf>) -> Runtime {
        Runtime { dir: dir.into() }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_NAME)
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(PID_NAME)
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_NAME)
    }
    pub fn info_file(&self) -> PathBuf {
        self.dir.join(INFO_NAME)
    }
}

/// How a runtime directory is about to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirUse {
    /// Talk to a daemon in it (status, run, down): a missing directory is
    /// fine (nothing runs), an existing one must be the caller's or root's.
    Connect,
    /// Create files in it (the daemon, `up`): created if missing (mode
    /// 0755: clients of a root daemon must reach its socket), and must be
    /// the caller's.
    Own,
}

/// Check (and for `DirUse::Own` create) a runtime directory, so that no
/// other local user can plant files or symbolic links where the daemon
/// creates its socket, pid file and log, nor pose as the daemon:
///
/// - the directory itself is a real directory (not a symbolic link),
///   owned by the caller's effective uid (`Connect`: or by root), and not
///   writable by group or others;
/// - every directory above it is owned by root or the caller and not
///   writable by group or others unless sticky (`/tmp`), and a symbolic
///   link on the way is owned by root or the caller (its target is checked
///   the same way).
///
/// A `/tmp/virtuos-<uid>` that another user made first is refused this way.
pub fn check_runtime_dir(dir: &Path, how: DirUse) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let euid = rustix::process::geteuid().as_raw();
    let shown = dir.display();
    if !dir.is_absolute() {
        return Err(format!("runtime directory {shown} is not an absolute path"));
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if how == DirUse::Own {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create runtime directory {shown}: {e}")),
        }
    }
    check_ancestors(parent, euid)?;
    let md = match std::fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && how == DirUse::Connect => {
            return Ok(())
        }
        Err(e) => return Err(format!("cannot inspect runtime directory {shown}: {e}")),
    };
    if md.file_type().is_symlink() {
        return Err(format!(
            "runtime directory {shown} is a symbolic link; refusing to use it"
        ));
    }
    if !md.is_dir() {
        return Err(format!("runtime directory {shown} is not a directory"));
    }
    let owner_ok = md.uid() == euid || (how == DirUse::Connect && md.uid() == 0);
    if !owner_ok {
        return Err(format!(
            "runtime directory {shown} belongs to uid {}, not to you (uid {euid}); \
             remove it or choose another with {}",
            md.uid(),
            vars::RUNTIME_DIR
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "runtime directory {shown} is writable by group or others (mode {:o}); \
             fix it with `chmod go-w {shown}`",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Every directory on the way to `dir` (and `dir`): owned by root or
/// `euid`, not writable by others unless sticky; symbolic links owned by
/// root or `euid`, their targets checked too.
fn check_ancestors(dir: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut at = PathBuf::from("/");
    for c in dir.components().skip(1) {
        at.push(c);
        let md = std::fs::symlink_metadata(&at)
            .map_err(|e| format!("cannot inspect {}: {e}", at.display()))?;
        if md.uid() != 0 && md.uid() != euid {
            return Err(format!(
                "{} (on the way to the runtime directory) belongs to uid {}; refusing \
                 a runtime directory another user controls",
                at.display(),
                md.uid()
            ));
        }
        if md.file_type().is_symlink() {
            let real = std::fs::canonicalize(&at)
                .map_err(|e| format!("cannot resolve {}: {e}", at.display()))?;
            check_ancestors(&real, euid)?;
            at = real;
            continue;
        }
        let sticky = md.mode() & 0o1000 != 0;
        if md.mode() & 0o022 != 0 && !sticky {
            return Err(format!(
                "{} (on the way to the runtime directory) is writable by group or others",
                at.display()
            ));
        }
    }
    Ok(())
}

/// The directory of the running `virtuos` binary (where `cargo build` puts
/// `virtuos-domain` and `libvirtuos.so` too).
pub fn exe_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.parent().map(Path::to_path_buf)
}

/// `$VIRTUOS_DOMAIN_BIN`, else `virtuos-domain` next to this binary.
pub fn domain_bin(env: &Env) -> Option<PathBuf> {
    env.get(vars::DOMAIN_BIN)
        .or_else(|| exe_dir().map(|d| d.join(DOMAIN_NAME)))
}

/// `$VIRTUOS_PRELOAD`, else `libvirtuos.so` next to this binary.
pub fn preload_lib(env: &Env) -> Option<PathBuf> {
    env.get(vars::PRELOAD)
        .or_else(|| exe_dir().map(|d| d.join(PRELOAD_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(root: bool, vars: &[(&str, &str)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect(),
            root,
        }
    }

    #[test]
    fn runtime_dir_precedence() {
        let e = env(
            true,
            &[("VIRTUOS_RUNTIME_DIR", "/x"), ("XDG_RUNTIME_DIR", "/r")],
        );
        assert_eq!(runtime_dir(&e), PathBuf::from("/x"));
        let e = env(true, &[("XDG_RUNTIME_DIR", "/r")]);
        assert_eq!(runtime_dir(&e), PathBuf::from("/run/virtuos"));
        let e = env(false, &[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(runtime_dir(&e), PathBuf::from("/run/user/1000/virtuos"));
        let e = env(false, &[("VIRTUOS_RUNTIME_DIR", "")]);
        assert!(runtime_dir(&e).starts_with("/tmp"), "empty var is unset");
    }

    #[test]
    fn data_dir_defaults() {
        assert_eq!(
            default_data_dir(&env(true, &[("HOME", "/root")])),
            PathBuf::from("/var/lib/virtuos")
        );
        assert_eq!(
            default_data_dir(&env(false, &[("XDG_DATA_HOME", "/d"), ("HOME", "/h")])),
            PathBuf::from("/d/virtuos")
        );
        assert_eq!(
            default_data_dir(&env(false, &[("HOME", "/h")])),
            PathBuf::from("/h/.local/share/virtuos")
        );
        assert_eq!(
            env_data_dir(&env(false, &[("VIRTUOS_DATA_DIR", "/v")])),
            Some(PathBuf::from("/v"))
        );
    }

    #[test]
    fn config_file_resolution() {
        assert_eq!(
            config_file(&env(true, &[("HOME", "/root")])),
            Some(PathBuf::from("/etc/virtuos/virtuos.toml"))
        );
        assert_eq!(
            config_file(&env(true, &[("VIRTUOS_CONFIG", "/c.toml")])),
            Some(PathBuf::from("/c.toml"))
        );
        assert_eq!(
            config_file(&env(false, &[("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/virtuos/virtuos.toml"))
        );
        assert_eq!(config_file(&env(false, &[])), None);
    }

    #[test]
    fn runtime_dir_checks() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let rt = base.join("rt");
        // Missing: fine to connect (nothing runs), created to own.
        assert!(check_runtime_dir(&rt, DirUse::Connect).is_ok());
        check_runtime_dir(&rt, DirUse::Own).unwrap();
        let mode = std::fs::metadata(&rt).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0);
        assert!(check_runtime_dir(&rt, DirUse::Connect).is_ok());
        // World-writable: refused.
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_runtime_dir(&rt, DirUse::Own).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symbolic link: refused.
        let link = base.join("link");
        std::os::unix::fs::symlink(&rt, &link).unwrap();
        let e = check_runtime_dir(&link, DirUse::Own).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        // Not a directory; not absolute.
        let file = base.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(check_runtime_dir(&file, DirUse::Connect).is_err());
        assert!(check_runtime_dir(Path::new("rel/dir"), DirUse::Connect).is_err());
        // A directory above that others may write, not sticky.
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_runtime_dir(&open.join("rt"), DirUse::Own).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        // Sticky (like /tmp) is fine.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_runtime_dir(&open.join("rt"), DirUse::Own).unwrap();
    }

    #[test]
    fn runtime_files() {
        let r = Runtime::new("/run/virtuos");
        assert_eq!(r.socket(), PathBuf::from("/run/virtuos/virtuosd.sock"));
        assert_eq!(r.pid_file(), PathBuf::from("/run/virtuos/virtuosd.pid"));
        assert_eq!(r.log_file(), PathBuf::from("/run/virtuos/virtuosd.log"));
    }
}
