//! Command-line errors that need no daemon.

mod common;

use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_without_a_command_is_a_usage_error() {
    let env = TestEnv::new(fake_domain());
    for args in [&["run"][..], &["run", "--"][..]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("CMD"), "{}", stderr(&out));
    }
    assert!(!env.socket().exists(), "no daemon was started");
}

#[test]
fn vm_backend_needs_a_static_domain_server() {
    // Checked before anything is downloaded or started
    // (tests/vm.rs boots the real thing).
    let mut env = TestEnv::new(fake_domain());
    env.extra_env
        .push(("VIRTUOS_DOMAIN_STATIC".into(), "/bin/sh".into()));
    let out = env.run(&["up", "--backend", "vm"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("VIRTUOS_DOMAIN_STATIC") && err.contains("dynamically linked"),
        "{err}"
    );
    assert!(!env.socket().exists(), "no daemon was started");
    assert!(!env.data().join("storage.img").exists());
}

#[test]
fn missing_preload_library_is_explained() {
    let mut env = TestEnv::new(fake_domain());
    env.extra_env.push((
        "VIRTUOS_PRELOAD".into(),
        "/nonexistent/libvirtuos.so".into(),
    ));
    let out = env.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cargo build --release"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let env = TestEnv::new(fake_domain());
    let cfg = env.dir.path().join("virtuos.toml");
    std::fs::write(&cfg, "storage_mount = [1]\n").unwrap();
    let out = env
        .cmd(&["up"])
        .env("VIRTUOS_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad config file") && err.contains("virtuos.toml"),
        "{err}"
    );
    std::fs::write(&cfg, "storage_mount = \"/cfgmount\"\n").unwrap();
    let out = env
        .cmd(&["up"])
        .env("VIRTUOS_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.status()["storage_mount"], "/cfgmount");
}

#[test]
fn help_texts() {
    let env = TestEnv::new(fake_domain());
    let out = env.ok(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "up", "down", "status", "demo"] {
        assert!(text.contains(cmd), "{text}");
    }
    assert!(!text.contains("daemon  "), "daemon is hidden: {text}");
    let out = env.ok(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--storage-mount"));
}
