//! A minimal io_uring, for one thread's mixed waits (`forward::wake`):
//! a futex wait on a request entry's state word (`IORING_OP_FUTEX_WAIT`,
//! Linux 6.7) next to one-shot polls of host descriptors, waited for with
//! one `io_uring_enter` (timeout and signal mask given to the kernel, as
//! ppoll does). Allocation-free; every system call goes through
//! [`super::raw::syscall6`] from this library's text.
//!
//! The ring's descriptor is registered with the thread
//! (`IORING_REGISTER_RING_FDS`) and closed at once: the program never sees
//! it in its descriptor table, cannot close it or dup over it, and
//! `io_uring_enter` finds the ring by its registered index. The two
//! mappings keep the ring alive until [`Ring::release`]; a registered ring
//! belongs to its thread (another thread, or a forked child, gets EBADF for
//! the index), which is why a ring is per thread.

use super::raw::syscall6;
use core::sync::atomic::{AtomicU32, Ordering};

const SYS_IO_URING_SETUP: u64 = 425;
const SYS_IO_URING_ENTER: u64 = 426;
const SYS_IO_URING_REGISTER: u64 = 427;

const SETUP_CLAMP: u32 = 1 << 4;
const SETUP_SUBMIT_ALL: u32 = 1 << 7;
const SETUP_COOP_TASKRUN: u32 = 1 << 8;

const FEAT_SINGLE_MMAP: u32 = 1 << 0;
const FEAT_NODROP: u32 = 1 << 1;
const FEAT_EXT_ARG: u32 = 1 << 8;

const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_EXT_ARG: u32 = 1 << 3;
const ENTER_REGISTERED_RING: u32 = 1 << 4;

const REGISTER_PROBE: u64 = 8;
const REGISTER_RING_FDS: u64 = 20;

const OFF_SQ_RING: u64 = 0;
const OFF_SQES: u64 = 0x1000_0000;

const OP_POLL_ADD: u8 = 6;
const OP_ASYNC_CANCEL: u8 = 14;
const OP_FUTEX_WAIT: u8 = 51;

const ASYNC_CANCEL_ALL: u32 = 1 << 0;
const ASYNC_CANCEL_ANY: u32 = 1 << 2;

/// `FUTEX2_SIZE_U32`, shared (not private): the domain wakes the entry's
/// word from another process through the same memfd.
const FUTEX2_SIZE_U32: i32 = 0x02;
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: u32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

const _: () = assert!(core::mem::size_of::<Params>() == 120);
const _: () = assert!(core::mem::size_of::<Sqe>() == 64);
const _: () = assert!(core::mem::size_of::<Cqe>() == 16);
const _: () = assert!(core::mem::size_of::<GeteventsArg>() == 24);

fn sys(nr: u64, args: [u64; 6]) -> i64 {
    // SAFETY: every caller here passes integers or pointers to live,
    // correctly sized memory of its own (structs above, the ring's
    // mappings), as the kernel interprets them for that call.
    unsafe { syscall6(nr, args) }
}

fn close(fd: i64) {
    sys(libc::SYS_close as u64, [fd as u64, 0, 0, 0, 0, 0]);
}

/// One thread's ring (plain data: it lives in a thread-local `Cell`).
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// The registered index of the ring (not a descriptor).
    index: u32,
    /// The thread that created and registered it.
    owner: i32,
    map: u64,
    map_len: u64,
    sqes: u64,
    sqes_len: u64,
    sq_head: u64,
    sq_tail: u64,
    sq_mask: u32,
    sq_entries: u32,
    cq_head: u64,
    cq_tail: u64,
    cq_mask: u32,
    cqes: u64,
    /// Our copy of the submission tail (published before each enter).
    tail: u32,
}

/// Why a ring could not be made: the kernel lacks something (no retry in
/// this process), or a transient failure (ENOMEM, EMFILE: try later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    Unsupported(i64),
    Transient(i64),
}

fn probe_supports(fd: i64, ops: &[u8]) -> bool {
    // struct io_uring_probe: last_op u8, ops_len u8, resv u16, resv2
    // [u32; 3], then `struct io_uring_probe_op` {op u8, resv u8, flags
    // u16, resv2 u32} per op.
    const N: usize = 64;
    let mut buf = [0u8; 16 + N * 8];
    let r = sys(
        SYS_IO_URING_REGISTER,
        [
            fd as u64,
            REGISTER_PROBE,
            buf.as_mut_ptr() as u64,
            N as u64,
            0,
            0,
        ],
    );
    if r < 0 {
        return false;
    }
    let last = buf[0] as usize;
    ops.iter().all(|&op| {
        let i = op as usize;
        i <= last && i < N && {
            let flags = u16::from_ne_bytes([buf[16 + i * 8 + 2], buf[16 + i * 8 + 3]]);
            flags & 1 != 0 // IO_URING_OP_SUPPORTED
        }
    })
}

impl Ring {
    /// A ring of `entries` submission slots for the calling thread `tid`.
    pub fn setup(entries: u32, tid: i32) -> Result<Ring, SetupError> {
        let mut p = Params {
            flags: SETUP_CLAMP | SETUP_SUBMIT_ALL | SETUP_COOP_TASKRUN,
            ..Params::default()
        };
        let fd = sys(
            SYS_IO_URING_SETUP,
            [entries as u64, &mut p as *mut Params as u64, 0, 0, 0, 0],
        );
        if fd < 0 {
            return Err(match -fd as i32 {
                libc::ENOMEM | libc::EMFILE | libc::ENFILE => SetupError::Transient(fd),
                _ => SetupError::Unsupported(fd),
            });
        }
        let need = FEAT_SINGLE_MMAP | FEAT_NODROP | FEAT_EXT_ARG;
        if p.features & need != need
            || !probe_supports(fd, &[OP_FUTEX_WAIT, OP_POLL_ADD, OP_ASYNC_CANCEL])
        {
            close(fd);
            return Err(SetupError::Unsupported(-(libc::ENOSYS as i64)));
        }
        let sq_len = p.sq_off.array as u64 + p.sq_entries as u64 * 4;
        let cq_len = p.cq_off.cqes as u64 + p.cq_entries as u64 * 16;
        let map_len = sq_len.max(cq_len);
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_SHARED | libc::MAP_POPULATE) as u64;
        let map = sys(
            libc::SYS_mmap as u64,
            [0, map_len, prot, flags, fd as u64, OFF_SQ_RING],
        );
        if map < 0 {
            close(fd);
            return Err(SetupError::Transient(map));
        }
        let sqes_len = p.sq_entries as u64 * 64;
        let sqes = sys(
            libc::SYS_mmap as u64,
            [0, sqes_len, prot, flags, fd as u64, OFF_SQES],
        );
        if sqes < 0 {
            sys(libc::SYS_munmap as u64, [map as u64, map_len, 0, 0, 0, 0]);
            close(fd);
            return Err(SetupError::Transient(sqes));
        }
        let map = map as u64;
        let ring = Ring {
            index: 0,
            owner: tid,
            map,
            map_len,
            sqes: sqes as u64,
            sqes_len,
            sq_head: map + p.sq_off.head as u64,
            sq_tail: map + p.sq_off.tail as u64,
            // SAFETY: offsets the kernel gave for this very mapping.
            sq_mask: unsafe { *((map + p.sq_off.ring_mask as u64) as *const u32) },
            sq_entries: p.sq_entries,
            cq_head: map + p.cq_off.head as u64,
            cq_tail: map + p.cq_off.tail as u64,
            // SAFETY: as above.
            cq_mask: unsafe { *((map + p.cq_off.ring_mask as u64) as *const u32) },
            cqes: map + p.cq_off.cqes as u64,
            tail: 0,
        };
        // The submission array maps slot i to SQE i, once and for all.
        let array = (map + p.sq_off.array as u64) as *mut u32;
        for i in 0..p.sq_entries {
            // SAFETY: the array has sq_entries u32 slots inside the mapping.
            unsafe { array.add(i as usize).write_volatile(i) };
        }
        let mut up = RsrcUpdate {
            offset: u32::MAX,
            resv: 0,
            data: fd as u64,
        };
        let r = sys(
            SYS_IO_URING_REGISTER,
            [
                fd as u64,
                REGISTER_RING_FDS,
                &mut up as *mut RsrcUpdate as u64,
                1,
                0,
                0,
            ],
        );
        // The mappings (and the registration) hold the ring from now on.
        close(fd);
        if r != 1 {
            ring.release();
            return Err(if r == -(libc::ENOMEM as i64) {
                SetupError::Transient(r)
            } else {
                SetupError::Unsupported(if r < 0 { r } else { -(libc::EIO as i64) })
            });
        }
        Ok(Ring {
            index: up.offset,
            ..ring
        })
    }

    /// The thread the ring belongs to.
    pub fn owner(&self) -> i32 {
        self.owner
    }

    /// Unmap the ring (the thread's registration goes with the thread, or
    /// at exec). Only in the thread that owns it, or in a forked child
    /// (whose copies of the mappings are its own).
    pub fn release(&self) {
        sys(
            libc::SYS_munmap as u64,
            [self.sqes, self.sqes_len, 0, 0, 0, 0],
        );
        sys(
            libc::SYS_munmap as u64,
            [self.map, self.map_len, 0, 0, 0, 0],
        );
    }

    fn atomic(addr: u64) -> &'static AtomicU32 {
        // SAFETY: `addr` is a ring index word inside our live mapping,
        // 4-byte aligned (kernel offsets); the kernel updates it
        // concurrently, hence atomic access.
        unsafe { &*(addr as *const AtomicU32) }
    }

    /// Slots free for new submissions.
    pub fn sq_space(&self) -> u32 {
        let head = Self::atomic(self.sq_head).load(Ordering::Acquire);
        self.sq_entries - self.tail.wrapping_sub(head)
    }

    fn push(&mut self, sqe: Sqe) -> bool {
        if self.sq_space() == 0 {
            return false;
        }
        let slot = self.tail & self.sq_mask;
        // SAFETY: slot < sq_entries, inside the SQE mapping; the kernel
        // reads this slot only after we publish the tail past it.
        unsafe { ((self.sqes + slot as u64 * 64) as *mut Sqe).write_volatile(sqe) };
        self.tail = self.tail.wrapping_add(1);
        true
    }

    /// Queue a one-shot poll of host descriptor `fd` for `events`.
    pub fn push_poll(&mut self, fd: i32, events: u32, user_data: u64) -> bool {
        self.push(Sqe {
            opcode: OP_POLL_ADD,
            fd,
            op_flags: events,
            user_data,
            ..Sqe::default()
        })
    }

    /// Queue a wait on the shared futex `word` while it holds `expected`.
    pub fn push_futex_wait(&mut self, word: &AtomicU32, expected: u32, user_data: u64) -> bool {
        self.push(Sqe {
            opcode: OP_FUTEX_WAIT,
            fd: FUTEX2_SIZE_U32,
            addr: word as *const AtomicU32 as u64,
            off: expected as u64,
            addr3: FUTEX_BITSET_MATCH_ANY,
            user_data,
            ..Sqe::default()
        })
    }

    /// Queue the cancellation of every request in flight.
    pub fn push_cancel_all(&mut self, user_data: u64) -> bool {
        self.push(Sqe {
            opcode: OP_ASYNC_CANCEL,
            fd: -1,
            op_flags: ASYNC_CANCEL_ALL | ASYNC_CANCEL_ANY,
            user_data,
            ..Sqe::default()
        })
    }

    /// Submit what is queued and wait for `min_complete` completions, at
    /// most `timeout` (None: no limit), with `sigmask` installed during the
    /// wait if given. Returns the kernel's result: the number submitted if
    /// anything was, else 0 or -errno of the wait (ETIME, EINTR).
    pub fn enter(
        &mut self,
        min_complete: u32,
        timeout: Option<core::time::Duration>,
        sigmask: Option<u64>,
    ) -> i64 {
        Self::atomic(self.sq_tail).store(self.tail, Ordering::Release);
        let head = Self::atomic(self.sq_head).load(Ordering::Acquire);
        let to_submit = self.tail.wrapping_sub(head);
        let ts = timeout.map(|t| [t.as_secs() as i64, t.subsec_nanos() as i64]);
        let mask = sigmask.unwrap_or(0);
        let arg = GeteventsArg {
            sigmask: if sigmask.is_some() {
                &mask as *const u64 as u64
            } else {
                0
            },
            sigmask_sz: 8,
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(0, |t| t.as_ptr() as u64),
        };
        let mut flags = ENTER_EXT_ARG | ENTER_REGISTERED_RING;
        if min_complete > 0 {
            flags |= ENTER_GETEVENTS;
        }
        sys(
            SYS_IO_URING_ENTER,
            [
                self.index as u64,
                to_submit as u64,
                min_complete as u64,
                flags as u64,
                &arg as *const GeteventsArg as u64,
                core::mem::size_of::<GeteventsArg>() as u64,
            ],
        )
    }

    /// The next completion: (user_data, result).
    pub fn pop(&mut self) -> Option<(u64, i32)> {
        let head = Self::atomic(self.cq_head).load(Ordering::Relaxed);
        let tail = Self::atomic(self.cq_tail).load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let slot = (head & self.cq_mask) as u64;
        // SAFETY: slot <= cq_mask, inside the CQE array of our mapping; the
        // kernel wrote it before publishing the tail (acquire above).
        let cqe = unsafe { ((self.cqes + slot * 16) as *const Cqe).read_volatile() };
        Self::atomic(self.cq_head).store(head.wrapping_add(1), Ordering::Release);
        Some((cqe.user_data, cqe.res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ring() -> Option<Ring> {
        match Ring::setup(8, crate::sys::kernel::gettid()) {
            Ok(r) => Some(r),
            Err(e) => {
                // Kernels before 6.7, or io_uring disabled: the preload
                // falls back to sliced waits (tested elsewhere).
                eprintln!("io_uring futex waits unavailable here: {e:?}");
                None
            }
        }
    }

    #[test]
    fn a_futex_wake_from_another_thread_completes_the_wait() {
        let Some(mut r) = ring() else { return };
        static WORD: AtomicU32 = AtomicU32::new(7);
        assert!(r.push_futex_wait(&WORD, 7, 1));
        let t = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            WORD.store(8, Ordering::Release);
            rustix::thread::futex::wake(&WORD, rustix::thread::futex::Flags::empty(), 1)
        });
        let start = Instant::now();
        assert_eq!(r.enter(0, None, None), 1, "submitted");
        let w = r.enter(1, Some(Duration::from_secs(5)), None);
        assert!(w >= 0 || w == -(libc::EINTR as i64), "wait: {w}");
        let mut got = None;
        while got.is_none() && start.elapsed() < Duration::from_secs(5) {
            got = r.pop();
            if got.is_none() {
                r.enter(1, Some(Duration::from_millis(100)), None);
            }
        }
        assert_eq!(got, Some((1, 0)));
        assert!(start.elapsed() >= Duration::from_millis(25));
        assert_eq!(t.join().unwrap(), Ok(1), "the wake found the ring's waiter");
        r.release();
    }

    #[test]
    fn a_changed_word_a_ready_pipe_a_timeout_and_cancellation() {
        let Some(mut r) = ring() else { return };
        // Value already changed: EAGAIN at once.
        let word = AtomicU32::new(1);
        assert!(r.push_futex_wait(&word, 2, 5));
        r.enter(1, Some(Duration::from_secs(1)), None);
        assert_eq!(r.pop(), Some((5, -(libc::EAGAIN))));
        // A poll of an empty pipe and a futex wait: nothing within 20 ms.
        let mut p = [0i32; 2];
        // SAFETY: pipe writes two descriptors into our array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        assert!(r.push_poll(p[0], libc::POLLIN as u32, 10));
        assert!(r.push_futex_wait(&word, 1, 11));
        let start = Instant::now();
        let w = r.enter(1, Some(Duration::from_millis(20)), None);
        assert!(w == 2 || w == -(libc::ETIME as i64), "enter: {w}");
        if w == 2 {
            // Submitted; the wait result is hidden: wait again.
            assert_eq!(
                r.enter(1, Some(Duration::from_millis(20)), None),
                -(libc::ETIME as i64)
            );
        }
        assert!(start.elapsed() >= Duration::from_millis(19));
        assert_eq!(r.pop(), None);
        // The pipe becomes ready: its poll completes.
        // SAFETY: one byte from our stack into our pipe.
        assert_eq!(unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) }, 1);
        r.enter(1, Some(Duration::from_secs(1)), None);
        let (ud, res) = r.pop().expect("the poll completed");
        assert_eq!(ud, 10);
        assert!(res & libc::POLLIN as i32 != 0);
        // Cancel the futex wait: its CQE and the cancel's.
        assert!(r.push_cancel_all(99));
        let mut seen = vec![];
        let start = Instant::now();
        while seen.len() < 2 && start.elapsed() < Duration::from_secs(2) {
            r.enter(1, Some(Duration::from_millis(100)), None);
            while let Some(c) = r.pop() {
                seen.push(c);
            }
        }
        seen.sort();
        assert_eq!(seen, vec![(11, -(libc::ECANCELED)), (99, 1)]);
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
        r.release();
    }
}
