//! Reading `VIRTUOS_TRACE=1` output: syscall and errno names, and the
//! excerpt that explains a failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// x86_64 syscall names, for annotating `VIRTUOS_TRACE=1` lines.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        4 => "stat",
        5 => "fstat",
        6 => "lstat",
        7 => "poll",
        8 => "lseek",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        12 => "brk",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        21 => "access",
        22 => "pipe",
        32 => "dup",
        33 => "dup2",
        39 => "getpid",
        41 => "socket",
        42 => "connect",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        51 => "getsockname",
        52 => "getpeername",
        109 => "setpgid",
        111 => "getpgrp",
        112 => "setsid",
        157 => "prctl",
        158 => "arch_prctl",
        202 => "futex",
        218 => "set_tid_address",
        228 => "clock_gettime",
        230 => "clock_nanosleep",
        273 => "set_robust_list",
        40 => "sendfile",
        56 => "clone",
        57 => "fork",
        58 => "vfork",
        59 => "execve",
        60 => "exit",
        61 => "wait4",
        62 => "kill",
        63 => "uname",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        76 => "truncate",
        77 => "ftruncate",
        78 => "getdents",
        79 => "getcwd",
        80 => "chdir",
        81 => "fchdir",
        82 => "rename",
        83 => "mkdir",
        84 => "rmdir",
        85 => "creat",
        86 => "link",
        87 => "unlink",
        88 => "symlink",
        89 => "readlink",
        90 => "chmod",
        91 => "fchmod",
        92 => "chown",
        93 => "fchown",
        94 => "lchown",
        95 => "umask",
        102 => "getuid",
        104 => "getgid",
        107 => "geteuid",
        108 => "getegid",
        110 => "getppid",
        132 => "utime",
        133 => "mknod",
        137 => "statfs",
        138 => "fstatfs",
        161 => "chroot",
        162 => "sync",
        187 => "readahead",
        188 => "setxattr",
        191 => "getxattr",
        192 => "lgetxattr",
        193 => "fgetxattr",
        194 => "listxattr",
        195 => "llistxattr",
        196 => "flistxattr",
        217 => "getdents64",
        221 => "fadvise64",
        231 => "exit_group",
        235 => "utimes",
        257 => "openat",
        258 => "mkdirat",
        259 => "mknodat",
        260 => "fchownat",
        261 => "futimesat",
        262 => "newfstatat",
        263 => "unlinkat",
        264 => "renameat",
        265 => "linkat",
        266 => "symlinkat",
        267 => "readlinkat",
        268 => "fchmodat",
        269 => "faccessat",
        275 => "splice",
        276 => "tee",
        277 => "sync_file_range",
        280 => "utimensat",
        285 => "fallocate",
        292 => "dup3",
        293 => "pipe2",
        295 => "preadv",
        296 => "pwritev",
        302 => "prlimit64",
        316 => "renameat2",
        318 => "getrandom",
        319 => "memfd_create",
        322 => "execveat",
        326 => "copy_file_range",
        327 => "preadv2",
        328 => "pwritev2",
        332 => "statx",
        334 => "rseq",
        435 => "clone3",
        436 => "close_range",
        437 => "openat2",
        439 => "faccessat2",
        452 => "fchmodat2",
        n if n >= 0x8000 => "virtual-op",
        _ => return None,
    })
}

/// Annotate `nr=N` with the syscall name and `r=-E` with the errno name.
fn annotate_trace_line(line: &str) -> String {
    let mut out = Vec::new();
    for w in line.split(' ') {
        if let Some(n) = w.strip_prefix("nr=").and_then(|n| n.parse::<u64>().ok()) {
            out.push(match syscall_name(n) {
                Some(name) => format!("{name}({n})"),
                None => w.to_string(),
            });
        } else if let Some(e) = w.strip_prefix("r=-").and_then(|n| n.parse::<i32>().ok()) {
            out.push(format!("r=-{e}({})", errno_name(e)));
        } else {
            out.push(w.to_string());
        }
    }
    out.join(" ")
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::ENXIO => "ENXIO",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EROFS => "EROFS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::ESPIPE => "ESPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno{e}"),
    };
    name.to_string()
}

/// The part of a `VIRTUOS_TRACE=1` stderr that explains a failure: the trace
/// lines just before the first failing command (the ERR trap's message), and
/// a count of the failed calls by syscall and error.
pub fn trace_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let stop = lines
        .iter()
        .position(|l| l.contains("e2e: script line"))
        .map_or(lines.len(), |i| i + 1);
    let mut s = String::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        if l.contains("virtuos: trace") && l.contains(" r=-") {
            let a = annotate_trace_line(l);
            let key = a
                .split(' ')
                .filter(|w| !w.starts_with("pid=") && !w.starts_with("tid="))
                .collect::<Vec<_>>()
                .join(" ");
            *failed.entry(key).or_default() += 1;
        }
    }
    let _ = writeln!(s, "-- failed calls (count, call) --");
    for (k, n) in &failed {
        let _ = writeln!(s, "{n:6} {}", k.trim_start_matches("virtuos: trace "));
    }
    let start = stop.saturating_sub(60);
    let _ = writeln!(
        s,
        "-- last {} stderr lines up to the first failing command --",
        stop - start
    );
    for l in &lines[start..stop] {
        let _ = writeln!(s, "{}", annotate_trace_line(l));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_excerpt_names_calls_and_errors() {
        let stderr = "virtuos: trace pid=1 tid=1 nr=257 wrapper r=-2\nsh: cannot create\n\
                      e2e: script line 3 failed (exit 2): echo x > f\nvirtuos: trace pid=1 tid=1 nr=3 wrapper r=0\n";
        let t = trace_excerpt(stderr);
        assert!(t.contains("1 openat(257) wrapper r=-2(ENOENT)"), "{t}");
        assert!(t.contains("e2e: script line 3"), "{t}");
        assert!(
            !t.contains("close(3)"),
            "lines after the failing command are cut: {t}"
        );
    }
}
