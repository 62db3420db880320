"""Workloads of the fault tests (crates/e2e/tests/faults.rs) and of the
Figure 13 timeline (bench/faults/fig13.sh). Run under `virtuos run`.

  workload.py victim-storage OUT [STOP]  write until an error (or STOP exists:
                                      the file was re-opened), then recover
  workload.py victim-network OUT      echo over TCP until an error, then recover
  workload.py bystander-storage OUT STOP   write+fsync until STOP exists
  workload.py bystander-network OUT STOP   TCP echo until STOP exists
  workload.py writer OUT STOP         dd-like 64 KiB writes, bytes per 100 ms
  workload.py server OUT STOP         TCP server+client streaming, bytes per
                                      100 ms, re-creating its sockets on errors
  workload.py reopen-write OUT GO     write+fsync, wait for GO (the test kills
                                      the storage domain meanwhile), go on
                                      writing on the same descriptor
  workload.py reopen-read OUT GO      read a file partly, wait for GO, read on
  workload.py reopen-refused OUT GO   descriptors that must not be re-opened
                                      (removed, replaced, locked): EIO after GO

OUT gets one JSON document when the workload ends.
"""
import errno, json, os, socket, sys, threading, time

ROOT = "/storage"
BLOCK = b"v" * 4096


def dump(path, doc):
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


def echo_pair():
    """A listening socket and a connected client/server pair."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    c = socket.create_connection(ls.getsockname(), timeout=20)
    a, _ = ls.accept()
    return ls, c, a


def echo_once(c, a, n=4096):
    c.sendall(b"e" * n)
    got = 0
    while got < n:
        d = a.recv(n - got)
        if not d:
            raise OSError(errno.ECONNRESET, "peer closed")
        got += len(d)


def victim(kind, out, stop=None):
    doc = {"kind": kind, "ops_before": 0}
    try:
        if kind == "storage":
            fd = os.open(ROOT + "/victim.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            op = lambda: os.write(fd, BLOCK)
        else:
            ls, c, a = echo_pair()
            fd = c.fileno()
            op = lambda: echo_once(c, a)
    except OSError as e:
        doc["setup_error"] = str(e)
        dump(out, doc)
        return
    doc["ready"] = time.time()
    dump(out + ".ready", {"ready": True})
    deadline = time.time() + 60
    while time.time() < deadline and not (stop and os.path.exists(stop)):
        t = time.time()
        try:
            op()
            doc["ops_before"] += 1
        except OSError as e:
            doc["error"] = errno.errorcode.get(e.errno, str(e.errno))
            doc["error_at"] = time.time()
            doc["error_call_ms"] = (time.time() - t) * 1000
            break
    # A later call on the same descriptor fails cleanly (no hang).
    t = time.time()
    try:
        if kind == "storage":
            os.write(fd, BLOCK)
        else:
            c.send(b"x")
        doc["later"] = "ok"
    except OSError as e:
        doc["later"] = errno.errorcode.get(e.errno, str(e.errno))
    doc["later_ms"] = (time.time() - t) * 1000
    try:
        os.close(fd) if kind == "storage" else c.close()
    except OSError as e:
        doc["close"] = str(e)
    # Recovery: new descriptors work once the domain is back.
    start = time.time()
    while time.time() - start < 30:
        try:
            if kind == "storage":
                g = os.open(ROOT + "/after.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(g, b"after the restart\n")
                os.fsync(g)
                os.close(g)
                with open(ROOT + "/after.dat") as f:
                    assert f.read() == "after the restart\n"
            else:
                ls2, c2, a2 = echo_pair()
                echo_once(c2, a2)
                for s in (ls2, c2, a2):
                    s.close()
            doc["recovered_after_ms"] = (time.time() - doc.get("error_at", start)) * 1000
            break
        except OSError as e:
            doc["recovery_errors"] = doc.get("recovery_errors", 0) + 1
            doc["last_recovery_error"] = str(e)
            time.sleep(0.05)
    dump(out, doc)


def bystander(kind, out, stop):
    stamps, errors = [], []
    if kind == "storage":
        fd = os.open(ROOT + "/bystander.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def op():
            os.write(fd, BLOCK)
            os.fsync(fd)
    else:
        ls, c, a = echo_pair()
        op = lambda: echo_once(c, a)
    dump(out + ".ready", {"ready": True})
    while not os.path.exists(stop):
        try:
            op()
            stamps.append(time.time())
        except OSError as e:
            errors.append(str(e))
            time.sleep(0.05)
        time.sleep(0.005)
    dump(out, {"stamps": stamps, "errors": errors})


def buckets(stamps_sizes, t0):
    b = {}
    for t, n in stamps_sizes:
        k = int((t - t0) * 10)
        b[k] = b.get(k, 0) + n
    return b


def writer(out, stop):
    """dd-like: 64 KiB writes to one file (rewound every 64 MiB)."""
    block = b"w" * 65536
    fd = os.open(ROOT + "/writer.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0, log, errors, written = time.time(), [], [], 0
    dump(out + ".ready", {"ready": True})
    while not os.path.exists(stop):
        try:
            n = os.write(fd, block)
            written += n
            if written >= 64 << 20:
                os.lseek(fd, 0, os.SEEK_SET)
                written = 0
            log.append((time.time(), n))
        except OSError as e:
            errors.append((time.time(), str(e)))
            time.sleep(0.05)
    dump(out, {"t0": t0, "buckets": buckets(log, t0), "errors": errors})


def server(out, stop):
    """A streaming server and its client, both in the network domain; on
    an error both re-create their sockets (a supervisor's restart)."""
    t0, log, errors, restarts = time.time(), [], [], 0
    chunk = b"s" * 65536
    first = True
    while not os.path.exists(stop):
        try:
            ls, c, a = echo_pair()
            c.settimeout(5)
            if first:
                dump(out + ".ready", {"ready": True})
                first = False
            while not os.path.exists(stop):
                a.sendall(chunk)
                got = 0
                while got < len(chunk):
                    d = c.recv(len(chunk) - got)
                    if not d:
                        raise OSError(errno.ECONNRESET, "closed")
                    got += len(d)
                log.append((time.time(), got))
        except OSError as e:
            errors.append((time.time(), errno.errorcode.get(e.errno or 0, str(e))))
            restarts += 1
            for s in ("ls", "c", "a"):
                try:
                    locals()[s].close()
                except Exception:
                    pass
            time.sleep(0.05)
    dump(out, {"t0": t0, "buckets": buckets(log, t0), "errors": errors, "restarts": restarts})


def wait_for(go, limit=60):
    deadline = time.time() + limit
    while not os.path.exists(go):
        if time.time() > deadline:
            raise SystemExit("no GO file")
        time.sleep(0.02)


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def reopen_write(out, go):
    """Blocks A (block 1 overwritten with a, via lseek), fsync'd before the
    crash; blocks B written on the same descriptor after the restart."""
    doc = {"errors": []}
    fd = os.open(ROOT + "/reopen.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(4):
        os.write(fd, b"A" * 4096)
    os.lseek(fd, 4096, os.SEEK_SET)
    os.write(fd, b"a" * 4096)
    doc["pos_before"] = os.lseek(fd, 0, os.SEEK_END)
    os.fsync(fd)
    dump(out + ".ready", {"ready": True})
    wait_for(go)
    t = time.time()
    try:
        for _ in range(4):
            os.write(fd, b"B" * 4096)
        doc["first_call_ms"] = (time.time() - t) * 1000
        doc["pos_after"] = os.lseek(fd, 0, os.SEEK_CUR)
        os.fsync(fd)
        os.close(fd)
    except OSError as e:
        doc["errors"].append(errname(e))
    dump(out, doc)


def reopen_read(out, go):
    """A file read sequentially (odd sizes) across the restart: the bytes
    read are the file, in order."""
    data = bytes((i * 7 + i // 251) % 256 for i in range(200000))
    w = os.open(ROOT + "/seq.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(w, data)
    os.fsync(w)
    os.close(w)
    doc = {"errors": []}
    fd = os.open(ROOT + "/seq.dat", os.O_RDONLY)
    got = os.read(fd, 12345) + os.read(fd, 54321)
    doc["before"] = len(got)
    dump(out + ".ready", {"ready": True})
    wait_for(go)
    try:
        while True:
            b = os.read(fd, 10007)
            if not b:
                break
            got += b
        os.close(fd)
    except OSError as e:
        doc["errors"].append(errname(e))
    doc["total"] = len(got)
    doc["same"] = got == data
    if not doc["same"]:
        doc["first_diff"] = next((i for i in range(min(len(got), len(data))) if got[i] != data[i]), None)
    dump(out, doc)


def reopen_refused(out, go):
    """Removed, replaced and locked files are not re-opened: EIO, and the
    new file at the replaced path is neither read nor written."""
    import fcntl
    doc = {}
    gone = os.open(ROOT + "/gone.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(gone, b"g" * 100)
    os.fsync(gone)
    os.unlink(ROOT + "/gone.dat")
    old = os.open(ROOT + "/replaced.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(old, b"old" * 100)
    os.fsync(old)
    os.lseek(old, 0, os.SEEK_SET)
    os.unlink(ROOT + "/replaced.dat")
    new = os.open(ROOT + "/replaced.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(new, b"NEW" * 100)
    os.fsync(new)
    os.close(new)
    locked = os.open(ROOT + "/locked.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(locked, fcntl.LOCK_EX)
    os.write(locked, b"l" * 100)
    os.fsync(locked)
    plain = os.open(ROOT + "/plain.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(plain, b"p" * 100)
    os.fsync(plain)
    dump(out + ".ready", {"ready": True})
    wait_for(go)
    for name, op in (
        ("gone", lambda: os.write(gone, b"x")),
        ("replaced", lambda: os.read(old, 10)),
        ("replaced_write", lambda: os.write(old, b"X" * 10)),
        ("locked", lambda: os.write(locked, b"x")),
        ("plain", lambda: os.write(plain, b"q" * 10)),
    ):
        try:
            r = op()
            doc[name] = "ok" if not isinstance(r, bytes) else "read %r" % r[:10]
        except OSError as e:
            doc[name] = errname(e)
    for f in (gone, old, locked, plain):
        try:
            os.close(f)
        except OSError as e:
            doc.setdefault("close_errors", []).append(errname(e))
    dump(out, doc)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode.startswith("victim-"):
        victim(mode.split("-", 1)[1], out, sys.argv[3] if len(sys.argv) > 3 else None)
    elif mode.startswith("bystander-"):
        bystander(mode.split("-", 1)[1], out, sys.argv[3])
    elif mode == "writer":
        writer(out, sys.argv[3])
    elif mode == "server":
        server(out, sys.argv[3])
    elif mode == "reopen-write":
        reopen_write(out, sys.argv[3])
    elif mode == "reopen-read":
        reopen_read(out, sys.argv[3])
    elif mode == "reopen-refused":
        reopen_refused(out, sys.argv[3])
    else:
        sys.exit("unknown mode " + mode)
