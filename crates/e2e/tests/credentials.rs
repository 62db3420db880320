//! Credentials that follow the caller: after setuid/setresuid/setgroups/
//! setfsuid/capability changes — in the same process, in a forked child,
//! across exec, from a second thread — forwarded calls are checked and
//! files are created exactly as natively (issue 10; pjdfstest's seteuid
//! pattern is the conformance test). Runs as root (as CI does).

use virtuos_e2e::Case;

/// Root-owned files to test against: a 0600 secret, a 0777 directory.
const SETUP: &str = r#"
    cd "$ROOT"
    echo secret > secret; chmod 600 secret
    mkdir pub; chmod 777 pub
    echo mine > nobodys; chown 65534:0 nobodys; chmod 644 nobodys
"#;

fn case(body: &str) -> Case {
    Case::new(&format!("{SETUP}\n{body}")).needs(&[&virtuos_e2e::python()])
}

#[test]
fn privilege_drop_in_the_same_process() {
    case(
        r#"
        "$PY" - <<'PY'
import os
print("root reads:", open("secret").read().strip())
os.setgroups([]); os.setgid(65534); os.setuid(65534)
print("ids:", os.getresuid(), os.getresgid(), os.getgroups())
for what, f in [("read", lambda: open("secret")), ("write", lambda: open("secret", "a")),
                ("create in /", lambda: open("new", "w")), ("unlink", lambda: os.unlink("secret")),
                ("chmod", lambda: os.chmod("secret", 0o644)), ("chown", lambda: os.chown("pub", 65534, 65534)),
                ("noatime", lambda: os.open("secret", os.O_RDONLY | os.O_NOATIME)),
                ("noatime not owner", lambda: os.open("pub", os.O_RDONLY | os.O_NOATIME))]:
    try:
        f(); print(what, "allowed")
    except OSError as e:
        print(what, "->", e.strerror)
open("pub/created", "w").write("x")
st = os.stat("pub/created"); print("created owner:", st.st_uid, st.st_gid)
print("access W secret:", os.access("secret", os.W_OK), "R pub:", os.access("pub", os.R_OK))
# setgid bit of a file whose group we are not in is cleared by chmod.
os.chmod("nobodys", 0o2755); print("mode after chmod 2755: %o" % os.stat("nobodys").st_mode)
PY
        ls -ln pub | awk 'NR>1 {print $1, $3, $4, $NF}'
        "#,
    )
    .check();
}

#[test]
fn effective_ids_switch_back_and_forth_like_pjdfstest() {
    case(
        r#"
        "$PY" - <<'PY'
import os
def tryit(what, f):
    try: f(); print(what, "allowed")
    except OSError as e: print(what, "->", e.strerror)
os.setgroups([65534]); os.setegid(65534); os.seteuid(65534)
tryit("read secret", lambda: open("secret"))
tryit("mkdir in pub", lambda: os.mkdir("pub/d"))
print("d owner:", os.stat("pub/d").st_uid, os.stat("pub/d").st_gid)
# access() checks the real ids (root) natively.
print("access R secret:", os.access("secret", os.R_OK))
os.seteuid(0); os.setegid(0); os.setgroups([])
tryit("read secret as root again", lambda: open("secret").read())
os.setresuid(0, 65534, 0)
tryit("read secret with resuid", lambda: open("secret"))
os.setresuid(0, 0, 0)
tryit("unlink pub/d back as root", lambda: os.rmdir("pub/d"))
PY
        "#,
    )
    .check();
}

#[test]
fn forked_child_and_second_thread_and_setfsuid() {
    case(
        r#"
        "$PY" - <<'PY'
import os, threading, ctypes
libc = ctypes.CDLL(None, use_errno=True)
def tryit(what, f):
    try: f(); print(what, "allowed")
    except OSError as e: print(what, "->", e.strerror)
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    tryit("child reads secret", lambda: open("secret"))
    open("pub/by-child", "w").close()
    os._exit(0)
os.waitpid(pid, 0)
tryit("parent still reads secret", lambda: open("secret").read())
print("by-child owner:", os.stat("pub/by-child").st_uid)
# setfsuid: only file-system checks and new files change.
libc.setfsgid(65534); libc.setfsuid(65534)
tryit("read secret with fsuid", lambda: open("secret"))
open("pub/by-fsuid", "w").close()
print("by-fsuid owner:", os.stat("pub/by-fsuid").st_uid, os.stat("pub/by-fsuid").st_gid)
libc.setfsuid(0); libc.setfsgid(0)
tryit("read secret fsuid back", lambda: open("secret").read())
# A second thread drops the whole process (glibc applies setuid to all threads).
t = threading.Thread(target=lambda: (os.setgroups([]), os.setgid(65534), os.setuid(65534)))
t.start(); t.join()
tryit("main thread after the other dropped", lambda: open("secret"))
done = []
t = threading.Thread(target=lambda: done.append(os.path.exists("secret") and os.access("pub", os.W_OK)))
t.start(); t.join(); print("new thread sees:", done)
PY
        "#,
    )
    .check();
}

#[test]
fn exec_with_other_ids_and_without_capabilities() {
    case(
        r#"
        setpriv --reuid=65534 --regid=65534 --clear-groups cat secret || echo "cat as nobody failed"
        setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > pub/by-exec; id -u' 
        ls -ln pub/by-exec | awk '{print $3, $4}'
        # root without the DAC capabilities cannot read nobody's 0600 file.
        chmod 600 nobodys
        setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search cat nobodys || echo "cat without DAC caps failed"
        cat nobodys
        "#,
    )
    .needs(&["setpriv", "cat", "sh", "id"])
    .check();
}
