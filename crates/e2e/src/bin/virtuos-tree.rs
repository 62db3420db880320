//! `virtuos-tree DIR [IGNORE...]`: print the tree below DIR the way the
//! end-to-end comparison sees it (`virtuos_e2e::show_tree`). Run under
//! `virtuos run` on the vm backend, where the domain's files live inside
//! its disk image and can only be seen through the domain.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: virtuos-tree DIR [IGNORE...]");
        std::process::exit(2);
    };
    let ignore: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let dir = std::path::PathBuf::from(dir);
    if !dir.is_dir() {
        eprintln!("virtuos-tree: {} is not a directory", dir.display());
        std::process::exit(1);
    }
    print!("{}", virtuos_e2e::show_tree(&dir, &dir, &ignore));
}
