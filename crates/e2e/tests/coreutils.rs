//! coreutils, findutils and tar on files in the storage domain, compared
//! with the same script run natively.

use virtuos_e2e::{Case, Norm};

#[test]
fn cat_concatenates_numbers_lines_and_reads_stdin() {
    Case::new(
        r#"
        cd "$ROOT"
        printf 'alpha\nbeta\n' > x
        printf 'gamma\n' > y
        cat x y
        cat -n x y
        echo middle | cat x - y
        cat x y > xy
        cat xy
        seq 1 100000 > big
        cat big > big.copy
        cmp big big.copy && echo "cat of a 588 KB file: identical"
        cat nosuch 2>&1 || echo "cat nosuch: rc=$?"
        "#,
    )
    .needs(&["cat", "seq", "cmp"])
    .native_contains("identical")
    .check();
}

#[test]
fn cp_copies_within_storage_and_across_host_boundary() {
    // cp uses copy_file_range between two forwarded descriptors; between a
    // host and a forwarded descriptor it must fall back to read/write.
    Case::new(
        r#"
        cd "$ROOT"
        seq 1 100000 > big
        cp big copy
        cmp big copy && echo "storage -> storage: identical"
        md5sum big copy
        cp big "$TMP/out"
        cmp big "$TMP/out" && echo "storage -> host: identical"
        seq 1 5 > "$TMP/in"
        cp "$TMP/in" fromhost
        cat fromhost
        chmod 751 big
        cp -p big kept
        stat -c '%a %s %n' kept
        mkdir -p dir/sub && echo leaf > dir/sub/leaf
        cp -r dir dir2
        cp -a dir dir3
        find dir2 dir3 | sort
        cat dir3/sub/leaf
        cp -r dir "$TMP/dirhost"
        find "$TMP/dirhost" | sort
        cp nosuch x 2>&1 || echo "cp nosuch: rc=$?"
        "#,
    )
    .needs(&["cp", "cmp", "md5sum", "seq", "find"])
    .native_contains("storage -> host: identical")
    .check();
}

#[test]
fn dd_bs32_and_bs1m_copies_of_1mib_have_equal_md5() {
    Case::new(
        r#"
        cd "$ROOT"
        yes abcdefghijklmnopqrstuvwxyz01234 | head -c 1048576 > src
        wc -c < src
        dd if=src of=a32 bs=32 status=none
        dd if=src of=a1m bs=1M status=none
        dd if=src bs=1M status=none | dd of=piped bs=4096 status=none
        dd if=/dev/zero of=zeros bs=1M count=1 status=none
        dd if=src of=part bs=1000 skip=3 count=5 status=none
        dd if=src of="$TMP/tohost" bs=64k status=none
        dd if="$TMP/tohost" of=fromhost bs=3000 status=none
        printf 'XYZ' | dd of=a1m bs=1 seek=100 conv=notrunc status=none
        md5sum src a32 piped zeros part fromhost "$TMP/tohost" a1m
        wc -c a32 a1m zeros part
        "#,
    )
    .needs(&["dd", "md5sum", "yes", "head", "wc"])
    .native_contains("1048576")
    .check();
}

#[test]
fn ls_long_lists_modes_links_sizes_and_symlink_targets() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir -p d/sub/deeper
        printf 'abc' > d/f
        printf '%s\n' {1..2000} > d/big
        : > d/empty
        chmod 640 d/f
        ln -s f d/link
        ln d/f d/hard
        ls d
        ls -1 d
        ls -l d
        ls -la d/sub
        ls -lR d
        ls -l d/link d/f
        ls -ld d/sub
        ls -i d/f d/hard | awk '{print $1}' | uniq | wc -l
        ls nosuch 2>&1 || echo "ls nosuch: rc=$?"
        "#,
    )
    .needs(&["ls", "awk"])
    // ls -l prints modification times, which differ between the two runs.
    .norm(Norm {
        ls_times: true,
        ..Norm::default()
    })
    .native_contains("link -> f")
    .check();
}

#[test]
fn mkdir_p_creates_nested_dirs_and_reports_existing() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir -p a/b/c/d
        mkdir -p a/b/c
        mkdir -p "$ROOT/abs/x/y"
        mkdir -m 700 private
        stat -c '%a %F %n' a a/b/c/d private abs/x/y
        find a abs | sort
        mkdir a 2>&1 || echo "mkdir a: rc=$?"
        mkdir q/r 2>&1 || echo "mkdir q/r: rc=$?"
        rmdir a/b/c/d && echo rmdir ok
        rmdir a 2>&1 || echo "rmdir a: rc=$?"
        "#,
    )
    .needs(&["mkdir", "stat", "find", "rmdir"])
    .native_contains("rmdir ok")
    .check();
}

#[test]
fn mv_renames_within_storage_and_moves_across_host_boundary() {
    // A rename between the host and the domain is EXDEV: mv copies and unlinks.
    Case::new(
        r#"
        cd "$ROOT"
        echo one > a
        mv a b
        cat b
        mkdir d1 && echo x > d1/f
        mv d1 d2
        ls
        ls d2
        echo host > "$TMP/h"
        mv "$TMP/h" fromhost
        cat fromhost
        ls "$TMP"
        mv b "$TMP/back"
        cat "$TMP/back"
        mkdir -p "$TMP/hostdir" && echo y > "$TMP/hostdir/g"
        mv "$TMP/hostdir" d2/
        find d2 | sort
        mv d2 "$TMP/d2"
        find "$TMP/d2" | sort
        echo over > o1; echo under > o2
        mv -f o1 o2
        cat o2
        ls
        mv nosuch x 2>&1 || echo "mv nosuch: rc=$?"
        "#,
    )
    .needs(&["mv", "find"])
    .native_contains("$TMP/d2/hostdir/g")
    .check();
}

#[test]
fn rm_r_removes_a_tree() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir -p t/a/b/c t/d
        for i in 1 2 3 4 5; do echo $i > t/a/f$i; echo $i > t/a/b/c/g$i; done
        ln -s ../d t/a/link
        find t | sort | wc -l
        rm t/a/f1
        rm -r t/a/b
        find t | sort
        rm -r t
        ls
        rm -rf t nosuch && echo "rm -rf of missing paths: ok"
        rm nosuch 2>&1 || echo "rm nosuch: rc=$?"
        mkdir keep
        rm keep 2>&1 || echo "rm dir: rc=$?"
        echo survivor > keep/s
        "#,
    )
    .needs(&["rm", "find"])
    .native_contains("rm -rf of missing paths: ok")
    .check();
}

#[test]
fn ln_s_and_readlink_resolve_relative_and_absolute_links() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir dir
        echo content > dir/target
        ln -s target dir/rel
        ln -s "$ROOT/dir/target" abs
        ln -s dir/rel chain
        ln -s nowhere dangling
        readlink dir/rel
        readlink abs
        readlink chain
        readlink -f chain
        readlink -f dir/../abs
        cat chain abs
        readlink dangling
        cat dangling 2>&1 || echo "cat dangling: rc=$?"
        ln dir/target hard
        stat -c '%h %n' hard dir/target
        ln -sf target dir/rel2
        readlink dir/rel2
        ln -s target dir/rel 2>&1 || echo "ln -s over existing: rc=$?"
        readlink dir/target || echo "readlink of a regular file: rc=$?"
        "#,
    )
    .needs(&["ln", "readlink", "stat"])
    .native_contains("$ROOT/dir/target")
    .check();
}

#[test]
fn stat_reports_size_type_and_mode() {
    Case::new(
        r#"
        cd "$ROOT"
        printf '12345' > f
        : > empty
        mkdir d
        chmod 751 d
        ln -s f l
        mkfifo fifo
        stat -c '%s %F %a %n' f empty d l fifo
        stat -L -c '%s %F %a %n' l
        stat -c '%U %G %h' f
        stat --printf='%s\n' f
        stat -f -c '%T' . >/dev/null && echo "statfs ok"
        stat nosuch 2>&1 || echo "stat nosuch: rc=$?"
        "#,
    )
    .needs(&["stat", "mkfifo"])
    .native_contains("5 regular file 644 f")
    .check();
}

#[test]
fn find_filters_by_name_type_size_and_runs_exec() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir -p t/a/b t/c t/empty
        echo 1 > t/a/x.txt
        echo 22 > t/a/b/y.txt
        seq 1 1000 > t/c/big.dat
        ln -s ../a t/c/link
        find t | sort
        find t -type f | sort
        find t -name '*.txt' | sort
        find t -type d -empty | sort
        find t -size +1k | sort
        find t -type l
        find -L t -name '*.txt' | sort
        find "$ROOT/t" -maxdepth 1 | sort
        find t -type f -exec wc -c {} + | sort
        find t -type f -exec cat {} \; | wc -l
        find t -name '*.txt' -delete
        find t | sort
        cd t
        find . -mindepth 1 | sort
        "#,
    )
    .needs(&["find", "sort", "wc", "seq"])
    .native_contains("t/c/big.dat")
    .check();
}

#[test]
fn sort_of_a_file_including_external_merge_with_temp_files_in_storage() {
    Case::new(
        r#"
        cd "$ROOT"
        seq 1 200000 | shuf --random-source=<(yes) > nums
        head -3 nums
        sort -n nums | head -3
        sort -rn nums | head -3
        mkdir sorttmp
        sort -n -S 64K -T "$ROOT/sorttmp" nums > sorted
        md5sum sorted
        ls sorttmp | wc -l
        seq 1 200000 | md5sum
        printf 'pear\napple\npear\nfig\napple\n' > words
        sort words
        sort -u words
        sort words | uniq -c
        sort -o words words
        cat words
        "#,
    )
    .needs(&["sort", "shuf", "seq", "md5sum", "uniq"])
    .native_contains("apple")
    .check();
}

#[test]
fn tar_create_then_extract_roundtrip_is_identical_by_diff_r() {
    Case::new(
        r#"
        cd "$ROOT"
        mkdir -p src/d1/d2 src/emptydir
        echo a > src/a
        seq 1 50000 > src/d1/b
        printf '\000\001\377binary' > src/d1/d2/bin
        ln -s a src/lnk
        chmod 700 src/d1
        # Fixed mtimes and order: the archives must be byte-identical to native.
        tar --sort=name --mtime=@0 -cf arch.tar src
        tar tf arch.tar
        mkdir out
        tar xf arch.tar -C out
        diff -r src out/src && echo "tar x of tar c: diff -r identical"
        tar --sort=name --mtime=@0 -cf - src | gzip -n > arch.tgz
        mkdir out2
        tar xzf arch.tgz -C out2
        diff -r src out2/src && echo "tgz roundtrip: identical"
        cat arch.tar | tar tf - | wc -l
        tar cf - src | (cd "$TMP" && tar xf -)
        diff -r src "$TMP/src" && echo "storage -> host via pipe: identical"
        mkdir "$TMP/hsrc" && echo h > "$TMP/hsrc/h"
        tar cf "$TMP/h.tar" -C "$TMP" hsrc
        tar xf "$TMP/h.tar"
        cat hsrc/h
        md5sum arch.tar
        "#,
    )
    .needs(&["tar", "diff", "gzip", "md5sum"])
    .native_contains("diff -r identical")
    .check();
}

#[test]
fn touch_creates_files_and_sets_times() {
    Case::new(
        r#"
        cd "$ROOT"
        touch new
        stat -c '%s %F %n' new
        touch -d '2020-01-01 00:00:00' new
        stat -c '%Y' new
        touch -m -d '@1234567890' new
        stat -c '%Y' new
        touch -r new other
        stat -c '%Y %n' other
        touch -a -d '@1000000000' new
        stat -c '%X %Y' new
        touch -c nonexistent
        ls
        touch -h -d '@999' new
        stat -c '%Y' new
        mkdir d
        touch -d '@86400' d
        stat -c '%Y %F' d
        "#,
    )
    .needs(&["touch", "stat"])
    .native_contains("1577836800")
    .check();
}

#[test]
fn truncate_grows_and_shrinks_files() {
    Case::new(
        r#"
        cd "$ROOT"
        truncate -s 1M f
        stat -c '%s' f
        cmp f <(head -c 1048576 /dev/zero) && echo "1M of zeros"
        echo hello > g
        truncate -s 3 g
        wc -c < g
        cat g; echo
        truncate -s +5 g
        stat -c '%s' g
        od -An -c g
        truncate -s 0 g
        stat -c '%s' g
        truncate -c -s 1 nonexistent
        ls
        "#,
    )
    .needs(&["truncate", "stat", "od", "cmp"])
    .native_contains("1M of zeros")
    .check();
}

#[test]
fn chmod_changes_modes_and_umask_applies_to_created_files() {
    Case::new(
        r#"
        cd "$ROOT"
        touch f
        chmod 600 f
        stat -c '%a' f
        chmod u+x,g+r f
        stat -c '%a' f
        chmod 4755 f
        stat -c '%a' f
        chmod a-x f
        stat -c '%a' f
        mkdir -p d/e
        touch d/e/x d/y
        chmod -R go-rwx d
        stat -c '%a %n' d d/e d/e/x d/y
        umask 077
        touch u
        mkdir ud
        echo data > redir
        stat -c '%a %n' u ud redir
        umask 022
        chmod 644 nosuch 2>&1 || echo "chmod nosuch: rc=$?"
        "#,
    )
    .needs(&["chmod", "stat"])
    .native_contains("600 u")
    .check();
}

#[test]
fn shell_redirections_append_truncate_and_read() {
    Case::new(
        r#"
        cd "$ROOT"
        echo x >> f
        echo y >> f
        echo z >> f
        cat f
        echo trunc > f
        cat f
        cat < f
        while read -r line; do echo "read: $line"; done < f
        { echo a; echo b; } >> f
        cat f
        exec 4>>f
        echo via-fd-4 >&4
        exec 4>&-
        echo "$(< f)"
        ls nosuch 2> err || true
        cat err
        echo both &> both
        cat both
        set -o noclobber
        (echo clobber > f) 2>&1 || echo "noclobber: rc=$?"
        set +o noclobber
        exec 5<> rw
        echo "read-write" >&5
        exec 5>&-
        cat rw
        "#,
    )
    .native_contains("via-fd-4")
    .check();
}

#[test]
fn wc_counts_bytes_words_and_lines() {
    Case::new(
        r#"
        cd "$ROOT"
        printf 'one two\nthree\n' > f
        seq 1 100000 > big
        wc -c f big
        wc -l < big
        wc f
        wc -w big
        cat big | wc -c
        wc -c < big
        wc -L f
        "#,
    )
    .needs(&["wc", "seq"])
    .native_contains("588895")
    .check();
}

#[test]
fn the_parent_of_the_storage_root_is_a_host_directory() {
    // `/storage/..` leaves the mount: natively it goes through the mount
    // directory, which the host does not have under virtuos.
    Case::new(
        r#"
        cd "$ROOT"
        mkdir d
        ls -la "$ROOT" | awk 'NR > 1 {print $1, $NF}'
        stat -c '%F' "$ROOT/.." "$ROOT/../$(basename "$ROOT")" "$ROOT/d/../.."
        ls -ld .. | cut -c1-10
        "#,
    )
    .needs(&["ls", "awk", "stat", "cut", "basename"])
    .check();
}
