//! The call itself: an entry and a chunk of the domain's region (from
//! `pools`), submit, wait (open to the program's signals), result.

use super::domain::{slot_of, DOMAIN_STORAGE, NUM_DOMAINS};
use super::pools::{with_cache, Cache, Pool, CHUNKS, EMPTY, ENTRIES, GEN, NONE, WAITERS};
use super::session::{self, Session};
use super::usermem::ChunkRef;
use super::{host, log, state};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use virtuos_abi::call::{submit_and_wait_with, WaitPolicy};

const EIO: i64 = -(libc::EIO as i64);

/// What a call on a descriptor of a failed domain returns (`fds::table`'s
/// stale entries): EIO for files, ENOTCONN for sockets.
pub fn stale_errno(domain: u8) -> i64 {
    if domain & !super::domain::STALE == super::domain::DOMAIN_NETWORK {
        -(libc::ENOTCONN as i64)
    } else {
        EIO
    }
}

/// What a call in flight returns when its domain fails: EIO for files,
/// ECONNRESET for sockets.
pub fn gone_errno(domain: u8) -> i64 {
    if domain == super::domain::DOMAIN_NETWORK {
        -(libc::ECONNRESET as i64)
    } else {
        EIO
    }
}

/// The sleep of a waiting caller, open to the program's signals: a signal
/// runs the program's handler and, without SA_RESTART, makes the futex wait
/// return EINTR — then the call is interrupted in the domain (it answers
/// EINTR, or its real result if it had finished). Under SA_RESTART the
/// kernel restarts the wait and the call simply goes on, as natively.
pub fn interruptible_sleep(word: &AtomicU32, expected: u32, slice: core::time::Duration) -> bool {
    sleep_with_mask(None, word, expected, slice)
}

/// `interruptible_sleep` with `mask` installed instead of the program's
/// (epoll_pwait's and ppoll's own masks).
pub fn sleep_with_mask(
    mask: Option<u64>,
    word: &AtomicU32,
    expected: u32,
    slice: core::time::Duration,
) -> bool {
    let ts = rustix::time::Timespec {
        tv_sec: slice.as_secs() as i64,
        tv_nsec: slice.subsec_nanos() as i64,
    };
    let (r, interrupted) = crate::sys::thread::with_program_signals(mask, || {
        rustix::thread::futex::wait(
            word,
            rustix::thread::futex::Flags::empty(),
            expected,
            Some(&ts),
        )
    });
    r == Err(rustix::io::Errno::INTR) || interrupted
}

fn acquire_wait<const W: usize>(
    pool: &Pool<W>,
    k: usize,
    sess: &Session,
    domain: u8,
) -> Result<u16, i64> {
    if let Some(i) = pool.acquire() {
        return Ok(i);
    }
    WAITERS[k].fetch_add(1, Ordering::AcqRel);
    let mut result = Err(-(libc::EAGAIN as i64));
    // About 30 s at most; a dead domain ends it at once.
    for round in 0..30_000u32 {
        if let Some(i) = pool.acquire() {
            result = Ok(i);
            break;
        }
        if !sess.usable() {
            result = Err(gone_errno(domain));
            break;
        }
        if round < 64 {
            host::sched_yield();
        } else {
            host::sleep_ms(1);
        }
    }
    WAITERS[k].fetch_sub(1, Ordering::AcqRel);
    result
}

fn policy() -> WaitPolicy {
    WaitPolicy {
        spin: state::config().spin,
        sleep_slice: std::time::Duration::from_millis(100),
        deadline: None,
    }
}

static REPORTED_GONE: [AtomicBool; NUM_DOMAINS] = [const { AtomicBool::new(false) }; NUM_DOMAINS];

/// Where a call goes: a domain, and for a call on a descriptor the epoch
/// the descriptor was made in (the session must be of that epoch, or the
/// descriptor died with an older incarnation of the domain).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub domain: u8,
    pub epoch: Option<u16>,
}

impl From<u8> for Target {
    fn from(domain: u8) -> Target {
        Target {
            domain,
            epoch: None,
        }
    }
}

/// One thread's use of an entry and a chunk, for one or more calls.
pub struct Call {
    sess: &'static Session,
    domain: u8,
    slot: usize,
    entry: u16,
    chunk: u16,
    seq: u16,
    tid: u32,
    gen: u32,
    poisoned: bool,
    /// Started and not finished: the entry is still the domain's.
    in_flight: bool,
}

/// How a started call stands after `Call::poll_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    Done,
    Pending,
    /// A signal interrupted the sleep (the program's handler ran).
    Signal,
}

impl Call {
    /// Get the session of `domain` (registering if needed), an entry and
    /// a chunk of its region.
    pub fn begin(target: impl Into<Target>) -> Result<Call, i64> {
        let Target { domain, epoch } = target.into();
        let k = slot_of(domain).ok_or_else(|| stale_errno(domain))?;
        let sess = match session::current(domain) {
            Some(s) if s.usable() => s,
            // Slow path only: a descriptor of a failed session fails now
            // rather than after waiting for the restarted domain.
            _ if epoch.is_some_and(|e| session::epoch_over(domain, e)) => {
                return Err(stale_errno(domain))
            }
            _ => session_of(domain)?,
        };
        if epoch.is_some_and(|e| e != sess.epoch) {
            // The descriptor's domain failed and was replaced meanwhile.
            return Err(stale_errno(domain));
        }
        let gen = GEN[k].load(Ordering::Acquire);
        let mut c = with_cache(k, |c| c.replace(EMPTY)).unwrap_or(EMPTY);
        if c.gen != gen {
            // Indices of an older session: not ours to release.
            c.entry = NONE;
            c.chunk = NONE;
        }
        if c.tid == 0 || c.gen != gen {
            c.tid = host::gettid();
        }
        let entry = match c.entry {
            NONE => acquire_wait(&ENTRIES[k], k, sess, domain)?,
            e => e,
        };
        let chunk = match c.chunk {
            NONE => match acquire_wait(&CHUNKS[k], k, sess, domain) {
                Ok(ch) => ch,
                Err(e) => {
                    ENTRIES[k].release(entry);
                    return Err(e);
                }
            },
            ch => ch,
        };
        Ok(Call {
            sess,
            domain,
            slot: k,
            entry,
            chunk,
            seq: c.seq,
            tid: c.tid,
            gen,
            poisoned: false,
            in_flight: false,
        })
    }

    pub fn session(&self) -> &'static Session {
        self.sess
    }

    /// The domain this call talks to.
    pub fn domain(&self) -> u8 {
        self.domain
    }

    pub fn chunk(&self) -> Option<ChunkRef<'static>> {
        ChunkRef::new(&self.sess.region, self.chunk)
    }

    /// Submit `op` with `args` (pointer slots already chunk offsets) and
    /// wait. The result is only range-checked here (a raw result of the
    /// domain below -4095 is a lie: EIO).
    pub fn invoke(&mut self, op: u16, args: [u64; 6], with_chunk: bool) -> Result<(i64, u64), i64> {
        self.invoke_with(op, args, with_chunk, &mut interruptible_sleep)
    }

    /// `invoke` whose sleep is closed to the program's signals (they stay
    /// blocked, as in the SIGSYS handler, and are delivered after the call):
    /// for calls that must not be cut short, like a fork's preparation.
    pub fn invoke_uninterruptible(
        &mut self,
        op: u16,
        args: [u64; 6],
        with_chunk: bool,
    ) -> Result<(i64, u64), i64> {
        self.invoke_with(op, args, with_chunk, &mut plain_sleep)
    }

    fn invoke_with(
        &mut self,
        op: u16,
        args: [u64; 6],
        with_chunk: bool,
        sleep: &mut virtuos_abi::call::Sleeper<'_>,
    ) -> Result<(i64, u64), i64> {
        if self.poisoned {
            return Err(EIO);
        }
        let entry = self.sess.region.entry(self.entry).ok_or(EIO)?;
        self.seq = self.seq.wrapping_add(1);
        entry.fill(
            op,
            self.seq,
            self.tid,
            with_chunk.then_some(self.chunk),
            args,
        );
        match submit_and_wait_with(
            &self.sess.region,
            self.sess.state.get(),
            self.entry,
            policy(),
            sleep,
        ) {
            Ok((r, extra)) if r >= -4095 => Ok((r, extra)),
            Ok((r, _)) => {
                self.garbage(&format!("result {r:#x} of op {op}"));
                Err(EIO)
            }
            Err(e) => {
                // The entry (and chunk) may still be in the domain's hands.
                self.poisoned = true;
                log::once(
                    &REPORTED_GONE[self.slot],
                    format_args!(
                        "the {} domain stopped answering ({e:?}); its calls fail",
                        session::name(self.domain)
                    ),
                );
                Err(gone_errno(self.domain))
            }
        }
    }

    /// Submit `op` without waiting (a call to wait for in several places
    /// at once): then `poll_wait` / `interrupt` / `finish`.
    pub fn start(&mut self, op: u16, args: [u64; 6], with_chunk: bool) -> Result<(), i64> {
        if self.poisoned {
            return Err(EIO);
        }
        let entry = self.sess.region.entry(self.entry).ok_or(EIO)?;
        self.seq = self.seq.wrapping_add(1);
        entry.fill(
            op,
            self.seq,
            self.tid,
            with_chunk.then_some(self.chunk),
            args,
        );
        if self.sess.region.submit(self.entry).is_err() {
            self.poisoned = true;
            return Err(EIO);
        }
        // Until `finish` the entry is the domain's: a drop leaks it.
        self.in_flight = true;
        self.sess.region.ring_if_idle(self.sess.state.get());
        Ok(())
    }

    /// Whether the started call has completed.
    pub fn is_done(&self) -> bool {
        self.sess
            .region
            .entry(self.entry)
            .is_some_and(|e| e.is_done())
    }

    /// Wait up to `slice` for the started call, with `sleep` (the
    /// interruptible sleep of `interruptible_sleep`'s kind: true = a signal
    /// interrupted it). Spins `spin` polls first.
    pub fn poll_wait(
        &mut self,
        spin: u32,
        slice: core::time::Duration,
        sleep: &mut dyn FnMut(&AtomicU32, u32, core::time::Duration) -> bool,
    ) -> Started {
        let Some(entry) = self.sess.region.entry(self.entry) else {
            return Started::Done;
        };
        for _ in 0..spin {
            if entry.is_done() {
                return Started::Done;
            }
            core::hint::spin_loop();
        }
        if slice.is_zero() {
            return if entry.is_done() {
                Started::Done
            } else {
                Started::Pending
            };
        }
        let Some(val) = entry.mark_sleeping() else {
            return Started::Done;
        };
        let signal = sleep(
            &entry.state,
            val,
            slice.min(core::time::Duration::from_millis(100)),
        );
        if entry.is_done() {
            Started::Done
        } else if signal {
            Started::Signal
        } else {
            Started::Pending
        }
    }

    /// Announce that we are about to sleep on the started call some other
    /// way than `poll_wait` (`wake`): the word and the value to wait on,
    /// or None once the call has completed.
    pub fn sleep_word(&self) -> Option<(&'static AtomicU32, u32)> {
        let entry = self.sess.region.entry(self.entry)?;
        let v = entry.mark_sleeping()?;
        Some((&entry.state, v))
    }

    /// Ask the domain to interrupt the started call (it answers EINTR, or
    /// its result if it had finished).
    pub fn interrupt(&self) {
        self.sess.region.request_interrupt(self.entry);
    }

    /// Wait (uninterruptibly) for the started call and take its result.
    pub fn finish(&mut self) -> Result<(i64, u64), i64> {
        if !self.in_flight {
            return Err(EIO);
        }
        let Some(entry) = self.sess.region.entry(self.entry) else {
            return Err(EIO);
        };
        let state = self.sess.state.get();
        let mut plain = |w: &AtomicU32, v: u32, d: core::time::Duration| {
            virtuos_abi::doorbell::wait(w, v, Some(d));
            false
        };
        loop {
            match self.poll_wait(
                policy().spin,
                core::time::Duration::from_millis(100),
                &mut plain,
            ) {
                Started::Done => break,
                _ if !state.serving() => {
                    self.poisoned = true;
                    log::once(
                        &REPORTED_GONE[self.slot],
                        format_args!(
                            "the {} domain stopped answering; its calls fail",
                            session::name(self.domain)
                        ),
                    );
                    return Err(gone_errno(self.domain));
                }
                _ => {}
            }
        }
        self.in_flight = false;
        let (r, extra) = entry.result();
        entry.release();
        if r < -4095 {
            self.garbage(&format!("result {r:#x}"));
            return Err(EIO);
        }
        Ok((r, extra))
    }

    /// The domain answered something no domain may answer: fail the call
    /// (the caller returns EIO), stop using the session, tell the daemon.
    pub fn garbage(&self, what: &str) {
        session::report_garbage(self.domain, self.sess, what);
    }

    /// Whether the domain still serves this call's region.
    pub fn serving(&self) -> bool {
        self.sess.state.get().serving()
    }

    /// `invoke` returning the raw result, errors as -errno.
    pub fn result(&mut self, op: u16, args: [u64; 6], with_chunk: bool) -> i64 {
        match self.invoke(op, args, with_chunk) {
            Ok((r, _)) => r,
            Err(e) => e,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let k = self.slot;
        if self.in_flight {
            self.poisoned = true;
        }
        if self.poisoned || self.gen != GEN[k].load(Ordering::Acquire) {
            // Leak: the domain may still use them / they belong to an old
            // session. Keep the sequence number going.
            let (seq, tid) = (self.seq, self.tid);
            let _ = with_cache(k, |c| {
                let mut cur = c.get();
                cur.seq = seq;
                cur.tid = tid;
                c.set(cur)
            });
            return;
        }
        let me = Cache {
            gen: self.gen,
            entry: self.entry,
            chunk: self.chunk,
            seq: self.seq,
            tid: self.tid,
        };
        let kept = WAITERS[k].load(Ordering::Acquire) == 0
            && with_cache(k, |c| {
                if c.get().entry == NONE {
                    c.set(me);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if !kept {
            ENTRIES[k].release(self.entry);
            CHUNKS[k].release(self.chunk);
            let _ = with_cache(k, |c| {
                let mut cur = c.get();
                cur.seq = me.seq;
                cur.tid = me.tid;
                c.set(cur)
            });
        }
    }
}

/// Give a freshly registered storage shadow our current umask (the
/// `prime` of `session::get`).
pub fn sync_umask() {
    let cur = host::reissue(libc::SYS_umask as u64, [0o022, 0, 0, 0, 0, 0]);
    host::reissue(libc::SYS_umask as u64, [cur as u64, 0, 0, 0, 0, 0]);
    let _ = simple_call(
        DOMAIN_STORAGE,
        libc::SYS_umask as u16,
        [cur as u64 & 0o777, 0, 0, 0, 0, 0],
    );
}

/// The session of `domain` for a call, registering on first use
/// (`session::get`, primed with `sync_umask`).
pub fn session_of(domain: u8) -> Result<&'static Session, i64> {
    session::get(domain, sync_umask)
}

/// Close remote descriptor `rfd` through `call`.
pub fn remote_close(call: &mut Call, rfd: u64) -> i64 {
    call.result(libc::SYS_close as u16, [rfd, 0, 0, 0, 0, 0], false)
}

/// A call without data (virtual ops, close, fsync...) in `domain`:
/// -errno on failure.
pub fn simple_call(target: impl Into<Target>, op: u16, args: [u64; 6]) -> i64 {
    match Call::begin(target) {
        Ok(mut c) => c.result(op, args, false),
        Err(e) => e,
    }
}

/// `simple_call` that a signal does not interrupt (`invoke_uninterruptible`).
pub fn simple_call_uninterruptible(target: impl Into<Target>, op: u16, args: [u64; 6]) -> i64 {
    match Call::begin(target) {
        Ok(mut c) => match c.invoke_uninterruptible(op, args, false) {
            Ok((r, _)) => r,
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// A sleep closed to the program's signals (the caller's mask stays).
fn plain_sleep(word: &AtomicU32, expected: u32, slice: core::time::Duration) -> bool {
    let ts = rustix::time::Timespec {
        tv_sec: slice.as_secs() as i64,
        tv_nsec: slice.subsec_nanos() as i64,
    };
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        Some(&ts),
    );
    false
}
