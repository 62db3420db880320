//! A fake storage domain for the forwarding tests: workers that claim
//! entries of a region and execute them with real system calls in the test
//! process, validating every chunk offset with the shape table as the real
//! domain does. Optionally maps a virtual mount path (which does not exist
//! on the host, so a call that leaked to the host would fail) onto a real
//! directory.

#![allow(dead_code)]

use std::ffi::CString;
use std::sync::atomic::{AtomicI32, Ordering};
use virtuos_abi::call::complete;
use virtuos_abi::entry::Request;
use virtuos_abi::ops::{
    msg, OP_FD_PATH, OP_FORK_ABORT, OP_FORK_PREPARE, OP_PING, OP_POLL, OP_RECVMSG, OP_SENDMSG,
};
use virtuos_abi::region::StatePage;
use virtuos_abi::shape::{fcntl_arg, ioctl_arg, shape, Arg, MAX_STRING};
use virtuos_abi::{ClientRegion, AT_FDCWD_ARG, DOMAIN_FD_LIMIT, NULL_ARG};

/// One shadow: its cwd and the path mapping.
pub struct Executor {
    /// The shadow's cwd descriptor; -1 = the root.
    pub cwd: AtomicI32,
    /// (virtual mount, real directory), or None for identity.
    pub map: Option<(String, String)>,
}

fn errno() -> i64 {
    -(std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO) as i64)
}

pub fn fd_path(fd: i64) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.as_os_str().as_bytes().to_vec())
}

fn under(p: &[u8], prefix: &[u8]) -> bool {
    p.starts_with(prefix) && (p.len() == prefix.len() || p[prefix.len()] == b'/')
}

impl Executor {
    pub fn new(map: Option<(String, String)>) -> Executor {
        Executor {
            cwd: AtomicI32::new(-1),
            map,
        }
    }

    /// A forked shadow: same mapping, a copy of the cwd.
    pub fn fork(&self) -> Executor {
        let c = self.cwd.load(Ordering::Relaxed);
        // SAFETY: duplicating a descriptor number we own.
        let nc = if c >= 0 {
            unsafe { libc::fcntl(c, libc::F_DUPFD_CLOEXEC, 0) }
        } else {
            -1
        };
        Executor {
            cwd: AtomicI32::new(nc),
            map: self.map.clone(),
        }
    }

    fn to_real(&self, p: &[u8]) -> Vec<u8> {
        match &self.map {
            Some((v, r)) if under(p, v.as_bytes()) => [r.as_bytes(), &p[v.len()..]].concat(),
            _ => p.to_vec(),
        }
    }

    fn to_virtual(&self, p: &[u8]) -> Vec<u8> {
        match &self.map {
            Some((v, r)) if under(p, r.as_bytes()) => [v.as_bytes(), &p[r.len()..]].concat(),
            _ => p.to_vec(),
        }
    }

    pub fn serve(&self, region: &ClientRegion, state: &StatePage) {
        loop {
            match region.take_submitted() {
                Ok(Some(i)) => {
                    let entry = region.entry(i).unwrap();
                    let Some(req) = entry.claim() else { continue };
                    let (r, extra) = self.execute_extra(region, &req);
                    complete(entry, r, extra);
                }
                Ok(None) => region.worker_sleep(state.get(), std::time::Duration::from_millis(20)),
                Err(e) => panic!("malformed submit list: {e:?}"),
            }
        }
    }

    fn set_cwd(&self, fd: i32) {
        let old = self.cwd.swap(fd, Ordering::Relaxed);
        if old >= 0 {
            // SAFETY: closing our own old cwd descriptor.
            unsafe { libc::close(old) };
        }
    }

    /// Like `execute`, with the extra result word (OP_RECVMSG).
    pub fn execute_extra(&self, region: &ClientRegion, req: &Request) -> (i64, u64) {
        match req.op {
            OP_SENDMSG | OP_RECVMSG => msg_op(region, req),
            OP_POLL => (poll_op(region, req), 0),
            _ => (self.execute(region, req), 0),
        }
    }

    pub fn execute(&self, region: &ClientRegion, req: &Request) -> i64 {
        let chunk = req.chunk;
        let ptr = |off: u64, len: u64| -> Option<u64> {
            region.chunk_ptr(chunk?, off, len).map(|p| p as u64)
        };
        match req.op {
            OP_PING | OP_FORK_ABORT => return 0,
            OP_FORK_PREPARE => return 1,
            OP_FD_PATH => {
                let [fd, off, len, ..] = req.args;
                let Some(p) = fd_path(fd as i64) else {
                    return -(libc::EBADF as i64);
                };
                let p = self.to_virtual(&p);
                let n = p.len().min(len as usize);
                return match chunk {
                    Some(c) if region.write_chunk(c, off, &p[..n]) => n as i64,
                    _ => -(libc::EFAULT as i64),
                };
            }
            _ => {}
        }
        let nr = req.op as i64;
        let Some(mut sh) = shape(req.op) else {
            return -(libc::ENOSYS as i64);
        };
        if nr == libc::SYS_fcntl {
            let Some(a) = fcntl_arg(req.args[1]) else {
                return -(libc::EINVAL as i64);
            };
            sh[2] = a;
        }
        if nr == libc::SYS_ioctl {
            let Some(a) = ioctl_arg(req.args[1]) else {
                return -(libc::ENOTTY as i64);
            };
            sh[2] = a;
        }
        let mut a = req.args;
        let cwd = self.cwd.load(Ordering::Relaxed);
        let mut keep: Vec<CString> = Vec::new();
        for i in 0..6 {
            let v = req.args[i];
            match sh[i] {
                Arg::Fd => {
                    if v >= DOMAIN_FD_LIMIT {
                        return -(libc::EBADF as i64);
                    }
                }
                Arg::DirFd => {
                    if v == AT_FDCWD_ARG && cwd >= 0 {
                        a[i] = cwd as u64;
                    }
                }
                Arg::Path | Arg::OptPath | Arg::Str => {
                    if v == NULL_ARG && sh[i].nullable() {
                        a[i] = 0;
                        continue;
                    }
                    let Some(c) = chunk else {
                        return -(libc::EFAULT as i64);
                    };
                    let Some(n) = region.chunk_strlen(c, v, MAX_STRING - 1) else {
                        return -(libc::EFAULT as i64);
                    };
                    let mut s = vec![0u8; n];
                    region.read_chunk(c, v, &mut s);
                    if sh[i] != Arg::Str {
                        let at_call = i > 0 && sh[i - 1] == Arg::DirFd;
                        if s.first() == Some(&b'/') {
                            s = self.to_real(&s);
                        } else if !at_call && cwd >= 0 {
                            // A non-*at call with a relative path: our cwd.
                            let base = fd_path(cwd as i64).unwrap_or_default();
                            s = [base.as_slice(), b"/", s.as_slice()].concat();
                        }
                    }
                    let cs = CString::new(s).unwrap();
                    a[i] = cs.as_ptr() as u64;
                    keep.push(cs);
                }
                Arg::InBuf(n) | Arg::OutBuf(n) => match ptr(v, req.args[n as usize]) {
                    Some(p) => a[i] = p,
                    None => return -(libc::EFAULT as i64),
                },
                Arg::In(s) | Arg::Out(s) | Arg::InOut(s) => match ptr(v, s as u64) {
                    Some(p) => a[i] = p,
                    None => return -(libc::EFAULT as i64),
                },
                Arg::OptIn(s) | Arg::OptInOut(s) => {
                    if v == NULL_ARG {
                        a[i] = 0;
                    } else {
                        match ptr(v, s as u64) {
                            Some(p) => a[i] = p,
                            None => return -(libc::EFAULT as i64),
                        }
                    }
                }
                Arg::Val | Arg::Unused => {}
            }
        }
        // The fake domain keeps its own cwd (a descriptor) instead of the
        // process-wide one, which belongs to the "host" side of the test.
        match nr {
            libc::SYS_chdir => {
                // SAFETY: a[0] points at a NUL-terminated path we own.
                let fd = unsafe {
                    libc::open(
                        a[0] as *const libc::c_char,
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return errno();
                }
                self.set_cwd(fd);
                return 0;
            }
            libc::SYS_fchdir => {
                // SAFETY: duplicating a descriptor number.
                let fd = unsafe { libc::fcntl(a[0] as i32, libc::F_DUPFD_CLOEXEC, 0) };
                if fd < 0 {
                    return errno();
                }
                self.set_cwd(fd);
                return 0;
            }
            libc::SYS_getcwd => {
                let p = if cwd >= 0 {
                    self.to_virtual(&fd_path(cwd as i64).unwrap_or_default())
                } else {
                    b"/".to_vec()
                };
                if p.len() + 1 > req.args[1] as usize {
                    return -(libc::ERANGE as i64);
                }
                let mut with_nul = p;
                with_nul.push(0);
                if !region.write_chunk(chunk.unwrap(), req.args[0], &with_nul) {
                    return -(libc::EFAULT as i64);
                }
                return with_nul.len() as i64;
            }
            _ => {}
        }
        // SAFETY: every pointer argument was checked against the chunk or
        // points at a string we own (kept alive in `keep`).
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        drop(keep);
        if r < 0 {
            errno()
        } else {
            r
        }
    }
}

/// OP_SENDMSG / OP_RECVMSG with the `ops::msg` layout, as the network
/// domain executes them (real sendmsg/recvmsg in this process).
fn msg_op(region: &ClientRegion, req: &Request) -> (i64, u64) {
    let [fd, flags, name_len, control_len, data_len, _] = req.args;
    if fd >= DOMAIN_FD_LIMIT
        || name_len as usize > msg::NAME_MAX
        || control_len as usize > msg::CONTROL_MAX
        || data_len as usize > msg::DATA_MAX
    {
        return (-(libc::EINVAL as i64), 0);
    }
    let Some(c) = req.chunk else {
        return (-(libc::EFAULT as i64), 0);
    };
    let base = region
        .chunk_ptr(c, 0, virtuos_abi::CHUNK_SIZE as u64)
        .unwrap();
    let mut iov = libc::iovec {
        // SAFETY: DATA_OFF + data_len lies inside the chunk (checked above).
        iov_base: unsafe { base.add(msg::DATA_OFF) }.cast(),
        iov_len: data_len as usize,
    };
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    if name_len > 0 {
        // SAFETY: inside the chunk.
        m.msg_name = unsafe { base.add(msg::NAME_OFF) }.cast();
        m.msg_namelen = name_len as u32;
    }
    if control_len > 0 {
        // SAFETY: inside the chunk.
        m.msg_control = unsafe { base.add(msg::CONTROL_OFF) }.cast();
        m.msg_controllen = control_len as usize;
    }
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    if req.op == OP_SENDMSG {
        // SAFETY: every pointer of `m` is inside the chunk.
        let r = unsafe { libc::sendmsg(fd as i32, &m, flags as i32) };
        (if r < 0 { errno() } else { r as i64 }, 0)
    } else {
        // SAFETY: every pointer of `m` is inside the chunk.
        let r = unsafe { libc::recvmsg(fd as i32, &mut m, flags as i32) };
        if r < 0 {
            return (errno(), 0);
        }
        let extra =
            msg::pack_recv_extra(m.msg_namelen, m.msg_controllen as u32, m.msg_flags as u32);
        (r as i64, extra)
    }
}

/// OP_POLL: `[nfds, timeout_ms]`, pollfds at 0 of the chunk.
fn poll_op(region: &ClientRegion, req: &Request) -> i64 {
    let [nfds, timeout, ..] = req.args;
    let n = nfds as usize;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(n);
    if n > 0 {
        let Some(c) = req.chunk else {
            return -(libc::EFAULT as i64);
        };
        let mut raw = vec![0u8; n * 8];
        if !region.read_chunk(c, 0, &mut raw) {
            return -(libc::EFAULT as i64);
        }
        for e in raw.chunks_exact(8) {
            fds.push(libc::pollfd {
                fd: i32::from_ne_bytes([e[0], e[1], e[2], e[3]]),
                events: i16::from_ne_bytes([e[4], e[5]]),
                revents: 0,
            });
        }
    }
    // SAFETY: our own vector of n pollfds.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n as u64, timeout as i64 as i32) };
    if r < 0 {
        return errno();
    }
    if let Some(c) = req.chunk {
        for (i, p) in fds.iter().enumerate() {
            region.write_chunk(c, (i * 8 + 6) as u64, &p.revents.to_ne_bytes());
        }
    }
    r as i64
}
