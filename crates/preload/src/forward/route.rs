//! Path normalisation and routing: which domain a path belongs to.
//!
//! Routing is lexical (`//`, `.`, `..` are resolved without looking at the
//! file system), which is what decides *where* a call runs. The path that is
//! executed is still the program's own (forwarded verbatim), except when a
//! relative path must run on the host while our cwd is in a domain: then we
//! execute the joined, normalised absolute path.

use super::domain;
use super::path::{is_under, normalize_in_place, PATH_MAX};
use super::{cwd, fds, state, usermem};
use virtuos_abi::AT_FDCWD_ARG;

/// Whether the absolute path `raw`, walked component by component, is at
/// some point `mount` or below it (`/storage/..` is, and ends at `/`).
/// Natively such a path goes through the mount directory; on the host that
/// directory does not exist, so a path that enters the mount and climbs
/// back out must run with its lexically normalised form.
pub fn enters_mount(raw: &[u8], mount: &[u8]) -> bool {
    let mount_comp = |i: usize| mount.split(|&b| b == b'/').filter(|c| !c.is_empty()).nth(i);
    let k = mount
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .count();
    if k == 0 || raw.first() != Some(&b'/') {
        return false;
    }
    // `depth` components on the walk's stack, the first `good` of which
    // are the mount's first components.
    let (mut depth, mut good) = (0usize, 0usize);
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => {
                depth = depth.saturating_sub(1);
                good = good.min(depth);
            }
            _ => {
                if good == depth && mount_comp(depth) == Some(c) {
                    good += 1;
                }
                depth += 1;
            }
        }
        if good == k {
            return true;
        }
    }
    false
}

/// `cwd + "/" + rel` into `out`, normalised; None if it does not fit.
pub fn join_normalize(cwd: &[u8], rel: &[u8], out: &mut [u8]) -> Option<usize> {
    let total = cwd.len().checked_add(1)?.checked_add(rel.len())?;
    if total > out.len() {
        return None;
    }
    out[..cwd.len()].copy_from_slice(cwd);
    out[cwd.len()] = b'/';
    out[cwd.len() + 1..total].copy_from_slice(rel);
    Some(normalize_in_place(out, total))
}

/// Where one path argument goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRoute {
    /// Execute on the host as the program passed it.
    Local,
    /// Execute on the host with the absolute path in the scratch buffer
    /// (`PathScratch::rewritten`) and `AT_FDCWD`.
    Rewrite,
    /// Forward; `dirfd` is what the domain gets in the dirfd slot.
    Remote { dirfd: u64 },
    /// Forward with the domain path in the scratch buffer
    /// (`PathScratch::rewritten`) and `AT_FDCWD`: the program named a
    /// forwarded descriptor through `/proc/self/fd/N`, `/dev/fd/N` or
    /// `/dev/std*`, which on the host would reach the placeholder.
    RemoteRewritten,
}

/// Room for a user path and, when joining with a remote cwd, the cwd.
pub struct PathScratch {
    buf: [u8; 2 * PATH_MAX + 8],
    len: usize,
    /// Where `classify` left the path a forwarded call resolves to
    /// (start, length in `buf`; length 0: unknown), and the user dirfd it
    /// is relative to (`NO_DIRFD`: it is absolute).
    resolved: (usize, usize),
    rel_dirfd: u64,
}

const NO_DIRFD: u64 = u64::MAX;

impl PathScratch {
    pub const fn new() -> PathScratch {
        PathScratch {
            buf: [0; 2 * PATH_MAX + 8],
            len: 0,
            resolved: (0, 0),
            rel_dirfd: NO_DIRFD,
        }
    }

    /// The rewritten absolute path, NUL-terminated (after `Rewrite`).
    pub fn rewritten(&self) -> &[u8] {
        &self.buf[..self.len + 1]
    }

    /// After a `Remote*` route: the path the call resolves to, lexically,
    /// and the user descriptor of the directory it is relative to (None:
    /// absolute). None when unknown (`/proc/self/fd/N`, NULL paths).
    pub fn resolved(&self) -> Option<(&[u8], Option<u64>)> {
        let (start, len) = self.resolved;
        if len == 0 {
            return None;
        }
        let p = self.buf.get(start..start + len)?;
        Some((p, (self.rel_dirfd != NO_DIRFD).then_some(self.rel_dirfd)))
    }
}

impl Default for PathScratch {
    fn default() -> Self {
        PathScratch::new()
    }
}

fn is_at_fdcwd(dirfd: u64) -> bool {
    dirfd as i32 == libc::AT_FDCWD
}

/// Route the path argument `ptr` (with its dirfd, if the call has one).
/// `follow`: the call follows a final symlink, so `/proc/self/fd/N` of a
/// forwarded N means the domain's file (otherwise it means the link itself,
/// a host object). Errors are errnos of the call (e.g. ENAMETOOLONG
/// joining a remote cwd).
pub fn classify(
    dirfd: Option<u64>,
    ptr: u64,
    follow: bool,
    s: &mut PathScratch,
) -> Result<PathRoute, i64> {
    let remote_dirfd = |d: Option<u64>| d.and_then(fds::get);
    s.resolved = (0, 0);
    s.rel_dirfd = NO_DIRFD;
    if ptr == 0 {
        // NULL path (utimensat): the call acts on dirfd itself.
        return Ok(match remote_dirfd(dirfd) {
            Some(e) => PathRoute::Remote {
                dirfd: e.remote as u64,
            },
            None => PathRoute::Local,
        });
    }
    // Read the user path into the upper half, leaving room for a cwd.
    let (_, hi) = s.buf.split_at_mut(PATH_MAX + 4);
    let n = match usermem::read_cstr_checked(ptr, &mut hi[..PATH_MAX]) {
        Ok(n) => n,
        Err(e) if e == -(libc::ENAMETOOLONG as i64) => {
            // Too long: the kernel (or the domain) says ENAMETOOLONG.
            if remote_dirfd(dirfd).is_some() || (dirfd.is_none_or(is_at_fdcwd) && cwd::is_remote())
            {
                return Err(e);
            }
            return Ok(PathRoute::Local);
        }
        // A bad address: EFAULT, wherever the call would have run.
        Err(e) => return Err(e),
    };
    // The link itself only when followed; a path through it (a directory
    // descriptor's `/proc/self/fd/N/name`) always goes through it.
    let via_fd = super::fdlink::split_fd_path(&hi[..n])
        .filter(|(_, rest)| follow || !rest.is_empty())
        .map(|(fd, rest)| (fd, rest.len()));
    if let Some((fd, rest_len)) = via_fd {
        if let Some(e) = fds::get(fd as u64) {
            if e.domain != domain::DOMAIN_STORAGE {
                // A socket of the network domain: natively, following its
                // /proc link cannot open it either (nor look inside).
                return Err(-(if rest_len == 0 {
                    libc::ENXIO
                } else {
                    libc::ENOTDIR
                } as i64));
            }
            let len = super::fdlink::domain_path_of(e.remote, &mut s.buf[..PATH_MAX])?;
            let total = len + rest_len;
            if total >= PATH_MAX {
                return Err(-(libc::ENAMETOOLONG as i64));
            }
            let (lo, hi) = s.buf.split_at_mut(PATH_MAX + 4);
            lo[len..total].copy_from_slice(&hi[n - rest_len..n]);
            s.buf[total] = 0;
            s.len = total;
            return Ok(PathRoute::RemoteRewritten);
        }
    }
    let mount = state::mount();
    if hi.first() == Some(&b'/') {
        let through_mount = enters_mount(&hi[..n], mount);
        let m = normalize_in_place(hi, n);
        if is_under(&hi[..m], mount) {
            s.resolved = (PATH_MAX + 4, m);
            return Ok(PathRoute::Remote {
                dirfd: AT_FDCWD_ARG,
            });
        }
        if !through_mount {
            return Ok(PathRoute::Local);
        }
        // `/storage/..`: the host has no mount directory to climb out of.
        s.buf.copy_within(PATH_MAX + 4..PATH_MAX + 4 + m, 0);
        s.buf[m] = 0;
        s.len = m;
        return Ok(PathRoute::Rewrite);
    }
    if let Some(d) = dirfd.filter(|&d| !is_at_fdcwd(d)) {
        return Ok(match fds::get(d) {
            Some(e) => {
                s.resolved = (PATH_MAX + 4, n);
                s.rel_dirfd = d;
                PathRoute::Remote {
                    dirfd: e.remote as u64,
                }
            }
            None => local_base_route(Some(d as i32), n, mount, s),
        });
    }
    if !cwd::is_remote() {
        return Ok(local_base_route(None, n, mount, s));
    }
    let mut cwd_buf = [0u8; PATH_MAX];
    let Some(clen) = cwd::copy_remote(&mut cwd_buf) else {
        return Ok(PathRoute::Local);
    };
    // Join into the whole buffer: cwd, '/', then the relative path (moved
    // down from the upper half). Only to decide where it lands: a path for
    // the domain travels as the program wrote it (relative to the shadow's
    // cwd, which follows ours), so the kernel applies its limits to that
    // string alone, and `..` after a symlink resolves as natively.
    let total = clen + 1 + n;
    let start_hi = PATH_MAX + 4;
    s.buf.copy_within(start_hi..start_hi + n, clen + 1);
    s.buf[..clen].copy_from_slice(&cwd_buf[..clen]);
    s.buf[clen] = b'/';
    let m = normalize_in_place(&mut s.buf, total);
    if is_under(&s.buf[..m], mount) {
        s.resolved = (0, m);
        Ok(PathRoute::Remote {
            dirfd: AT_FDCWD_ARG,
        })
    } else if m >= PATH_MAX {
        // Climbs out to the host with more than a path's length left.
        Err(-(libc::ENAMETOOLONG as i64))
    } else {
        s.buf[m] = 0;
        s.len = m;
        Ok(PathRoute::Rewrite)
    }
}

/// Whether relative path `rel` could lead from a host directory into the
/// mount: it climbs (`..`) or it starts with a component of the mount path
/// (`storage/x` from `/`, as `mkdir -p` and fts walk with dirfds).
pub fn may_reach_mount(rel: &[u8], mount: &[u8]) -> bool {
    let mut comps = rel
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".");
    let Some(first) = comps.clone().next() else {
        return false;
    };
    first == b".." || comps.any(|c| c == b"..") || mount.split(|&b| b == b'/').any(|m| m == first)
}

/// A relative path against a host directory (the local dirfd `dirfd`, or
/// the host cwd): local, unless joining it with that directory's path lands
/// under the mount — then it must go to the domain (with the absolute path),
/// never create or touch anything on the host. The relative path is in the
/// upper half of the scratch (`n` bytes).
fn local_base_route(dirfd: Option<i32>, n: usize, mount: &[u8], s: &mut PathScratch) -> PathRoute {
    let start_hi = PATH_MAX + 4;
    if !may_reach_mount(&s.buf[start_hi..start_hi + n], mount) {
        return PathRoute::Local;
    }
    let mut base = [0u8; PATH_MAX];
    let blen = match dirfd {
        Some(fd) => super::host::fd_path(fd, &mut base),
        None => super::host::getcwd(&mut base),
    };
    let Some(blen) = blen else {
        return PathRoute::Local;
    };
    let total = blen + 1 + n;
    if total >= PATH_MAX {
        return PathRoute::Local;
    }
    s.buf.copy_within(start_hi..start_hi + n, blen + 1);
    s.buf[..blen].copy_from_slice(&base[..blen]);
    s.buf[blen] = b'/';
    let m = normalize_in_place(&mut s.buf, total);
    if is_under(&s.buf[..m], mount) {
        s.buf[m] = 0;
        s.len = m;
        s.resolved = (0, m);
        PathRoute::RemoteRewritten
    } else {
        PathRoute::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> String {
        let mut b = p.as_bytes().to_vec();
        b.resize(p.len().max(1), 0);
        let n = normalize_in_place(&mut b, p.len());
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    #[test]
    fn examples() {
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("//"), "/");
        assert_eq!(norm("/storage/"), "/storage");
        assert_eq!(norm("/storage//a/./b/"), "/storage/a/b");
        assert_eq!(norm("/storage/../etc"), "/etc");
        assert_eq!(norm("/../../storage"), "/storage");
        assert_eq!(norm("/a/b/../../.."), "/");
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        assert_eq!(norm("/a/..b/.c"), "/a/..b/.c");
    }

    #[test]
    fn under_the_mount() {
        assert!(is_under(b"/storage", b"/storage"));
        assert!(is_under(b"/storage/x", b"/storage"));
        assert!(!is_under(b"/storagex", b"/storage"));
        assert!(!is_under(b"/stor", b"/storage"));
        assert!(!is_under(b"/", b"/storage"));
    }

    #[test]
    fn relative_paths_that_may_reach_the_mount() {
        assert!(may_reach_mount(b"storage/x", b"/storage"));
        assert!(may_reach_mount(b"./storage", b"/storage"));
        assert!(may_reach_mount(b"../storage", b"/storage"));
        assert!(may_reach_mount(b"a/../../b", b"/storage"));
        assert!(may_reach_mount(b"data", b"/srv/data"));
        assert!(!may_reach_mount(b"usr/lib", b"/storage"));
        assert!(!may_reach_mount(b"", b"/storage"));
        assert!(!may_reach_mount(b"storagex", b"/storage"));
    }

    #[test]
    fn joins() {
        let mut out = [0u8; 64];
        assert!(enters_mount(b"/storage/..", b"/storage"));
        assert!(enters_mount(b"//storage/./x/../../etc", b"/storage"));
        assert!(enters_mount(b"/a/../storage/..", b"/storage"));
        assert!(!enters_mount(b"/storagex/..", b"/storage"));
        assert!(!enters_mount(b"/etc/../tmp", b"/storage"));
        assert!(!enters_mount(b"/mnt/../data", b"/mnt/data"));
        assert!(enters_mount(b"/mnt/data/..", b"/mnt/data"));
        assert!(!enters_mount(b"/mnt/x/../", b"/mnt/data"));
        let n = join_normalize(b"/storage/d", b"../../etc/passwd", &mut out).unwrap();
        assert_eq!(&out[..n], b"/etc/passwd");
        let n = join_normalize(b"/storage", b"", &mut out).unwrap();
        assert_eq!(&out[..n], b"/storage");
        assert!(join_normalize(&[b'a'; 60], b"bbbbb", &mut out).is_none());
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_and_clean(
            comps in proptest::collection::vec(
                prop_oneof![Just("".to_string()), Just(".".to_string()), Just("..".to_string()),
                            "[a-z.]{1,4}"], 0..12),
            trailing in any::<bool>()
        ) {
            let mut p = String::from("/");
            p.push_str(&comps.join("/"));
            if trailing { p.push('/'); }
            let once = norm(&p);
            prop_assert!(once.starts_with('/'));
            prop_assert_eq!(norm(&once), once.clone());
            for c in once.split('/').skip(1) {
                prop_assert!(c != "." && c != "..", "component {:?} in {:?}", c, once);
                prop_assert!(!c.is_empty() || once == "/", "empty component in {:?}", once);
            }
        }
    }
}
