//! fork, exec, inherited forwarded descriptors, close-on-exec, a cwd inside
//! the domain, and /proc/self/fd translation, compared with native runs.

use virtuos_e2e::Case;

#[test]
fn pipeline_and_subshells_with_cwd_in_storage() {
    Case::new(
        r#"
        cd "$ROOT"
        (echo b; echo a) > f
        cat f | sort > g
        cat g
        pwd
        mkdir sub
        (cd sub && pwd && echo in-sub > here)
        cat sub/here
        pwd
        sh -c 'pwd; ls'
        echo "$(cat f | wc -l) lines"
        x=$(sort -r f | head -1); echo "first of reverse sort: $x"
        cat f | tr a-z A-Z | sort -r | tee upper | wc -l
        cat upper
        { echo grouped; cat g; } | sort > grouped
        cat grouped
        echo "nested: $(echo "$(cat g | head -1)")"
        "#,
    )
    .needs(&["sort", "tr", "tee", "wc", "head"])
    .native_contains("$ROOT/sub")
    .check();
}

#[test]
fn cwd_in_storage_survives_exec_and_fork() {
    Case::new(
        r#"
        mkdir -p "$ROOT/a/b"
        echo file-in-a > "$ROOT/a/f"
        cd "$ROOT/a/b"
        pwd
        sh -c pwd
        bash -c 'cd ..; pwd; cat f'
        (pwd)
        "$PY" -c 'import os; print(os.getcwd()); print(open("../f").read().strip())'
        env pwd
        cat ../f
        (cd "$TMP" && pwd && echo on-host > hostfile && cat hostfile)
        pwd
        cd ..
        ls
        cd "$TMP"
        ls
        cd "$ROOT"
        sh -c 'cd a && cat f'
        "#,
    )
    .needs(&["sh", "env", &virtuos_e2e::python()])
    .native_contains("$ROOT/a/b\n$ROOT/a/b\n$ROOT/a")
    .check();
}

#[test]
fn forwarded_fd_is_inherited_across_exec_and_shares_the_offset() {
    Case::new(
        r#"
        exec 3>"$ROOT/x"
        echo hi >&3
        sh -c 'echo there >&3'
        bash -c 'echo again >&3; exec sh -c "echo exec-chain >&3"'
        "$PY" -c 'import os; os.write(3, b"from-python\n")'
        exec 3>&-
        cat "$ROOT/x"
        # Parent and children share one open file description (one offset).
        exec 4<"$ROOT/x"
        sh -c 'read -r line <&4; echo "child read: $line"'
        read -r line <&4
        echo "parent read after child: $line"
        "$PY" -c 'import os; print("python at offset", os.lseek(4, 0, os.SEEK_CUR))'
        exec 4<&-
        "#,
    )
    .needs(&["sh", &virtuos_e2e::python()])
    .native_contains("hi\nthere\nagain\nexec-chain\nfrom-python\n")
    .check();
}

#[test]
fn close_on_exec_descriptors_are_not_inherited() {
    Case::new(
        r#"
        cd "$ROOT"
        "$PY" - <<'PYEOF'
import os, subprocess
a = os.open("cloexec.txt", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
b = os.open("inherit.txt", os.O_WRONLY | os.O_CREAT, 0o644)
os.set_inheritable(b, True)  # ioctl(FIONCLEX) or fcntl(F_SETFD)
print("inheritable:", os.get_inheritable(a), os.get_inheritable(b))
def child(fd):
    r = subprocess.run(["sh", "-c", f"echo child-wrote >&{fd}"], close_fds=False, capture_output=True, text=True)
    return r.returncode, "Bad file descriptor" in r.stderr
print("write to O_CLOEXEC fd in child:", child(a))
print("write to inheritable fd in child:", child(b))
os.set_inheritable(b, False)
print("after set_inheritable(False):", child(b), os.get_inheritable(b))
r = subprocess.run(["sh", "-c", f"echo via-pass-fds >&{b}"], pass_fds=[b])
print("pass_fds:", r.returncode)
c = os.dup(b)
print("dup is inheritable:", os.get_inheritable(c))
os.dup2(b, 9)
print("dup2 target inheritable:", os.get_inheritable(9))
r = subprocess.run(["sh", "-c", "echo via-dup2 >&9"], close_fds=False)
print("dup2 child:", r.returncode)
for fd in (a, b, c, 9):
    os.close(fd)
PYEOF
        echo "cloexec.txt: [$(cat cloexec.txt)]"
        echo "inherit.txt:"
        cat inherit.txt
        "#,
    )
    .needs(&["sh", &virtuos_e2e::python()])
    .native_contains("write to O_CLOEXEC fd in child: (2, True)")
    .check();
}

#[test]
fn forked_children_write_in_parallel_to_an_inherited_fd() {
    Case::new(
        r#"
        cd "$ROOT"
        exec 3>"$ROOT/par"
        for i in 1 2 3 4 5 6 7 8; do (echo "child $i" >&3) & done
        wait
        for i in 1 2 3 4 5 6 7 8; do (for j in $(seq 1 50); do echo "$i-$j"; done >&3) & done
        wait
        exec 3>&-
        wc -l < par
        sort par | head -8
        sort par | md5sum
        sort -u par | wc -l
        # The line order is scheduling-dependent: sort the file so that the
        # compared trees are deterministic.
        sort -o par par
        "#,
    )
    .needs(&["sort", "md5sum", "seq"])
    .native_contains("408\n")
    .check();
}

#[test]
fn proc_self_fd_names_the_storage_path() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir d
        exec 3>"$ROOT/x"
        readlink /proc/self/fd/3
        exec 4<"$ROOT"
        readlink /proc/self/fd/4
        exec 5<d/../x
        readlink /proc/self/fd/5
        realpath /proc/self/fd/3
        ls -l /proc/self/fd/3 | sed 's/.* -> //'
        "$PY" -c 'import os; fd = os.open("d", os.O_RDONLY); print(os.readlink(f"/proc/self/fd/{fd}"))'
        exec 3>&- 4<&- 5<&-
        # Opening /proc/self/fd/N or /dev/stdout reopens the forwarded file.
        sh -c 'echo via-dev-stdout > /dev/stdout' > "$ROOT/y"
        echo tee-line | tee /dev/stdout > "$ROOT/z"
        cat y z
        exec 6<"$ROOT/y"
        cat /proc/self/fd/6
        cat /dev/fd/6
        exec 6<&-
        "#,
    )
    .needs(&["readlink", "realpath", "sed", "tee", &virtuos_e2e::python()])
    .native_contains("$ROOT/x\n$ROOT\n$ROOT/x\n")
    .check();
}

#[test]
fn shell_runs_a_script_file_stored_in_storage() {
    Case::new(
        r#"
        cd "$ROOT"
        printf '#!/bin/sh\necho "script ran with: $*"\necho "cwd: $(pwd)"\n' > s.sh
        sh s.sh a b
        bash "$ROOT/s.sh" c
        . ./s.sh sourced
        "#,
    )
    .needs(&["sh"])
    .native_contains("script ran with: a b")
    .check();
}

#[test]
fn execve_of_executables_stored_in_storage() {
    // The kernel's execve cannot see the domain's files: the library must
    // handle it (or fail cleanly). A script with a #! line, and an ELF binary.
    Case::new(
        r#"
        cd "$ROOT"
        printf '#!/bin/sh\necho "script ran with: $*"\n' > s.sh
        chmod +x s.sh
        ./s.sh a b
        "$ROOT/s.sh" c
        mkdir bin
        cp "$(type -P echo)" bin/myecho
        ./bin/myecho elf-binary-from-storage
        PATH="$ROOT/bin:$PATH" myecho via-PATH
        "#,
    )
    .needs(&["echo", "cp"])
    .native_contains("elf-binary-from-storage")
    .check();
}
