//! The queue protocol across two real processes sharing one memfd: a forked
//! "domain" process completes calls that several client threads submit
//! concurrently, with the spin-then-sleep handshake. Every result must come
//! back to the thread that asked, none lost, none duplicated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use virtuos_abi::call::{self, WaitPolicy};
use virtuos_abi::mapping::create_memfd;
use virtuos_abi::region::StatePage;
use virtuos_abi::{ClientRegion, NUM_ENTRIES, REGION_SIZE, STATE_SIZE};

const THREADS: usize = 4;
const CALLS_PER_THREAD: u64 = 3000;

/// The fake domain: pop, claim, answer args[0] * 2 + 1, forever.
fn serve(region: &ClientRegion, state: &StatePage) -> ! {
    loop {
        match region.take_submitted() {
            Ok(Some(i)) => {
                let entry = region.entry(i).expect("index from list is in range");
                if let Some(req) = entry.claim() {
                    call::complete(entry, (req.args[0] * 2 + 1) as i64, req.task as u64);
                }
            }
            Ok(None) => region.worker_sleep(state.get(), Duration::from_millis(50)),
            Err(_) => std::process::abort(),
        }
    }
}

#[test]
fn concurrent_clients_and_a_domain_in_another_process() {
    let region_fd = create_memfd("two-process-region", REGION_SIZE).unwrap();
    let state_fd = create_memfd("two-process-state", STATE_SIZE).unwrap();
    let region = ClientRegion::map(&region_fd).unwrap();
    region.init();
    let state = StatePage::map(&state_fd, true).unwrap();
    state.get().init(1);

    // SAFETY: the child only touches the already-mapped shared memory and
    // calls async-signal-safe syscalls (futex) until it is killed.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        serve(&region, &state);
    }

    let next_entry = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let region = &region;
            let state = &state;
            let next_entry = &next_entry;
            s.spawn(move || {
                // Each thread owns a disjoint set of entries (the client's
                // private allocator does this in the preload library).
                let mine = next_entry.fetch_add(1, Ordering::Relaxed) as u16;
                assert!((mine as usize) < NUM_ENTRIES);
                // Alternate spinning and sleeping waits to exercise both.
                let policy = WaitPolicy {
                    spin: if t % 2 == 0 { 0 } else { 5000 },
                    ..Default::default()
                };
                for k in 0..CALLS_PER_THREAD {
                    let arg = (t as u64) << 32 | k;
                    region.entry(mine).unwrap().fill(
                        1,
                        k as u16,
                        t as u32,
                        None,
                        [arg, 0, 0, 0, 0, 0],
                    );
                    let (res, task) =
                        call::submit_and_wait(region, state.get(), mine, policy).unwrap();
                    assert_eq!(
                        res,
                        (arg * 2 + 1) as i64,
                        "thread {t} call {k} got someone else's result"
                    );
                    assert_eq!(task, t as u64);
                }
            });
        }
    });

    // SAFETY: plain kill/waitpid of our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
}
