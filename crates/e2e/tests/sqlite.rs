//! sqlite3 (rollback journal, fcntl locks, fsync) on a database in the
//! storage domain, compared with native; WAL mode refused clearly.

use virtuos_e2e::{Case, Domain};

#[test]
fn sqlite_10k_inserts_in_one_transaction_then_reopen_and_query() {
    Case::new(
        r#"
        cd "$ROOT"
        sqlite3 "$ROOT/db.sqlite" <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, v INTEGER);
CREATE INDEX t_v ON t(v);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO t(id, name, v) SELECT i, 'name-' || i, (i * 7919) % 1000 FROM n;
COMMIT;
SELECT count(*), sum(v), min(name), max(id) FROM t;
SQL
        # A shell loop generating the SQL, in one transaction too.
        { echo "BEGIN;"; for i in $(seq 1 2000); do echo "INSERT INTO t(name, v) VALUES ('loop-$i', $i);"; done; echo "COMMIT;"; } > inserts.sql
        sqlite3 db.sqlite < inserts.sql
        # Reopen: the data is on disk.
        sqlite3 db.sqlite 'SELECT count(*), sum(v) FROM t; SELECT name FROM t WHERE v = 1999;'
        sqlite3 db.sqlite 'SELECT v, count(*) FROM t WHERE id <= 10000 GROUP BY v ORDER BY count(*) DESC, v LIMIT 3;'
        sqlite3 db.sqlite 'UPDATE t SET v = v + 1 WHERE id % 2 = 0; DELETE FROM t WHERE id > 11000; VACUUM;'
        sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*), sum(v) FROM t;'
        sqlite3 db.sqlite 'PRAGMA journal_mode;'
        ls
        sqlite3 db.sqlite .dump | md5sum
        "#,
    )
    .needs(&["sqlite3", "md5sum", "seq"])
    .native_contains("10000|")
    .native_contains("ok")
    .check();
}

#[test]
fn sqlite_wal_mode_fails_clearly_and_loses_nothing() {
    // WAL mode mmaps the db-shm file MAP_SHARED and writable. A host
    // mapping cannot be coherent with the domain's page cache (the paper
    // supports no mmap of domain files at all), so virtuos refuses it with
    // ENODEV and says why, instead of risking a database that two
    // processes share. What was committed before must be intact.
    virtuos_e2e::require_programs(&["sqlite3"]);
    let d = Domain::start();
    let r = d.run_virtuos(
        r#"
        cd "$ROOT"
        sqlite3 wal.sqlite 'CREATE TABLE k(a); INSERT INTO k VALUES (1), (2), (3);'
        if sqlite3 wal.sqlite 'PRAGMA journal_mode=WAL; INSERT INTO k VALUES (4);'; then
            echo wal-unexpectedly-worked
        fi
        "#,
    );
    assert_eq!(
        r.code(),
        0,
        "script failed: {}\n{}",
        r.stderr(),
        d.diagnostics()
    );
    assert!(
        r.stderr().contains("MAP_SHARED"),
        "the refusal must say why, stderr was: {}",
        r.stderr()
    );
    assert!(
        !r.stdout().contains("wal-unexpectedly-worked"),
        "stdout: {}",
        r.stdout()
    );
    // Read a copy of the domain's file natively: every committed row is there.
    let copy = d.tmp.join("wal-copy.sqlite");
    std::fs::write(&copy, d.read_domain_file("wal.sqlite")).expect("copy the database");
    let out = std::process::Command::new("sqlite3")
        .arg(&copy)
        .arg("PRAGMA integrity_check; SELECT count(*), sum(a) FROM k WHERE a <= 3;")
        .output()
        .expect("run sqlite3");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("ok"),
        "integrity_check must pass, stdout: {out}"
    );
    assert!(
        out.contains("3|6"),
        "the rows committed before must all be there: {out}"
    );
}
