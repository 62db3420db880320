//! Order statistics over per-repetition samples, and number formatting for
//! the report. Benchmarks on a noisy two-vCPU machine report medians, never
//! means, and ratios of medians measured in the same run.

use serde::{Deserialize, Serialize};

/// Median of `xs` (mean of the two middle values for an even count).
/// `None` for an empty slice; NaNs are ignored.
pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 50.0)
}

/// The `p`-th percentile (0..=100) with linear interpolation between closest
/// ranks (numpy's default), so `percentile(xs, 50.0)` is the usual median.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// Summary of one measured configuration: the raw samples and their order
/// statistics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` when there are no (non-NaN) samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        Some(Summary {
            median: median(samples)?,
            p10: percentile(samples, 10.0)?,
            p90: percentile(samples, 90.0)?,
            min: percentile(samples, 0.0)?,
            max: percentile(samples, 100.0)?,
            samples: samples.to_vec(),
        })
    }

    /// Relative spread (p90 - p10) / median, a noise indicator.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.p90 - self.p10) / self.median
        }
    }
}

/// `a / b`, or `None` when it is not a finite number.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = a / b;
    r.is_finite().then_some(r)
}

/// A ratio as the report prints it: `0.70x`, `14.2x`, `130x`; `n/a` for none.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "n/a".into(),
        Some(r) if r.abs() >= 100.0 => format!("{r:.0}x"),
        Some(r) if r.abs() >= 10.0 => format!("{r:.1}x"),
        // Tiny ratios (a TCG guest against native) keep two significant digits.
        Some(r) if r != 0.0 && r.abs() < 0.01 => format!("{r:.4}x"),
        Some(r) => format!("{r:.2}x"),
    }
}

/// A latency in nanoseconds with a sensible unit: `85.3 ns`, `12.4 µs`.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// A byte count as a power-of-two size: `32 B`, `4 KiB`, `2 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in UNITS {
        if n >= scale && n & (scale - 1) == 0 {
            return format!("{} {unit}", n / scale);
        }
    }
    for (scale, unit) in UNITS {
        if n >= scale {
            return format!("{:.1} {unit}", n as f64 / scale as f64);
        }
    }
    format!("{n} B")
}

/// Parse a size such as `16MiB`, `256k`, `4096`, `2M` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0, 5.0]), Some(3.0), "NaN ignored");
    }

    #[test]
    fn percentiles_interpolate() {
        let xs: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.0), Some(0.0));
        assert_eq!(percentile(&xs, 100.0), Some(10.0));
        assert_eq!(percentile(&xs, 10.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 25.0), Some(1.25));
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_formatting() {
        assert_eq!(fmt_ratio(ratio(7.0, 10.0)), "0.70x");
        assert_eq!(fmt_ratio(ratio(142.0, 10.0)), "14.2x");
        assert_eq!(fmt_ratio(ratio(1300.0, 10.0)), "130x");
        assert_eq!(fmt_ratio(ratio(0.27, 100.0)), "0.0027x");
        assert_eq!(fmt_ratio(Some(0.0)), "0.00x");
        assert_eq!(fmt_ratio(ratio(1.0, 0.0)), "n/a");
        assert_eq!(fmt_ratio(None), "n/a");
    }

    #[test]
    fn units() {
        assert_eq!(fmt_ns(85.34), "85.3 ns");
        assert_eq!(fmt_ns(1234.0), "1.23 µs");
        assert_eq!(fmt_ns(12_400.0), "12.4 µs");
        assert_eq!(fmt_bytes(32), "32 B");
        assert_eq!(fmt_bytes(4096), "4 KiB");
        assert_eq!(fmt_bytes(2 << 20), "2 MiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("").is_err());
    }
}
