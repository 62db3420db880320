//! Wakes across the VM boundary (`virtuos_abi::slot::Bell`), relayed by the
//! daemon over the VM's bell port (a virtio-serial port whose host side is
//! a unix socket).
//!
//! - Down: a client that finds the domain's workers asleep bumps its
//!   region's `doorbell` (or `interrupt_bell`) and does a futex wake that
//!   no guest thread can hear. One thread here waits on every slot's two
//!   words at once (`futex_waitv`, shared futexes: the daemon maps the
//!   same memfds) and sends a bell per changed word; PID 1 in the guest
//!   turns it into the futex wake there.
//! - Up: a guest worker that completes a call whose caller sleeps sends
//!   `Complete { slot, entry }`; another thread here does the host futex
//!   wake on that entry. Bells are checked like everything else that comes
//!   from the guest: unknown slots and entries are dropped.
//!
//! Both threads end when the VM's side of the socket closes or the pool
//! is dropped by the domain (`Relay::stop`).

use super::slots::SlotPool;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use virtuos_abi::region::StatePage;
use virtuos_abi::slot::{Bell, BellReader};

/// Longest `futex_waitv` sleep, so that a stopped relay ends soon.
const WATCH_SLICE: Duration = Duration::from_millis(500);

/// The two relay threads of one VM.
pub struct Relay {
    stop: Arc<AtomicBool>,
    stream: UnixStream,
}

impl Relay {
    /// Start relaying bells for `pool` over `stream`.
    pub fn start(
        pool: Arc<SlotPool>,
        stream: UnixStream,
        heartbeat: Arc<StatePage>,
    ) -> io::Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let (up, down) = (stream.try_clone()?, stream.try_clone()?);
        let p = Arc::clone(&pool);
        std::thread::Builder::new()
            .name("bells-up".into())
            .spawn(move || relay_up(&p, up, &heartbeat))?;
        let s = Arc::clone(&stop);
        // Values as of now: a bell rung from here on is relayed.
        let seen: Vec<u32> = watched(&pool)
            .iter()
            .map(|(_, w)| w.load(Ordering::SeqCst))
            .collect();
        std::thread::Builder::new()
            .name("bells-down".into())
            .spawn(move || relay_down(&pool, down, seen, &s))?;
        Ok(Relay { stop, stream })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Guest -> host: futex wakes for completed calls, heartbeats.
fn relay_up(pool: &SlotPool, mut stream: UnixStream, heartbeat: &StatePage) {
    let mut reader = BellReader::default();
    let mut bad = 0u64;
    loop {
        let n = match stream.read(reader.space()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("bell port: {e}");
                break;
            }
        };
        reader.filled(n, &mut |bell| {
            let entry = match bell {
                Ok(Bell::Complete { slot, entry }) => pool.entry(slot as u32, entry),
                Ok(Bell::Heartbeat) => {
                    heartbeat.get().heartbeat.fetch_add(1, Ordering::Release);
                    return;
                }
                _ => None,
            };
            match entry {
                Some(e) => virtuos_abi::doorbell::wake(&e.state, 1),
                None => {
                    bad += 1;
                    if bad == 1 {
                        tracing::warn!(bell = ?bell, "bad bell from the VM (dropped)");
                    }
                }
            }
        });
    }
    tracing::debug!(bad, "up-bell relay ended");
}

/// (bell to send, word) for every slot the guest reported.
fn watched(pool: &SlotPool) -> Vec<(Bell, &AtomicU32)> {
    (0..pool.count() as u32)
        .filter_map(|i| Some((i as u8, pool.header(i)?)))
        .flat_map(|(slot, h)| {
            [
                (Bell::Doorbell { slot }, &h.doorbell),
                (Bell::Interrupt { slot }, &h.interrupt_bell),
            ]
        })
        .collect()
}

/// Host -> guest: watch every slot's doorbell and interrupt bell; `last`
/// holds their values when the relay started.
fn relay_down(pool: &SlotPool, mut stream: UnixStream, mut last: Vec<u32>, stop: &AtomicBool) {
    let words = watched(pool);
    let mut out = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let waiters: Vec<futex::Wait> = words
            .iter()
            .zip(&last)
            .map(|((_, word), &val)| {
                let mut w = futex::Wait::new();
                w.val = val as u64;
                w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
                w.flags = futex::WaitFlags::SIZE_U32;
                w
            })
            .collect();
        let deadline = deadline_after(WATCH_SLICE);
        // Woken, a value already differs (EAGAIN), or the slice passed:
        // look at every word either way.
        let _ = futex::waitv(
            &waiters,
            futex::WaitvFlags::empty(),
            Some(&deadline),
            ClockId::Monotonic,
        );
        out.clear();
        for (i, (bell, word)) in words.iter().enumerate() {
            let now = word.load(Ordering::SeqCst);
            if now != last[i] {
                last[i] = now;
                out.extend_from_slice(&bell.encode());
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            break;
        }
    }
    tracing::debug!("down-bell relay ended");
}

fn deadline_after(d: Duration) -> Timespec {
    let now = rustix::time::clock_gettime(ClockId::Monotonic);
    let nanos = now.tv_nsec as u64 + d.subsec_nanos() as u64;
    Timespec {
        tv_sec: now.tv_sec + d.as_secs() as i64 + (nanos / 1_000_000_000) as i64,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtuos_abi::control::SlotView;
    use virtuos_abi::slot::BELL_SIZE;

    /// Both directions over a socketpair standing in for the bell port.
    #[test]
    fn bells_are_relayed_both_ways_and_garbage_is_dropped() {
        let pool = Arc::new(SlotPool::create(2).unwrap());
        let views: Vec<SlotView> = (0..2).map(|slot| SlotView { slot, offset: 8192 }).collect();
        pool.set_views(&views).unwrap();
        let lease = pool.lease(1).unwrap();
        let (ours, mut guest) = UnixStream::pair().unwrap();
        let memfd = virtuos_abi::mapping::create_memfd("hb", virtuos_abi::STATE_SIZE).unwrap();
        let heartbeat = Arc::new(StatePage::map(&memfd, true).unwrap());
        let relay = Relay::start(Arc::clone(&pool), ours, Arc::clone(&heartbeat)).unwrap();
        guest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        // Down: the client rings its doorbell.
        let region = virtuos_abi::ClientRegion::map_at(lease.fd(), lease.region_offset()).unwrap();
        region.header().doorbell.fetch_add(1, Ordering::SeqCst);
        virtuos_abi::doorbell::wake(&region.header().doorbell, 1);
        let mut b = [0u8; BELL_SIZE];
        guest.read_exact(&mut b).unwrap();
        assert_eq!(
            Bell::decode(b),
            Some(Bell::Doorbell {
                slot: lease.index() as u8
            })
        );
        region.request_interrupt(3);
        guest.read_exact(&mut b).unwrap();
        assert_eq!(
            Bell::decode(b),
            Some(Bell::Interrupt {
                slot: lease.index() as u8
            })
        );

        // Up: a caller sleeps on entry 5; garbage first, then the real bell.
        let entry = region.entry(5).unwrap();
        let waiter = {
            let state = entry.state.load(Ordering::SeqCst);
            let p = Arc::clone(&pool);
            let slot = lease.index();
            std::thread::spawn(move || {
                let e = p.entry(slot, 5).unwrap();
                let t0 = std::time::Instant::now();
                virtuos_abi::doorbell::wait(&e.state, state, Some(Duration::from_secs(10)));
                t0.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        guest.write_all(&[9, 9, 9, 9]).unwrap();
        guest
            .write_all(
                &Bell::Complete {
                    slot: lease.index() as u8,
                    entry: 5,
                }
                .encode(),
            )
            .unwrap();
        guest.write_all(&Bell::Heartbeat.encode()).unwrap();
        let slept = waiter.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while heartbeat.get().heartbeat.load(Ordering::Acquire) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "heartbeat bell not counted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            slept < Duration::from_secs(5),
            "woken by the bell, not the timeout: {slept:?}"
        );
        relay.stop();
    }
}
