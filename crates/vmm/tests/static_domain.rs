//! The domain server builds as a static binary (it is PID 1 of an
//! initramfs with no libc).

use std::process::Command;
use virtuos_vmm::static_bin;

#[test]
fn domain_binary_is_static() {
    let bin = static_bin::build_domain().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        bin.ends_with("x86_64-unknown-linux-gnu/release/virtuos-domain"),
        "{}",
        bin.display()
    );
    static_bin::check_static(&bin).unwrap();
    let file = Command::new("file")
        .arg(&bin)
        .output()
        .expect("`file` (Debian package file)");
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "{file}"
    );
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "{ldd}"
    );
}

#[test]
fn dynamic_binaries_are_rejected() {
    let e = static_bin::check_static(std::path::Path::new("/bin/sh")).unwrap_err();
    assert!(e.to_string().contains("dynamically linked"), "{e}");
    assert!(static_bin::check_static(std::path::Path::new("/etc/hostname")).is_err());
}
