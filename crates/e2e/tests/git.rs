//! git in a repository inside the storage domain. Author/committer names and
//! dates are fixed, so the commit hashes must equal the native run's.

use virtuos_e2e::Case;

/// Deterministic git environment, prepended to every script.
const GIT_ENV: &str = r#"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$TMP"
export GIT_AUTHOR_NAME='E2E Author' GIT_AUTHOR_EMAIL=author@example.com
export GIT_COMMITTER_NAME='E2E Committer' GIT_COMMITTER_EMAIL=committer@example.com
export GIT_AUTHOR_DATE='2024-01-02T03:04:05Z' GIT_COMMITTER_DATE='2024-01-02T03:04:05Z'
g() { git -c user.name='E2E User' -c user.email=e2e@example.com -c init.defaultBranch=main -c core.fsync=all "$@"; }
"#;

fn git_case(script: &str) -> Case {
    Case::new(&format!("{GIT_ENV}\n{script}"))
        .needs(&["git"])
        // The index caches stat data (ctime, mtime, inode, device): its bytes
        // legitimately differ between the two runs. Every object is compared.
        .tree_ignore_content(".git/index")
}

#[test]
fn git_init_add_commit_gives_the_same_hashes_as_native() {
    git_case(
        r#"
        mkdir "$ROOT/repo1"
        cd "$ROOT/repo1"
        g init -q
        echo hello > README
        mkdir -p src/lib
        seq 1 5000 > src/numbers.txt
        printf 'fn main() {}\n' > src/lib/main.rs
        g add .
        g status --porcelain
        g commit -q -m "first commit"
        g rev-parse HEAD
        g log --oneline
        g status --porcelain
        echo more >> README
        echo new > untracked
        g status --porcelain
        g diff --stat
        g add README
        g commit -q -m "second commit"
        g log --oneline
        g log --format='%H %an <%ae> %ad %s' --date=iso-strict
        g cat-file -p HEAD
        g ls-files
        g fsck --no-progress 2>&1
        g rev-parse HEAD
        "#,
    )
    .native_contains("first commit")
    .check();
}

#[test]
fn git_branch_checkout_merge_and_gc_keep_history_identical() {
    git_case(
        r#"
        mkdir "$ROOT/repo2"
        cd "$ROOT/repo2"
        g init -q
        for i in 1 2 3; do echo "v$i" > f$i; done
        g add .
        g commit -q -m base
        g checkout -q -b feature
        echo feature >> f1
        g commit -q -am "feature work"
        g checkout -q main
        echo mainline >> f2
        g commit -q -am "main work"
        g merge -q --no-edit feature
        g log --oneline --graph
        cat f1 f2
        g checkout -q HEAD~1 -- f1
        g status --porcelain
        g checkout -q -- f1
        g gc -q
        g count-objects -v | grep -E '^(count|in-pack|packs)'
        g log --oneline
        g show --stat --format=%s HEAD~1
        g rev-parse HEAD
        "#,
    )
    .native_contains("feature work")
    .check();
}
