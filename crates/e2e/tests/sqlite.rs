//! sqlite3 (rollback journal, fcntl locks, fsync; and WAL with its shared
//! memory index) on a database in the storage domain, compared with native.

use virtuos_e2e::Case;

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
fn sqlite_wal_mode_with_shared_memory_index() {
    // WAL mode mmaps db-shm with MAP_SHARED: a forwarded file must support
    // that (or sqlite must get an error it can handle).
    Case::new(
        r#"
        cd "$ROOT"
        sqlite3 wal.sqlite 'PRAGMA journal_mode=WAL; CREATE TABLE k(a); INSERT INTO k VALUES (1), (2), (3);'
        sqlite3 wal.sqlite 'INSERT INTO k SELECT a + 10 FROM k; SELECT count(*), sum(a) FROM k;'
        sqlite3 wal.sqlite 'PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;'
        sqlite3 wal.sqlite 'PRAGMA integrity_check; SELECT sum(a) FROM k;'
        ls
        "#,
    )
    .needs(&["sqlite3"])
    .native_contains("wal")
    .check();
}
