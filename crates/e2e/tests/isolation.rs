//! Where forwarded files live (the domain's data dir, never the host's
//! /storage), persistence across daemon restarts, programs that never touch
//! /storage, exit codes and command-line errors of `virtuos run`.

use std::process::Command;
use std::time::Duration;
use virtuos_e2e::{assert_not_on_host, exec, Case, Domain, Run};

fn show(r: &Run) -> String {
    format!(
        "{}\n-- stdout --\n{}\n-- stderr --\n{}",
        r.status_text(),
        r.stdout(),
        r.stderr()
    )
}

#[test]
fn file_written_under_storage_lives_in_data_dir_and_not_on_host() {
    let d = Domain::start();
    d.watch_host(&["isolation-probe.txt", "iso-dir"]);
    let r = d.run_virtuos(
        "echo isolated-data > /storage/isolation-probe.txt && mkdir -p /storage/iso-dir/sub \
         && echo leaf > /storage/iso-dir/sub/f && cat /storage/isolation-probe.txt /storage/iso-dir/sub/f",
    );
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "isolated-data\nleaf\n"),
        "writing under /storage failed:\n{}\n{}",
        show(&r),
        d.diagnostics()
    );
    d.assert_in_domain("isolation-probe.txt");
    d.assert_in_domain("iso-dir/sub/f");
    assert_eq!(
        d.read_domain_file("isolation-probe.txt"),
        b"isolated-data\n"
    );
    assert_eq!(d.read_domain_file("iso-dir/sub/f"), b"leaf\n");
    assert_not_on_host("iso-dir");
    // A host program (not under virtuos) does not see it at /storage.
    let mut c = Command::new("cat");
    c.arg("/storage/isolation-probe.txt");
    let host = exec(&mut c, None, Duration::from_secs(10), true);
    assert_ne!(
        host.code(),
        0,
        "a host program read the domain's file at /storage:\n{}",
        show(&host)
    );
}

#[test]
fn file_placed_in_data_dir_is_visible_under_storage() {
    let d = Domain::start();
    let dir = d.storage_dir();
    std::fs::create_dir_all(dir.join("seeded")).unwrap();
    std::fs::write(dir.join("seeded/by-host.txt"), "seeded by the test\n").unwrap();
    let r = d.run_virtuos("cat /storage/seeded/by-host.txt && ls /storage/seeded");
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "seeded by the test\nby-host.txt\n"),
        "the domain does not serve its data dir at /storage:\n{}\n{}",
        show(&r),
        d.diagnostics()
    );
}

#[test]
fn data_persists_across_down_and_up() {
    let mut d = Domain::start();
    d.watch_host(&["p"]);
    let r = d.run_virtuos(
        "mkdir -p /storage/p && seq 1 1000 > /storage/p/numbers && echo kept > /storage/p/note",
    );
    assert_eq!(
        r.code(),
        0,
        "write failed:\n{}\n{}",
        show(&r),
        d.diagnostics()
    );
    d.down();
    d.assert_in_domain("p/note");
    assert_eq!(d.read_domain_file("p/note"), b"kept\n");
    d.up();
    let r = d.run_virtuos(
        "cat /storage/p/note && wc -l < /storage/p/numbers && tail -1 /storage/p/numbers",
    );
    assert_eq!(
        (r.code(), r.stdout().as_str()),
        (0, "kept\n1000\n1000\n"),
        "data did not survive down/up:\n{}\n{}",
        show(&r),
        d.diagnostics()
    );
}

#[test]
fn program_not_using_storage_gives_native_output() {
    let c = Case::new(
        r#"
        ls /usr/bin | head -n 5
        sh -c 'echo $((1+2))'
        echo host-data > "$TMP/host-file"
        cat "$TMP/host-file"
        ls "$TMP"
        pwd
        uname -s
        printf '%s\n' c a b | sort
        cat /etc/hostname > /dev/null && echo "host /etc readable"
        "#,
    )
    .needs(&["ls", "head", "sh", "uname", "sort"])
    .native_contains("3\n")
    .check();
    // Host paths stay on the host.
    let f = c.virt.tmp.join("host-file");
    assert_eq!(
        std::fs::read_to_string(&f).ok().as_deref(),
        Some("host-data\n"),
        "{} should be a host file",
        f.display()
    );
}

#[test]
fn exit_code_of_the_command_propagates() {
    let d = Domain::start();
    d.watch_host(&["e"]);
    for (argv, want) in [
        (&["sh", "-c", "exit 7"][..], 7),
        (&["sh", "-c", "exit 0"][..], 0),
        (&["sh", "-c", "exit 255"][..], 255),
        (&["false"][..], 1),
        (&["sh", "-c", "echo x > /storage/e && exit 42"][..], 42),
        // Death by SIGTERM: 143 whether virtuos re-raises the signal or exits 128+15.
        (&["sh", "-c", "kill -TERM $$"][..], 143),
    ] {
        let r = d.run(argv);
        assert_eq!(
            r.code(),
            want,
            "virtuos run -- {argv:?}:\n{}\n{}",
            show(&r),
            d.diagnostics()
        );
    }
}

#[test]
fn run_without_command_is_a_clear_error() {
    let d = Domain::start();
    for args in [
        &["run"][..],
        &["run", "--"][..],
        &["run", "--storage-mount", "/storage"][..],
    ] {
        let r = d.virtuos(args, Duration::from_secs(30));
        let err = r.stderr().to_lowercase();
        assert!(
            !r.timed_out && r.code() != 0 && (err.contains("usage") || err.contains("command")),
            "`virtuos {}` should fail with a usage error mentioning the missing command:\n{}",
            args.join(" "),
            show(&r)
        );
    }
}

#[test]
fn run_of_nonexistent_program_exits_127() {
    let d = Domain::start();
    for prog in ["/nonexistent", "no-such-command-virtuos-e2e"] {
        let r = d.run(&[prog]);
        assert!(
            r.code() == 127 && r.stderr().contains(prog),
            "`virtuos run -- {prog}` should exit 127 and name the program on stderr:\n{}",
            show(&r)
        );
    }
}

#[test]
fn status_reports_the_running_daemon() {
    let d = Domain::start();
    let r = d.virtuos(&["status"], Duration::from_secs(30));
    assert_eq!(r.code(), 0, "virtuos status:\n{}", show(&r));
    let r = d.virtuos(&["status", "--json"], Duration::from_secs(30));
    let out = r.stdout();
    let t = out.trim();
    assert!(
        r.code() == 0 && t.starts_with('{') && t.ends_with('}') && t.contains("storage"),
        "virtuos status --json should print a JSON object naming the storage domain:\n{}",
        show(&r)
    );
}

#[test]
fn concurrent_clients_share_the_domain() {
    let d = Domain::start();
    d.watch_host(&["shared"]);
    let r = d.run_virtuos("mkdir /storage/shared");
    assert_eq!(r.code(), 0, "{}\n{}", show(&r), d.diagnostics());
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    d.run_virtuos(&format!(
                        "for j in $(seq 1 200); do echo {i}-$j >> /storage/shared/log; done; seq 1 {i}000 > /storage/shared/own-{i}"
                    ))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert_eq!(
            r.code(),
            0,
            "a concurrent client failed:\n{}\n{}",
            show(r),
            d.diagnostics()
        );
    }
    let r = d.run_virtuos("wc -l < /storage/shared/log; sort -u /storage/shared/log | wc -l; wc -l /storage/shared/own-*");
    assert_eq!(
        r.stdout(),
        "800\n800\n    0 /storage/shared/own-0\n 1000 /storage/shared/own-1\n 2000 /storage/shared/own-2\n 3000 /storage/shared/own-3\n 6000 total\n",
        "concurrent appends lost or duplicated lines:\n{}\n{}",
        show(&r),
        d.diagnostics()
    );
}

#[test]
fn relative_paths_from_host_directories_into_storage_reach_the_domain() {
    // `cd / && mkdir storage/x` and `openat(fd_of("/"), "storage/...")` (how
    // mkdir -p, find and rm -r walk) name files under /storage through a
    // host directory: they must reach the domain and create nothing on the
    // host.
    let host_had_storage = std::path::Path::new("/storage").exists();
    let d = Domain::start();
    d.watch_host(&["rel-a", "rel-b", "rel-c"]);
    let py = virtuos_e2e::python();
    let script = format!(
        r#"
        cd / && mkdir storage/rel-a && echo one > storage/rel-a/f
        cd /usr && mkdir ../storage/rel-b && cat ../storage/rel-a/f
        "{py}" -c 'import os; fd = os.open("/", os.O_RDONLY); os.mkdir("storage/rel-c", dir_fd=fd); print(sorted(os.listdir("/storage")))'
        "#
    );
    let r = d.run_virtuos(&script);
    assert_eq!(r.code(), 0, "{}\n{}", show(&r), d.diagnostics());
    assert_eq!(
        r.stdout(),
        "one\n['rel-a', 'rel-b', 'rel-c']\n",
        "{}\n{}",
        show(&r),
        d.diagnostics()
    );
    for name in ["rel-a/f", "rel-b", "rel-c"] {
        d.assert_in_domain(name);
    }
    assert_not_on_host("rel-a");
    assert!(
        host_had_storage || !std::path::Path::new("/storage").exists(),
        "a host /storage was created"
    );
}
