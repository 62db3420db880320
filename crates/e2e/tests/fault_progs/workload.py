"""Workloads of the fault tests (crates/e2e/tests/faults.rs) and of the
Figure 13 timeline (bench/faults/fig13.sh). Run under `virtuos run`.

  workload.py victim-storage OUT      write until an error, then recover
  workload.py victim-network OUT      echo over TCP until an error, then recover
  workload.py bystander-storage OUT STOP   write+fsync until STOP exists
  workload.py bystander-network OUT STOP   TCP echo until STOP exists
  workload.py writer OUT STOP         dd-like 64 KiB writes, bytes per 100 ms
  workload.py server OUT STOP         TCP server+client streaming, bytes per
                                      100 ms, re-creating its sockets on errors

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


def victim(kind, out):
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
    while time.time() < deadline:
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


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode.startswith("victim-"):
        victim(mode.split("-", 1)[1], out)
    elif mode.startswith("bystander-"):
        bystander(mode.split("-", 1)[1], out, sys.argv[3])
    elif mode == "writer":
        writer(out, sys.argv[3])
    elif mode == "server":
        server(out, sys.argv[3])
    else:
        sys.exit("unknown mode " + mode)
