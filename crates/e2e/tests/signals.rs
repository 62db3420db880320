//! Signals that arrive while a thread is blocked in a forwarded call
//! (paper §4.4): the call is interrupted in the domain and fails with EINTR
//! as natively (the program's handler runs first); other calls go on.

use virtuos_e2e::{Case, Domain};

/// A SIGALRM handler that raises, so that Python does not retry the call
/// (PEP 475 retries EINTR when the handler returns normally).
const ALARM: &str = r#"
import os, signal, sys, time
class Alarm(Exception):
    pass
def on_alarm(*_):
    raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
"#;

#[test]
fn sigalrm_interrupts_a_blocked_open_of_a_fifo_in_storage() {
    let script = format!(
        r#"
        cd "$ROOT"
        mkfifo fifo
        "$PY" - <<'PY'
{ALARM}
signal.alarm(1)
start = time.monotonic()
try:
    os.open("fifo", os.O_RDONLY)
    print("opened: wrong")
except Alarm:
    took = time.monotonic() - start
    print("interrupted", "in time" if 0.5 < took < 5 else "late: %.1fs" % took)
# The file system still works after the interrupted call.
with open("after.txt", "w") as f:
    f.write("still serving\n")
print(open("after.txt").read().strip())
PY
        "#
    );
    Case::new(&script)
        .needs(&["mkfifo"])
        .native_contains("interrupted in time")
        .check();
}

#[test]
fn sigalrm_interrupts_a_blocked_accept_in_the_network_domain() {
    let d = Domain::start();
    let script = format!(
        r#"
"$PY" - <<'PY'
{ALARM}
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(1)
signal.alarm(1)
start = time.monotonic()
try:
    s.accept()
    print("accepted: wrong")
except Alarm:
    took = time.monotonic() - start
    print("interrupted", "in time" if 0.5 < took < 5 else "late: %.1fs" % took)
# The socket is still usable.
c = socket.create_connection(s.getsockname())
a, _ = s.accept()
c.sendall(b"ping")
print(a.recv(4).decode())
PY
"#
    );
    let r = d.run_virtuos(&script);
    assert_eq!(
        r.code(),
        0,
        "{}\n{}\n{}",
        r.stdout(),
        r.stderr(),
        d.diagnostics()
    );
    assert_eq!(
        r.stdout().trim(),
        "interrupted in time\nping",
        "stderr: {}\n{}",
        r.stderr(),
        d.diagnostics()
    );
}
