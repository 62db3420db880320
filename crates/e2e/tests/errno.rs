//! Errors and numbers a program could tell forwarding by: EFAULT for bad
//! pointers (never SIGSEGV), ENAMETOOLONG exactly at the kernel's limits,
//! fcntl locks (read-only lock descriptions, the holder's pid), and
//! descriptor numbering (lowest free number, EMFILE at RLIMIT_NOFILE),
//! ETXTBSY for programs stored in the domain.
//! Each is a small C program (`errno_progs/`) run natively and under
//! virtuos; the expectation is the native run.

use std::path::{Path, PathBuf};
use std::process::Command;
use virtuos_e2e::Case;

/// Compile `errno_progs/<name>.c` into `dir`; the program's path.
fn build(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/errno_progs")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let r = Command::new("cc")
        .args(["-O1", "-Wall", "-Wno-stringop-overflow", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("cannot run cc");
    assert!(
        r.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

fn case(name: &str, script: impl Fn(&str) -> String) {
    virtuos_e2e::require_programs(&["cc"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = build(name, dir.path());
    Case::new(&script(prog.to_str().expect("utf-8 path")))
        .no_tree()
        .check();
}

#[test]
fn bad_pointers_are_efault_not_sigsegv() {
    // Paths, data buffers, iovecs, stat buffers, fcntl and signal calls;
    // partly readable buffers transfer what the kernel would; the
    // program's own faults still reach its handler, or kill it.
    case("efault", |p| {
        format!(
            r#"
            mkdir "$ROOT/e"
            "{p}" "$ROOT/e" || echo "exit status $?"
            "#
        )
    });
}

#[test]
fn bad_pointers_on_sockets_are_efault() {
    case("netfault", |p| format!(r#""{p}""#));
}

#[test]
fn name_and_path_length_limits_are_the_kernels() {
    // A relative name of 4077 bytes (components of 255) in a working
    // directory whose length brings the total past PATH_MAX must work;
    // 256-byte components and 4096-byte paths are ENAMETOOLONG.
    case("names", |p| {
        format!(
            r#"
            mkdir "$ROOT/n"
            "{p}" "$ROOT/n"
            "#
        )
    });
}

#[test]
fn fcntl_locks_as_natively() {
    // F_SETLK with a read-only lock description, F_GETLK naming the
    // holding process (a client, not its shadow), OFD locks, F_SETSIG.
    case("fcntl", |p| {
        format!(
            r#"
            mkdir "$ROOT/l"
            "{p}" "$ROOT/l"
            "#
        )
    });
}

#[test]
fn descriptor_numbers_as_natively() {
    // The first forwarded open gets the lowest free number (3), closed
    // numbers are reused, and EMFILE comes exactly at RLIMIT_NOFILE for
    // forwarded and host descriptors alike.
    case("fdnum", |p| {
        format!(
            r#"
            mkdir "$ROOT/d"
            "{p}" "$ROOT/d" 64
            "{p}" "$ROOT/d" 300
            "#
        )
    });
}

#[test]
fn descriptor_paths_cross_names_and_epoll_as_natively() {
    // `/proc/self/fd/N/name` through a directory descriptor; linkat and
    // renameat with bad descriptors or a missing source are EBADF,
    // ENOTDIR, ENOENT (not EXDEV); epoll_ctl of an O_PATH descriptor is
    // EBADF; sendfile checks its host descriptors.
    case("misc", |p| {
        format!(
            r#"
            mkdir "$ROOT/m" "$TMP/h"
            "{p}" "$ROOT/m" "$TMP/h"
            "#
        )
    });
}

#[test]
fn tmpfile_then_link_as_natively() {
    // O_TMPFILE, then linkat of /proc/self/fd/N (AT_SYMLINK_FOLLOW) or
    // of the descriptor itself (AT_EMPTY_PATH) gives the file its name
    // (not EXDEV); O_EXCL, unlinked files and directories fail as the
    // kernel says; a non-root caller links through /proc but not with
    // AT_EMPTY_PATH.
    case("linkfd", |p| {
        format!(
            r#"
            mkdir "$ROOT/l"
            "{p}" "$ROOT/l" nobody
            "#
        )
    });
}

#[test]
fn socket_options_and_interface_ioctls_as_natively() {
    // The options servers set on network-domain sockets pass the domain's
    // allow-list; interface ioctls that work on any socket (SIOCGIF*,
    // SIOCSIFMTU: EPERM without CAP_NET_ADMIN) are answered, not ENOTTY.
    case("netopts", |p| format!(r#""{p}""#));
}

#[test]
fn fdinfo_agrees_with_statx_as_natively() {
    // /proc/self/fdinfo/N shows the position, the open flags, and the
    // mount id and inode that statx reports for the same descriptor.
    case("fdinfo", |p| {
        format!(
            r#"
            echo hello > "$ROOT/fi"
            "{p}" "$ROOT/fi"
            "#
        )
    });
}

#[test]
fn etxtbsy_for_stored_programs_as_natively() {
    // A program stored in the domain that runs (from the host's copy of
    // it) cannot be opened for writing, with O_TRUNC, or truncated, under
    // any of its names, while any process — also a forked child whose
    // parent is gone — runs it; once all are gone it can. A file open for
    // writing (by another process) cannot be executed. A running #!
    // script can be written, but not executed while open for writing.
    case("etxtbsy", |p| {
        format!(
            r#"
            mkdir "$ROOT/x"
            "{p}" "$ROOT/x"
            "#
        )
    });
}
