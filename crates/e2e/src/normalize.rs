//! Normalising output: what legitimately differs between two runs.

use std::path::Path;

/// Normalisations beyond the always-on path replacement. Each one is for a
/// difference that is legitimate between two runs of the same script.
#[derive(Clone, Copy, Debug, Default)]
pub struct Norm {
    /// `ls -l` lines: the modification time columns become `<mtime>` (the two
    /// runs happen at different times) and the column padding collapses to
    /// one space (padding follows the widest field, so one real difference
    /// would otherwise show on every line).
    pub ls_times: bool,
    /// `total N` lines of `ls -l`: N is allocated blocks, which depends on
    /// the file system's allocation (only needed if the two trees are on
    /// different file systems; the harness keeps them on the same one).
    pub ls_total: bool,
}

/// Always on: the root and scratch paths differ between the two runs
/// (`/storage` vs a temp dir), so they become `$ROOT` and `$TMP`.
pub fn normalize(text: &str, root: &Path, tmp: &Path, norm: Norm) -> String {
    let mut pairs = [
        (tmp.to_string_lossy().into_owned(), "$TMP"),
        (root.to_string_lossy().into_owned(), "$ROOT"),
    ];
    // Longest first, in case one is a prefix of the other.
    pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut s = text.to_string();
    for (from, to) in &pairs {
        if !from.is_empty() {
            s = s.replace(from.as_str(), to);
        }
    }
    if !norm.ls_times && !norm.ls_total {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if norm.ls_total && is_ls_total(body) {
            out.push_str("total <blocks>");
        } else if norm.ls_times {
            out.push_str(&normalize_ls_line(body));
        } else {
            out.push_str(body);
        }
        out.push_str(nl);
    }
    out
}

fn is_ls_total(line: &str) -> bool {
    line.strip_prefix("total ").is_some_and(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c.is_ascii_alphabetic())
    })
}

/// `-rw-r--r-- 1 root root 3 Dec  2 06:52 name` -> `-rw-r--r-- 1 root root 3 <mtime> name`.
fn normalize_ls_line(line: &str) -> String {
    // Fields with their byte offsets.
    let mut fields = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                fields.push((s, i));
                start = None;
            }
            _ => {}
        }
        if fields.len() == 8 {
            break;
        }
    }
    if let Some(s) = start {
        if fields.len() < 8 {
            fields.push((s, line.len()));
        }
    }
    if fields.len() < 8 || !is_mode_string(&line[fields[0].0..fields[0].1]) {
        return line.to_string();
    }
    let name_start = line[fields[7].1..]
        .find(|c: char| !c.is_whitespace())
        .map(|o| fields[7].1 + o);
    let mut s: Vec<&str> = fields[..5].iter().map(|&(a, b)| &line[a..b]).collect();
    s.push("<mtime>");
    let mut out = s.join(" ");
    if let Some(n) = name_start {
        out.push(' ');
        out.push_str(&line[n..]);
    }
    out
}

fn is_mode_string(s: &str) -> bool {
    let b = s.as_bytes();
    (10..=11).contains(&b.len())
        && b"-dlcbps".contains(&b[0])
        && b[1..10].iter().all(|c| b"rwxsStT-".contains(c))
        && (b.len() == 10 || b".+@".contains(&b[10]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_line_normalisation_is_narrow() {
        let n = Norm {
            ls_times: true,
            ls_total: true,
        };
        let r = Path::new("/r");
        let t = Path::new("/t");
        assert_eq!(
            normalize(
                "-rw-r--r--  1 root root   3 Dec  2 06:52 my file\n",
                r,
                t,
                n
            ),
            "-rw-r--r-- 1 root root 3 <mtime> my file\n"
        );
        assert_eq!(
            normalize("lrwxrwxrwx. 1 a b 9 Jan 10  2020 l -> /r/x\n", r, t, n),
            "lrwxrwxrwx. 1 a b 9 <mtime> l -> $ROOT/x\n"
        );
        assert_eq!(normalize("total 48\n", r, t, n), "total <blocks>\n");
        // Lines that are not ls -l lines are left alone.
        for s in [
            "hello world this is a line with nine fields\n",
            "total: 5 files\n",
            "-rw 1 2\n",
        ] {
            assert_eq!(normalize(s, r, t, n), s);
        }
        assert_eq!(normalize("total 48\n", r, t, Norm::default()), "total 48\n");
    }
}
