//! The quick version of the fuzz run (`cargo test`): every target for a
//! few thousand cases, so CI keeps the harness compiling and running. The
//! long run (>= 10^6 cases per target) is `bench/fuzz/run.sh`.

#[test]
fn every_target_survives_a_quick_run() {
    let cases: u64 = std::env::var("VIRTUOS_FUZZ_QUICK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut crashed = Vec::new();
    for spec in virtuos_fuzz::all() {
        let r = virtuos_fuzz::run(spec, 0x5eed, 0, cases);
        if r.crash_count > 0 {
            crashed.push(format!(
                "{}: {} crashes, first {:?}",
                r.name, r.crash_count, r.crashes[0]
            ));
        }
    }
    assert!(crashed.is_empty(), "{crashed:#?}");
}

#[test]
fn a_crashing_case_is_reported_and_replayable() {
    struct Boom;
    impl virtuos_fuzz::Target for Boom {
        fn case(&mut self, rng: &mut virtuos_fuzz::rng::Rng) {
            assert!(rng.below(4) != 0, "boom");
        }
    }
    let spec = virtuos_fuzz::Spec {
        name: "boom",
        what: "test",
        make: || Box::new(Boom),
    };
    let r = virtuos_fuzz::run(&spec, 1, 0, 400);
    assert!(
        r.crash_count > 50 && r.crash_count < 150,
        "{}",
        r.crash_count
    );
    let (case, msg) = &r.crashes[0];
    assert!(msg.contains("boom"), "{msg}");
    let again = virtuos_fuzz::run(&spec, 1, *case, 1);
    assert_eq!(again.crash_count, 1, "the case replays alone");
}
