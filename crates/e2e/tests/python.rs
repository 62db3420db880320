//! Python's file APIs (open, os, shutil, pathlib, tempfile, subprocess) on
//! the storage domain, compared with native runs. `$PY` is the interpreter
//! (Debian's /usr/bin/python3 when present).

use virtuos_e2e::Case;

/// A script that runs the Python program `py` with `$ROOT` as its cwd.
fn python(py: &str) -> Case {
    Case::new(&format!(
        "cd \"$ROOT\"\n\"$PY\" - <<'PYEOF'\n{}\nPYEOF\n",
        dedent(py)
    ))
    .needs(&[&virtuos_e2e::python()])
}

fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn python_writes_and_reads_text_and_binary_files() {
    python(
        r##"
        import os
        root = os.environ["ROOT"]
        with open("text.txt", "w", encoding="utf-8") as f:
            for i in range(1000):
                f.write(f"line {i} \u00e9\u4e2d\n")
        with open(os.path.join(root, "text.txt"), encoding="utf-8") as f:
            lines = f.readlines()
        print(len(lines), lines[0].rstrip(), lines[-1].rstrip())
        data = bytes(range(256)) * 4096          # 1 MiB
        with open("blob.bin", "wb") as f:
            f.write(data)
        with open("blob.bin", "rb") as f:
            back = f.read()
        print("binary roundtrip equal:", back == data, len(back))
        with open("blob.bin", "r+b") as f:
            f.seek(1000)
            f.write(b"PATCH")
            f.seek(998)
            print(f.read(9))
            print("tell", f.tell())
        with open("text.txt", "a") as f:
            f.write("appended\n")
        with open("text.txt") as f:
            print(f.read().splitlines()[-1])
        with open("text.txt", "rb", buffering=0) as f:
            f.seek(-9, os.SEEK_END)
            print(f.read())
        try:
            open("missing/file", "w")
        except FileNotFoundError as e:
            print("FileNotFoundError", e.errno)
        try:
            open("text.txt", "x")
        except FileExistsError as e:
            print("FileExistsError", e.errno)
        "##,
    )
    .native_contains("binary roundtrip equal: True 1048576")
    .check();
}

#[test]
fn python_os_listdir_and_os_walk_see_the_tree() {
    python(
        r##"
        import os
        for d in ["a/b/c", "a/d", "e"]:
            os.makedirs(d, exist_ok=True)
        for f in ["a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "e/4.dat"]:
            with open(f, "w") as fh:
                fh.write(f)
        os.symlink("a/1.txt", "link")
        print(sorted(os.listdir(".")))
        print(sorted(os.listdir(os.environ["ROOT"] + "/a")))
        for top, dirs, files in os.walk("."):
            dirs.sort()
            print(top, dirs, sorted(files))
        with os.scandir("a") as it:
            for e in sorted(it, key=lambda e: e.name):
                print(e.name, e.is_dir(), e.is_file(), e.stat().st_size if e.is_file() else "-")
        print(os.path.islink("link"), os.path.exists("link"), os.readlink("link"))
        print(os.path.getsize("a/b/c/3.txt"), os.path.isdir("a/b"), os.path.isfile("a/b"))
        fd = os.open("a", os.O_RDONLY | os.O_DIRECTORY)
        print("listdir(fd):", sorted(os.listdir(fd)))
        os.close(fd)
        "##,
    )
    .native_contains("./a ['b', 'd'] ['1.txt']")
    .check();
}

#[test]
fn python_shutil_copytree_and_rmtree() {
    python(
        r##"
        import os, shutil, hashlib
        root = os.environ["ROOT"]
        tmp = os.environ["TMP"]
        os.makedirs("src/x/y")
        for i in range(20):
            with open(f"src/x/f{i}", "wb") as f:
                f.write(bytes([i]) * (i * 1000))
        with open("src/x/y/deep", "w") as f:
            f.write("deep\n")
        os.symlink("x/y/deep", "src/ln")
        shutil.copytree("src", "copy", symlinks=True)
        def digest(top):
            h = hashlib.sha256()
            for d, dirs, files in os.walk(top):
                dirs.sort()
                for n in sorted(files):
                    p = os.path.join(d, n)
                    h.update(os.path.relpath(p, top).encode())
                    if os.path.islink(p):
                        h.update(os.readlink(p).encode())
                    else:
                        h.update(open(p, "rb").read())
            return h.hexdigest()
        print("copy equal:", digest("src") == digest("copy"))
        shutil.copytree("src", os.path.join(tmp, "hostcopy"), symlinks=True)
        print("host copy equal:", digest("src") == digest(os.path.join(tmp, "hostcopy")))
        shutil.copytree(os.path.join(tmp, "hostcopy"), "back", symlinks=True)
        print("back equal:", digest("back") == digest("src"))
        shutil.copy2("src/x/f5", "f5copy")
        print(os.path.getsize("f5copy"))
        shutil.move("back", "moved")
        shutil.rmtree("copy")
        shutil.rmtree(os.path.join(tmp, "hostcopy"))
        print(sorted(os.listdir(".")))
        print(digest("src"))
        print(shutil.disk_usage(root).total > 0)
        "##,
    )
    .native_contains("copy equal: True")
    .check();
}

#[test]
fn python_pathlib_glob_and_read_write() {
    python(
        r##"
        from pathlib import Path
        import os
        root = Path(os.environ["ROOT"])
        (root / "pkg" / "sub").mkdir(parents=True)
        for name in ["a.py", "b.py", "c.txt", "sub/d.py", "sub/e.md"]:
            (root / "pkg" / name).write_text(f"# {name}\n")
        print(sorted(p.relative_to(root).as_posix() for p in root.glob("pkg/*.py")))
        print(sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")))
        print(sorted(p.name for p in (root / "pkg").iterdir()))
        p = root / "pkg" / "sub" / "d.py"
        print(p.read_text().strip(), p.stat().st_size, p.exists(), p.is_file(), p.parent.is_dir())
        (root / "bytes.bin").write_bytes(b"\x00\x01\x02")
        print((root / "bytes.bin").read_bytes())
        print(Path("pkg/a.py").resolve() == root / "pkg" / "a.py")
        print(Path.cwd() == root)
        (root / "pkg" / "c.txt").unlink()
        (root / "pkg" / "sub" / "e.md").rename(root / "e.md")
        print(sorted(p.name for p in root.iterdir()))
        "##,
    )
    .native_contains("'pkg/sub/d.py'")
    .check();
}

#[test]
fn python_os_rename_replace_and_stat_sizes() {
    python(
        r##"
        import os, stat
        with open("a", "wb") as f:
            f.write(b"x" * 12345)
        os.rename("a", "b")
        print(os.path.exists("a"), os.stat("b").st_size)
        os.mkdir("d")
        os.rename("b", "d/c")
        with open("e", "w") as f:
            f.write("short")
        os.replace("e", "d/c")
        st = os.stat("d/c")
        print(st.st_size, stat.S_ISREG(st.st_mode), oct(st.st_mode & 0o777), st.st_nlink)
        print(os.lstat("d").st_size > 0, stat.S_ISDIR(os.stat("d").st_mode))
        fd = os.open("d/c", os.O_RDONLY)
        print(os.fstat(fd).st_size)
        os.close(fd)
        os.truncate("d/c", 2)
        print(os.stat("d/c").st_size)
        os.chmod("d/c", 0o600)
        print(oct(os.stat("d/c").st_mode & 0o777))
        os.utime("d/c", (1000000000, 1234567890))
        print(os.stat("d/c").st_mtime)
        print(os.stat("d/c", dir_fd=None).st_size, os.access("d/c", os.R_OK))
        dfd = os.open("d", os.O_RDONLY)
        print("stat dir_fd:", os.stat("c", dir_fd=dfd).st_size)
        os.rename("c", "c2", src_dir_fd=dfd, dst_dir_fd=dfd)
        print(sorted(os.listdir("d")))
        os.close(dfd)
        try:
            os.rename("nonexistent", "x")
        except FileNotFoundError as e:
            print("rename missing:", e.errno)
        "##,
    )
    .native_contains("False 12345")
    .check();
}

#[test]
fn python_tempfile_inside_storage() {
    python(
        r##"
        import os, tempfile
        root = os.environ["ROOT"]
        with tempfile.NamedTemporaryFile("w+", dir=root, suffix=".tmp", delete=True) as f:
            f.write("temporary\n")
            f.flush()
            f.seek(0)
            print(f.read().strip(), os.path.dirname(f.name) == root, os.path.exists(f.name))
            name = f.name
        print("deleted after close:", not os.path.exists(name))
        fd, path = tempfile.mkstemp(dir=root, prefix="mk")
        os.write(fd, b"mkstemp data")
        os.close(fd)
        print(open(path, "rb").read(), oct(os.stat(path).st_mode & 0o777))
        os.rename(path, os.path.join(root, "kept"))
        with tempfile.TemporaryDirectory(dir=root) as d:
            with open(os.path.join(d, "inner"), "w") as f:
                f.write("x")
            print(os.listdir(d))
        print("tempdir removed:", not os.path.exists(d))
        tempfile.tempdir = root
        with tempfile.TemporaryFile() as t:
            t.write(b"anonymous")
            t.seek(0)
            print(t.read())
        print(sorted(os.listdir(root)))
        "##,
    )
    .native_contains("deleted after close: True")
    .check();
}

#[test]
fn python_subprocess_writes_to_a_storage_file() {
    python(
        r##"
        import os, subprocess, sys
        root = os.environ["ROOT"]
        subprocess.run(["sh", "-c", "echo from-shell > child.txt"], check=True)
        print(open("child.txt").read().strip())
        with open(os.path.join(root, "out.txt"), "w") as f:
            subprocess.run(["echo", "stdout-redirected"], stdout=f, check=True)
            subprocess.run(["sh", "-c", "echo second-child"], stdout=f, check=True)
        print(open("out.txt").read().split())
        with open("in.txt", "w") as f:
            f.write("3\n1\n2\n")
        with open("in.txt") as fin, open("sorted.txt", "w") as fout:
            subprocess.run(["sort"], stdin=fin, stdout=fout, check=True)
        print(open("sorted.txt").read().split())
        r = subprocess.run([sys.executable, "-c", "import os; print(os.getcwd()); open('py-child', 'w').write('hi')"],
                           capture_output=True, text=True, check=True)
        print(r.stdout.strip())
        print(open("py-child").read())
        r = subprocess.run(["sh", "-c", "ls; exit 3"], capture_output=True, text=True, cwd=os.path.join(root))
        print(r.returncode, r.stdout.split())
        p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=open("popen.txt", "w"))
        p.communicate(b"via popen\n")
        print(p.returncode, open("popen.txt").read().strip())
        "##,
    )
    .native_contains("from-shell")
    .native_contains("$ROOT")
    .check();
}
