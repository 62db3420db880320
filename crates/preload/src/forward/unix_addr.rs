//! Where the address of a call on an `AF_UNIX` socket leads (`unix`):
//! not a path, an abstract name, a host path, or a path in the storage
//! domain (routed as every other path, `route::classify`), and the
//! `struct sockaddr_un` the kernel that runs the call must get. Used by
//! `unix` (sockets that move to the storage domain) and `net` (the address
//! a storage-domain socket sends to).

use super::route::{self, PathRoute, PathScratch};
use super::usermem;
use virtuos_abi::shape::SOCKADDR_UN;

const EXDEV: i64 = -(libc::EXDEV as i64);
const ENAMETOOLONG: i64 = -(libc::ENAMETOOLONG as i64);
/// offsetof(struct sockaddr_un, sun_path).
pub const PATH_OFF: usize = 2;
/// sizeof(struct sockaddr_un).
pub const UN_LEN: usize = SOCKADDR_UN as usize;

/// A `struct sockaddr_un` of our own.
#[derive(Clone, Copy)]
pub struct UnixAddr {
    buf: [u8; UN_LEN + 1],
    len: usize,
}

impl UnixAddr {
    /// An address with path `p` (NUL-terminated when it fits).
    fn with_path(p: &[u8]) -> Result<UnixAddr, i64> {
        // sun_path holds 108 bytes; natively a longer path cannot be named.
        if p.len() > UN_LEN - PATH_OFF {
            return Err(ENAMETOOLONG);
        }
        let mut a = UnixAddr {
            buf: [0; UN_LEN + 1],
            len: PATH_OFF + p.len() + 1,
        };
        a.buf[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        a.buf[PATH_OFF..PATH_OFF + p.len()].copy_from_slice(p);
        a.len = a.len.min(UN_LEN);
        Ok(a)
    }

    pub fn ptr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    pub fn socklen(&self) -> u64 {
        self.len as u64
    }
}

/// Where an address given to a Unix socket leads.
pub enum AddrRoute {
    /// Not a named Unix address (NULL, another family, `AF_UNSPEC`, too
    /// long): the kernel that gets it judges it.
    Other,
    /// An abstract name: a host object.
    Abstract,
    /// A host path, as the program gave it.
    Host,
    /// A host path that must be given as this absolute path (the program's
    /// cwd is in the domain, the host's is stale).
    HostRewritten(UnixAddr),
    /// A path in the storage domain, as the domain must get it.
    Storage(UnixAddr),
}

/// Route the address `(ptr, len)` of a call on a Unix socket.
pub fn route_addr(ptr: u64, len: u64) -> Result<AddrRoute, i64> {
    if ptr == 0 || len <= PATH_OFF as u64 || len > UN_LEN as u64 {
        return Ok(AddrRoute::Other);
    }
    let mut raw = [0u8; UN_LEN];
    let raw = &mut raw[..len as usize];
    if !usermem::read_user(ptr, raw) {
        return Err(-(libc::EFAULT as i64));
    }
    if u16::from_ne_bytes([raw[0], raw[1]]) as i32 != libc::AF_UNIX {
        return Ok(AddrRoute::Other);
    }
    let sun = &raw[PATH_OFF..];
    if sun[0] == 0 {
        return Ok(AddrRoute::Abstract);
    }
    // The kernel reads the path up to the first NUL or the length's end.
    let plen = sun.iter().position(|&b| b == 0).unwrap_or(sun.len());
    let path = &sun[..plen];
    let mut cstr = [0u8; UN_LEN];
    cstr[..plen].copy_from_slice(path);
    let mut s = PathScratch::new();
    // The final component is a socket, never a symlink we follow.
    match route::classify(None, cstr.as_ptr() as u64, false, &mut s)? {
        PathRoute::Local => Ok(AddrRoute::Host),
        PathRoute::Rewrite => {
            let abs = s.rewritten();
            UnixAddr::with_path(&abs[..abs.len() - 1]).map(AddrRoute::HostRewritten)
        }
        PathRoute::Remote { .. } => UnixAddr::with_path(path).map(AddrRoute::Storage),
        PathRoute::RemoteRewritten => {
            let abs = s.rewritten();
            UnixAddr::with_path(&abs[..abs.len() - 1]).map(AddrRoute::Storage)
        }
    }
}

/// The address a socket of the storage domain gets for `(ptr, len)`:
/// None to pass it unchanged (the domain checks it), or the routed path.
pub fn storage_addr(ptr: u64, len: u64) -> Result<Option<UnixAddr>, i64> {
    match route_addr(ptr, len)? {
        AddrRoute::Other => Ok(None),
        AddrRoute::Storage(a) => Ok(Some(a)),
        AddrRoute::Abstract | AddrRoute::Host | AddrRoute::HostRewritten(_) => Err(EXDEV),
    }
}
