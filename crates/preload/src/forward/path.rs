//! Pure path helpers at the bottom of `forward` (no state, no calls): the
//! longest path we handle, lexical normalisation, "is this path in the
//! mount". `route` decides where a path goes with them; `state` normalises
//! the configured mount, `reopen` checks a recorded path.

/// Longest path we handle (PATH_MAX, including the NUL).
pub const PATH_MAX: usize = 4096;

/// Normalise the absolute path in `buf[..len]` in place; returns the new
/// length. The result starts with `/`, has no empty, `.` or `..`
/// components and no trailing `/` (except the root itself). `..` at the root
/// stays at the root. Input that does not start with `/` is left as is.
pub fn normalize_in_place(buf: &mut [u8], len: usize) -> usize {
    let len = len.min(buf.len());
    if buf.first() != Some(&b'/') {
        return len;
    }
    let mut w = 0usize; // bytes of output written (output is buf[..w])
    let mut r = 0usize;
    while r < len {
        while r < len && buf[r] == b'/' {
            r += 1;
        }
        let start = r;
        while r < len && buf[r] != b'/' {
            r += 1;
        }
        let comp_len = r - start;
        if comp_len == 0 || (comp_len == 1 && buf[start] == b'.') {
            continue;
        }
        if comp_len == 2 && buf[start] == b'.' && buf[start + 1] == b'.' {
            // Drop the last output component.
            while w > 0 && buf[w - 1] != b'/' {
                w -= 1;
            }
            w = w.saturating_sub(1);
            continue;
        }
        // Append "/comp". w <= start - 1 always holds: every output
        // component is preceded by at least one input '/'.
        buf[w] = b'/';
        buf.copy_within(start..r, w + 1);
        w += 1 + comp_len;
    }
    if w == 0 {
        if let Some(b) = buf.first_mut() {
            *b = b'/';
        }
        w = 1;
    }
    w
}

/// Whether normalised `path` is `mount` or below it.
pub fn is_under(path: &[u8], mount: &[u8]) -> bool {
    path == mount || (path.starts_with(mount) && path.get(mount.len()) == Some(&b'/'))
}
