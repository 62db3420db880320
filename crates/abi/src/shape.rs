//! How each forwarded system call's arguments travel (gVisor-style table).
//!
//! The client marshals by this table: scalars are copied, descriptors are
//! translated to the domain's numbers, and every pointer argument is replaced
//! by an offset into the call's data chunk, with the data copied in (inputs)
//! or out (outputs). The domain validates each offset and length against the
//! chunk with the same table before it executes the call, so both sides agree
//! on what a call may touch. A syscall with no shape is never executed by a
//! domain.

use crate::layout::NULL_ARG;

/// Kind of one argument slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Slot unused.
    Unused,
    /// Scalar, passed through.
    Val,
    /// A descriptor of this domain (translated by the client).
    Fd,
    /// A descriptor or `AT_FDCWD`.
    DirFd,
    /// NUL-terminated path in the chunk (offset).
    Path,
    /// Path or `NULL_ARG`.
    OptPath,
    /// NUL-terminated non-path string in the chunk (symlink target, xattr name).
    Str,
    /// Input bytes in the chunk; their length is argument `n`.
    InBuf(u8),
    /// Output bytes in the chunk; capacity is argument `n`. The result is the
    /// number of bytes the domain wrote (for calls that return a length).
    OutBuf(u8),
    /// Fixed-size input struct in the chunk.
    In(u16),
    /// Fixed-size input struct or `NULL_ARG`.
    OptIn(u16),
    /// Fixed-size output struct in the chunk.
    Out(u16),
    /// Fixed-size struct copied in and back out.
    InOut(u16),
    /// InOut struct or `NULL_ARG`.
    OptInOut(u16),
}

impl Arg {
    /// Whether this slot carries a pointer (an offset into the chunk).
    pub fn is_pointer(self) -> bool {
        !matches!(self, Arg::Unused | Arg::Val | Arg::Fd | Arg::DirFd)
    }

    /// Whether a NULL pointer is allowed in this slot.
    pub fn nullable(self) -> bool {
        matches!(self, Arg::OptPath | Arg::OptIn(_) | Arg::OptInOut(_))
    }

    /// Whether data flows from the client into the domain.
    pub fn copies_in(self) -> bool {
        matches!(
            self,
            Arg::Path
                | Arg::OptPath
                | Arg::Str
                | Arg::InBuf(_)
                | Arg::In(_)
                | Arg::OptIn(_)
                | Arg::InOut(_)
                | Arg::OptInOut(_)
        )
    }

    /// Whether data flows back from the domain to the client.
    pub fn copies_out(self) -> bool {
        matches!(
            self,
            Arg::OutBuf(_) | Arg::Out(_) | Arg::InOut(_) | Arg::OptInOut(_)
        )
    }
}

/// Longest path or string accepted in a chunk (PATH_MAX, with its NUL).
pub const MAX_STRING: usize = 4096;

pub type Shape = [Arg; 6];

const fn s(a: &[Arg]) -> Shape {
    let mut out = [Arg::Unused; 6];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    out
}

use Arg::*;

const STAT: u16 = 144; // struct stat
const STATFS: u16 = 120; // struct statfs
const STATX: u16 = 256; // struct statx
const TIMESPEC2: u16 = 32; // struct timespec[2]
const TIMEVAL2: u16 = 32; // struct timeval[2]
const UTIMBUF: u16 = 16; // struct utimbuf
const OFF: u16 = 8; // loff_t
const FLOCK: u16 = 32; // struct flock
const F_OWNER_EX: u16 = 8; // struct f_owner_ex
const RW_HINT: u16 = 8; // u64
/// Room for a socket address (struct sockaddr_storage).
pub const SOCKADDR: u16 = 128;
/// sizeof(struct sockaddr_un): the longest `AF_UNIX` address.
pub const SOCKADDR_UN: u16 = 110;
/// A socklen_t.
pub const SOCKLEN: u16 = 4;
/// Room for a socket option value (getsockopt); longer options are cut.
pub const SOCKOPT: u16 = 1024;

/// The shape of system call `nr`, if it may be forwarded to a domain.
///
/// `fcntl` and `ioctl` return a shape whose third slot is `Val`; their real
/// third slot depends on the command: see `fcntl_arg` and `ioctl_arg`.
pub fn shape(nr: u16) -> Option<Shape> {
    let nr = nr as i64;
    Some(match nr {
        // Data transfer.
        libc::SYS_read => s(&[Fd, OutBuf(2), Val]),
        libc::SYS_write => s(&[Fd, InBuf(2), Val]),
        libc::SYS_pread64 => s(&[Fd, OutBuf(2), Val, Val]),
        libc::SYS_pwrite64 => s(&[Fd, InBuf(2), Val, Val]),
        libc::SYS_lseek => s(&[Fd, Val, Val]),
        libc::SYS_getdents64 => s(&[Fd, OutBuf(2), Val]),
        libc::SYS_copy_file_range => s(&[Fd, OptInOut(OFF), Fd, OptInOut(OFF), Val, Val]),
        libc::SYS_sendfile => s(&[Fd, Fd, OptInOut(OFF), Val]),
        libc::SYS_splice => s(&[Fd, OptInOut(OFF), Fd, OptInOut(OFF), Val, Val]),
        libc::SYS_fadvise64 => s(&[Fd, Val, Val, Val]),
        libc::SYS_readahead => s(&[Fd, Val, Val]),
        // Opening and descriptors.
        libc::SYS_open => s(&[Path, Val, Val]),
        libc::SYS_creat => s(&[Path, Val]),
        libc::SYS_openat => s(&[DirFd, Path, Val, Val]),
        libc::SYS_openat2 => s(&[DirFd, Path, InBuf(3), Val]),
        libc::SYS_close => s(&[Fd]),
        libc::SYS_dup => s(&[Fd]),
        libc::SYS_fcntl => s(&[Fd, Val, Val]),
        libc::SYS_ioctl => s(&[Fd, Val, Val]),
        libc::SYS_flock => s(&[Fd, Val]),
        // Metadata.
        libc::SYS_fstat => s(&[Fd, Out(STAT)]),
        libc::SYS_stat | libc::SYS_lstat => s(&[Path, Out(STAT)]),
        libc::SYS_newfstatat => s(&[DirFd, Path, Out(STAT), Val]),
        libc::SYS_statx => s(&[DirFd, Path, Val, Val, Out(STATX)]),
        libc::SYS_statfs => s(&[Path, Out(STATFS)]),
        libc::SYS_fstatfs => s(&[Fd, Out(STATFS)]),
        libc::SYS_access => s(&[Path, Val]),
        libc::SYS_faccessat => s(&[DirFd, Path, Val]),
        libc::SYS_faccessat2 => s(&[DirFd, Path, Val, Val]),
        libc::SYS_chmod => s(&[Path, Val]),
        libc::SYS_fchmod => s(&[Fd, Val]),
        libc::SYS_fchmodat => s(&[DirFd, Path, Val]),
        452 /* fchmodat2 */ => s(&[DirFd, Path, Val, Val]),
        libc::SYS_chown | libc::SYS_lchown => s(&[Path, Val, Val]),
        libc::SYS_fchown => s(&[Fd, Val, Val]),
        libc::SYS_fchownat => s(&[DirFd, Path, Val, Val, Val]),
        libc::SYS_utimensat => s(&[DirFd, OptPath, OptIn(TIMESPEC2), Val]),
        libc::SYS_utimes => s(&[Path, OptIn(TIMEVAL2)]),
        libc::SYS_futimesat => s(&[DirFd, OptPath, OptIn(TIMEVAL2)]),
        libc::SYS_utime => s(&[Path, OptIn(UTIMBUF)]),
        libc::SYS_truncate => s(&[Path, Val]),
        libc::SYS_ftruncate => s(&[Fd, Val]),
        libc::SYS_fallocate => s(&[Fd, Val, Val, Val]),
        // Durability.
        libc::SYS_fsync | libc::SYS_fdatasync | libc::SYS_syncfs => s(&[Fd]),
        libc::SYS_sync_file_range => s(&[Fd, Val, Val, Val]),
        // Names.
        libc::SYS_mkdir => s(&[Path, Val]),
        libc::SYS_mkdirat => s(&[DirFd, Path, Val]),
        libc::SYS_mknod => s(&[Path, Val, Val]),
        libc::SYS_mknodat => s(&[DirFd, Path, Val, Val]),
        libc::SYS_rmdir | libc::SYS_unlink => s(&[Path]),
        libc::SYS_unlinkat => s(&[DirFd, Path, Val]),
        libc::SYS_rename | libc::SYS_link => s(&[Path, Path]),
        libc::SYS_renameat => s(&[DirFd, Path, DirFd, Path]),
        libc::SYS_renameat2 => s(&[DirFd, Path, DirFd, Path, Val]),
        libc::SYS_linkat => s(&[DirFd, Path, DirFd, Path, Val]),
        libc::SYS_symlink => s(&[Str, Path]),
        libc::SYS_symlinkat => s(&[Str, DirFd, Path]),
        libc::SYS_readlink => s(&[Path, OutBuf(2), Val]),
        libc::SYS_readlinkat => s(&[DirFd, Path, OutBuf(3), Val]),
        // Working directory.
        libc::SYS_chdir => s(&[Path]),
        libc::SYS_fchdir => s(&[Fd]),
        libc::SYS_getcwd => s(&[OutBuf(1), Val]),
        // The shadow mirrors the client's umask (the client keeps its own too).
        libc::SYS_umask => s(&[Val]),
        // Extended attributes.
        libc::SYS_getxattr | libc::SYS_lgetxattr => s(&[Path, Str, OutBuf(3), Val]),
        libc::SYS_fgetxattr => s(&[Fd, Str, OutBuf(3), Val]),
        libc::SYS_setxattr | libc::SYS_lsetxattr => s(&[Path, Str, InBuf(3), Val, Val]),
        libc::SYS_fsetxattr => s(&[Fd, Str, InBuf(3), Val, Val]),
        libc::SYS_listxattr | libc::SYS_llistxattr => s(&[Path, OutBuf(2), Val]),
        libc::SYS_flistxattr => s(&[Fd, OutBuf(2), Val]),
        libc::SYS_removexattr | libc::SYS_lremovexattr => s(&[Path, Str]),
        libc::SYS_fremovexattr => s(&[Fd, Str]),
        // Sockets (AF_INET/AF_INET6 in the network domain, AF_UNIX sockets
        // bound at storage paths in the storage domain). Address and option buffers have fixed
        // room in the chunk (so these slots are InOut even where the kernel
        // only writes); the client marshals these calls by hand, copying
        // back only what the kernel reported (`*addrlen`, `*optlen`),
        // bounded by what the program offered, and the domain clamps those
        // lengths to the room before the call.
        libc::SYS_socket => s(&[Val, Val, Val]),
        libc::SYS_bind | libc::SYS_connect => s(&[Fd, InBuf(2), Val]),
        libc::SYS_listen | libc::SYS_shutdown => s(&[Fd, Val]),
        libc::SYS_accept => s(&[Fd, OptInOut(SOCKADDR), OptInOut(SOCKLEN)]),
        libc::SYS_accept4 => s(&[Fd, OptInOut(SOCKADDR), OptInOut(SOCKLEN), Val]),
        libc::SYS_getsockname | libc::SYS_getpeername => s(&[Fd, Out(SOCKADDR), InOut(SOCKLEN)]),
        libc::SYS_sendto => s(&[Fd, InBuf(2), Val, Val, OptIn(SOCKADDR), Val]),
        libc::SYS_recvfrom => s(&[Fd, OutBuf(2), Val, Val, OptInOut(SOCKADDR), OptInOut(SOCKLEN)]),
        libc::SYS_setsockopt => s(&[Fd, Val, Val, InBuf(4), Val]),
        libc::SYS_getsockopt => s(&[Fd, Val, Val, Out(SOCKOPT), InOut(SOCKLEN)]),
        _ => return None,
    })
}

/// Which kind of domain serves a system call (per-family tables, as in
/// gVisor): a network domain never opens files; a storage domain makes
/// only `AF_UNIX` sockets, a network domain only `AF_INET`/`AF_INET6` ones
/// (the domain checks the address family of `socket` and of every address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Calls on paths or file metadata: the storage domain.
    File,
    /// Socket creation and socket-only calls: the network domain, and the
    /// storage domain for `AF_UNIX` sockets at storage paths.
    Socket,
    /// Calls on any descriptor (read, write, close, fcntl, fstat, ...):
    /// whichever domain owns the descriptor.
    Descriptor,
}

/// The family of a forwardable call (None if it has no shape).
pub fn family(nr: u16) -> Option<Family> {
    shape(nr)?;
    Some(match nr as i64 {
        libc::SYS_socket
        | libc::SYS_bind
        | libc::SYS_connect
        | libc::SYS_listen
        | libc::SYS_shutdown
        | libc::SYS_accept
        | libc::SYS_accept4
        | libc::SYS_getsockname
        | libc::SYS_getpeername
        | libc::SYS_sendto
        | libc::SYS_recvfrom
        | libc::SYS_setsockopt
        | libc::SYS_getsockopt => Family::Socket,
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_close
        | libc::SYS_dup
        | libc::SYS_fcntl
        | libc::SYS_ioctl
        | libc::SYS_fstat
        | libc::SYS_umask => Family::Descriptor,
        _ => Family::File,
    })
}

/// `F_CREATED_QUERY` (Linux 6.12): whether this open created the file.
pub const F_CREATED_QUERY: i32 = 1024 + 4;

/// Third argument of `fcntl(fd, cmd, arg)` by command. None: the command is
/// not forwarded (the client handles it, or it is unsupported: EINVAL).
///
/// F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD and F_SETFD are handled by the client's
/// descriptor table and never reach a domain.
pub fn fcntl_arg(cmd: u64) -> Option<Arg> {
    let cmd = cmd as i32;
    Some(match cmd {
        libc::F_GETFL | libc::F_SETFL | libc::F_GETOWN | libc::F_SETOWN | 10 /* F_SETSIG */ | 11 /* F_GETSIG */
        | libc::F_GETLEASE | libc::F_SETLEASE | libc::F_NOTIFY | libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ
        | libc::F_ADD_SEALS | libc::F_GET_SEALS | F_CREATED_QUERY => Val,
        // The kernel only reads the lock description to set a lock (it may
        // be read-only memory) and writes it back for a query.
        libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => In(FLOCK),
        libc::F_GETLK | libc::F_OFD_GETLK => InOut(FLOCK),
        16 /* F_GETOWN_EX */ => Out(F_OWNER_EX),
        15 /* F_SETOWN_EX */ => In(F_OWNER_EX),
        // F_GET_RW_HINT, F_SET_RW_HINT, F_GET_FILE_RW_HINT, F_SET_FILE_RW_HINT
        1035 | 1037 => Out(RW_HINT),
        1036 | 1038 => In(RW_HINT),
        _ => return None,
    })
}

/// Third argument of `ioctl(fd, request, arg)` for the requests a domain
/// serves. None: not forwarded (ENOTTY).
///
/// This is an allow-list on purpose: decoding any `_IOC` request by its
/// size would forward requests whose structs carry pointers or descriptors
/// (FICLONE passes an fd by value, FIEMAP a flexible array), which would make
/// the domain's kernel follow numbers from the client.
pub fn ioctl_arg(request: u64) -> Option<Arg> {
    const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
    const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
    const FS_IOC_GETVERSION: u32 = 0x8008_7601;
    const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
    const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
    const FIGETBSZ: u32 = 2;
    const BLKGETSIZE64: u32 = 0x8008_1272;
    const BLKSSZGET: u32 = 0x1268;
    // The kernel takes the request as 32 bits.
    let req = request as u32;
    Some(match req {
        r if r as libc::c_ulong == libc::FIONREAD => Out(4),
        r if r as libc::c_ulong == libc::FIONBIO || r as libc::c_ulong == libc::FIOASYNC => In(4),
        // struct termios of the kernel: lets isatty() on a forwarded file say ENOTTY.
        r if r as libc::c_ulong == libc::TCGETS => Out(36),
        FS_IOC_GETFLAGS | FS_IOC_GETVERSION | BLKGETSIZE64 => Out(8),
        FS_IOC_SETFLAGS => In(8),
        FS_IOC_FSGETXATTR => Out(28),
        FS_IOC_FSSETXATTR => In(28),
        FIGETBSZ | BLKSSZGET => Out(4),
        // Socket queries: SIOCATMARK, SIOCOUTQ (TIOCOUTQ), SIOCOUTQNSD.
        0x8905 | 0x5411 | 0x894b => Out(4),
        // SIOCGSTAMP, SIOCGSTAMPNS (64-bit timeval / timespec).
        0x8906 | 0x8907 => Out(16),
        r if ifreq_get(r) => InOut(IFREQ),
        r if ifreq_set(r) => In(IFREQ),
        _ => return None,
    })
}

/// `sizeof(struct ifreq)`: a 16-byte name and a 24-byte union.
pub const IFREQ: u16 = 40;

/// Interface queries that work on any socket and whose `struct ifreq`
/// union holds numbers, a name or an address (never `ifr_data`, a
/// pointer): SIOCGIFNAME, SIOCGIF{FLAGS,ADDR,DSTADDR,BRDADDR,NETMASK,
/// METRIC}, SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX, SIOCGIFPFLAGS,
/// SIOCGIFTXQLEN, SIOCGIFMAP. The kernel copies the whole struct in and
/// out. Not SIOCGIFCONF (`struct ifconf` points to the array).
pub fn ifreq_get(req: u32) -> bool {
    matches!(
        req,
        0x8910
            | 0x8913
            | 0x8915
            | 0x8917
            | 0x8919
            | 0x891b
            | 0x891d
            | 0x8921
            | 0x8927
            | 0x8933
            | 0x8935
            | 0x8942
            | 0x8970
    )
}

/// Interface changes with a plain `struct ifreq` (the kernel reads the
/// whole struct and writes nothing back): SIOCSIF{FLAGS,BRDADDR,NETMASK,
/// METRIC,MTU,NAME,HWADDR,PFLAGS,HWBROADCAST,TXQLEN,MAP},
/// SIOC{ADD,DEL}MULTI. They need CAP_NET_ADMIN over the domain's network
/// namespace, which its kernel checks against the caller's effective
/// capabilities (EPERM otherwise, as natively). Not SIOCSIFADDR,
/// SIOCSIFDSTADDR, SIOCDIFADDR: on an IPv6 socket they take the smaller
/// `struct in6_ifreq`.
pub fn ifreq_set(req: u32) -> bool {
    matches!(
        req,
        0x8914
            | 0x891a
            | 0x891c
            | 0x891e
            | 0x8922
            | 0x8923
            | 0x8924
            | 0x8931
            | 0x8932
            | 0x8934
            | 0x8937
            | 0x8943
            | 0x8971
    )
}

/// Encode a NULL pointer for a nullable slot.
pub fn null_arg() -> u64 {
    NULL_ARG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_length_refers_to_a_scalar_slot() {
        for nr in 0..1024u16 {
            let Some(sh) = shape(nr) else { continue };
            for a in sh {
                if let InBuf(n) | OutBuf(n) = a {
                    assert_eq!(
                        sh[n as usize], Val,
                        "syscall {nr}: length slot {n} must be a scalar"
                    );
                }
            }
        }
    }

    #[test]
    fn interface_ioctls_without_pointers_only() {
        assert_eq!(ioctl_arg(libc::SIOCGIFMTU), Some(InOut(IFREQ)));
        assert_eq!(ioctl_arg(libc::SIOCGIFINDEX), Some(InOut(IFREQ)));
        assert_eq!(ioctl_arg(libc::SIOCSIFMTU), Some(In(IFREQ)));
        assert_eq!(ioctl_arg(libc::SIOCSIFFLAGS), Some(In(IFREQ)));
        // ifconf points to its array; ifr_data requests carry pointers;
        // in6_ifreq is smaller than ifreq.
        for req in [
            libc::SIOCGIFCONF,
            0x8946, /* SIOCETHTOOL */
            0x89b0, /* SIOCSHWTSTAMP */
            0x89f0, /* SIOCDEVPRIVATE */
            libc::SIOCSIFADDR,
            libc::SIOCDIFADDR,
            libc::SIOCSIFDSTADDR,
        ] {
            assert_eq!(ioctl_arg(req), None, "{req:#x}");
        }
    }

    #[test]
    fn dangerous_calls_have_no_shape() {
        for nr in [
            libc::SYS_execve,
            libc::SYS_mmap,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_clone,
            libc::SYS_mount,
        ] {
            assert!(shape(nr as u16).is_none(), "{nr} must not be forwardable");
        }
    }

    #[test]
    fn families_split_files_from_sockets() {
        assert_eq!(family(libc::SYS_openat as u16), Some(Family::File));
        assert_eq!(family(libc::SYS_connect as u16), Some(Family::Socket));
        assert_eq!(family(libc::SYS_read as u16), Some(Family::Descriptor));
        assert_eq!(family(libc::SYS_execve as u16), None);
    }

    #[test]
    fn ioctl_decoding() {
        assert_eq!(ioctl_arg(libc::FIONREAD), Some(Out(4)));
        // FS_IOC_GETFLAGS = _IOR('f', 1, long)
        assert_eq!(ioctl_arg(0x8008_6601), Some(Out(8)));
        assert_eq!(ioctl_arg(0x5402 /* TCSETS */), None);
        assert_eq!(ioctl_arg(0x4004_9409 /* FICLONE: an fd by value */), None);
        assert_eq!(
            ioctl_arg(0xc020_660b /* FS_IOC_FIEMAP: flexible array */),
            None
        );
        assert_eq!(fcntl_arg(libc::F_SETLK as u64), Some(In(32)));
        assert_eq!(fcntl_arg(libc::F_GETLK as u64), Some(InOut(32)));
        assert_eq!(fcntl_arg(10 /* F_SETSIG */), Some(Val));
        assert_eq!(fcntl_arg(11 /* F_GETSIG */), Some(Val));
        assert_eq!(fcntl_arg(libc::F_DUPFD as u64), None);
    }
}
