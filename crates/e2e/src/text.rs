//! Text for failure reports: a line diff, and the head or tail of a long
//! output.

use std::fmt::Write as _;

/// A line diff (`-` expected, `+` actual, two lines of context), for reports.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    const CAP: usize = 3000;
    if a.len() > CAP || b.len() > CAP {
        let i = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return format!(
            "(too long for a full diff) first difference at line {}:\n- {}\n+ {}\n",
            i + 1,
            a.get(i).unwrap_or(&"<end of output>"),
            b.get(i).unwrap_or(&"<end of output>")
        );
    }
    // LCS table, suffix form.
    let (n, m) = (a.len(), b.len());
    let mut t = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i * (m + 1) + j] = if a[i] == b[j] {
                t[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
            };
        }
    }
    let mut ops = Vec::new(); // (tag, line)
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(t, _)| *t != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if *tag == ' ' && !near_change(k) {
            if !skipped {
                out.push_str("  ...\n");
                skipped = true;
            }
            continue;
        }
        skipped = false;
        let _ = writeln!(out, "{tag} {line}");
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the outputs differ in the final newline)\n");
    }
    out
}

/// Keep the first `n` lines.
pub fn head(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "{}\n[... {} more lines ...]",
        lines[..n].join("\n"),
        lines.len() - n
    )
}

/// Keep the last `n` lines.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "[... {} lines cut ...]\n{}",
        lines.len() - n,
        lines[lines.len() - n..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        let d = line_diff(a, b);
        assert!(d.contains("- 5\n+ five\n"), "{d}");
        assert!(
            d.contains("  4\n") && d.contains("  6\n") && d.contains("..."),
            "{d}"
        );
        assert!(!d.contains("  1\n"), "{d}");
        assert!(line_diff("a\n", "a").contains("final newline"));
    }
}
