//! The names of this process's descriptor links (`/proc/self/fd/N`,
//! `/proc/<our pid>/fd/N`, `/proc/thread-self/fd/N`, `/dev/fd/N`,
//! `/dev/std*`) and the domain's path of a forwarded one (`OP_FD_PATH`):
//! what `route` follows through such a link and `procfs` answers for it.

use super::caller::Call;
use super::domain;
use super::host;
use super::path::PATH_MAX;
use virtuos_abi::ops::OP_FD_PATH;

const EIO: i64 = -(libc::EIO as i64);

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        v = v * 10 + (b - b'0') as u64;
    }
    u32::try_from(v).ok()
}

/// The descriptor number a /proc or /dev/fd link path names, if it is
/// about this process.
pub fn fd_of_path(p: &[u8]) -> Option<u32> {
    match split_fd_path(p) {
        Some((fd, [])) => Some(fd),
        _ => None,
    }
}

/// A path through a descriptor's link: the number and what follows it
/// (empty, or starting with `/`: `/proc/self/fd/N/name` names `name` in
/// the directory N).
pub fn split_fd_path(p: &[u8]) -> Option<(u32, &[u8])> {
    if !p.starts_with(b"/proc/") && !p.starts_with(b"/dev/") {
        return None;
    }
    if let Some(fd) = fd_of_whole(p) {
        return Some((fd, &[]));
    }
    // The shortest prefix that is a link: components after it are inside.
    p.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i > 0)
        .find_map(|(i, _)| fd_of_whole(&p[..i]).map(|fd| (fd, &p[i..])))
}

fn fd_of_whole(p: &[u8]) -> Option<u32> {
    match p {
        b"/dev/stdin" => return Some(0),
        b"/dev/stdout" => return Some(1),
        b"/dev/stderr" => return Some(2),
        _ => {}
    }
    if let Some(rest) = p.strip_prefix(b"/dev/fd/") {
        return parse_u32(rest);
    }
    let rest = p.strip_prefix(b"/proc/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (who, tail) = rest.split_at(slash);
    let ours = who == b"self"
        || who == b"thread-self"
        || parse_u32(who).is_some_and(|pid| pid == host::getpid());
    if !ours {
        return None;
    }
    let tail = tail.strip_prefix(b"/")?;
    // /proc/thread-self/fd/N and /proc/<pid>/fd/N; also /proc/<pid>/task/<tid>/fd/N
    let tail = match tail.strip_prefix(b"task/") {
        Some(t) => {
            let s = t.iter().position(|&b| b == b'/')?;
            t.get(s + 1..)?
        }
        None => tail,
    };
    parse_u32(tail.strip_prefix(b"fd/")?)
}

/// OP_FD_PATH into the chunk at 0 with room `cap`; returns the length.
pub fn fd_path(call: &mut Call, rfd: u32, cap: u64) -> i64 {
    let r = call.result(OP_FD_PATH, [rfd as u64, 0, cap, 0, 0, 0], true);
    if r >= 0 && r as u64 > cap {
        return EIO;
    }
    r
}

/// The domain's path of remote descriptor `rfd`, copied into `out`
/// (without NUL); the length, or -errno.
pub fn domain_path_of(rfd: u32, out: &mut [u8]) -> Result<usize, i64> {
    let mut call = Call::begin(domain::DOMAIN_STORAGE)?;
    let chunk = call.chunk().ok_or(EIO)?;
    let cap = out.len().saturating_sub(1).min(PATH_MAX - 1);
    let r = fd_path(&mut call, rfd, cap as u64);
    if r <= 0 {
        return Err(if r == 0 { EIO } else { r });
    }
    if !chunk.read(0, &mut out[..r as usize]) {
        return Err(EIO);
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_paths() {
        assert_eq!(fd_of_path(b"/proc/self/fd/7"), Some(7));
        assert_eq!(fd_of_path(b"/dev/fd/12"), Some(12));
        assert_eq!(fd_of_path(b"/dev/stdout"), Some(1));
        assert_eq!(fd_of_path(b"/proc/thread-self/fd/3"), Some(3));
        let me = format!("/proc/{}/fd/5", std::process::id());
        assert_eq!(fd_of_path(me.as_bytes()), Some(5));
        let me = format!("/proc/{}/task/1/fd/5", std::process::id());
        assert_eq!(fd_of_path(me.as_bytes()), Some(5));
        assert_eq!(fd_of_path(b"/proc/1/fd/5"), None, "another process");
        assert_eq!(fd_of_path(b"/proc/self/fdinfo/5"), None);
        assert_eq!(fd_of_path(b"/proc/self/fd/"), None);
        assert_eq!(fd_of_path(b"/proc/self/fd/5x"), None);
        assert_eq!(fd_of_path(b"/proc/self/fd/99999999999"), None);
        assert_eq!(
            split_fd_path(b"/proc/self/fd/7/a/b"),
            Some((7, &b"/a/b"[..]))
        );
        assert_eq!(split_fd_path(b"/dev/fd/3/x"), Some((3, &b"/x"[..])));
        assert_eq!(split_fd_path(b"/proc/self/fd/7"), Some((7, &b""[..])));
        assert_eq!(split_fd_path(b"/proc/self/fdinfo/7/x"), None);
        assert_eq!(split_fd_path(b"/etc/passwd"), None);
    }
}
