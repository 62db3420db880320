//! The HTTP load generator on the host: `wrk` (keep-alive, fixed duration),
//! or ApacheBench `ab -k` when wrk is missing (the report then says so).
//! One run gives one requests/s sample.

use super::run_with_timeout;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Tool {
    Wrk(PathBuf),
    Ab(PathBuf),
}

/// Load-generator settings.
#[derive(Clone, Debug)]
pub struct Load {
    pub duration: u64,
    pub connections: u32,
    pub threads: u32,
}

/// A program on $PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Tool {
    /// wrk, else ab (with a loud warning), else an error naming the packages.
    pub fn find() -> anyhow::Result<Tool> {
        if let Some(w) = which("wrk") {
            return Ok(Tool::Wrk(w));
        }
        if let Some(a) = which("ab") {
            eprintln!(
                "\n*** http: wrk is MISSING; falling back to ApacheBench (ab -k). Numbers are \
                 not comparable with wrk runs. Install wrk (scripts/setup-debian.sh). ***\n"
            );
            return Ok(Tool::Ab(a));
        }
        bail!(
            "no HTTP load generator: neither wrk nor ab is on PATH (install the Debian \
             packages wrk or apache2-utils: scripts/setup-debian.sh)"
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Tool::Wrk(_) => "wrk",
            Tool::Ab(_) => "ab",
        }
    }

    fn path(&self) -> &Path {
        match self {
            Tool::Wrk(p) | Tool::Ab(p) => p,
        }
    }

    /// The tool's version line (both print it and exit non-zero).
    pub fn version(&self) -> String {
        let flag = match self {
            Tool::Wrk(_) => "-v",
            Tool::Ab(_) => "-V",
        };
        let out = Command::new(self.path()).arg(flag).output();
        out.map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines()
                .find(|l| l.contains("wrk") || l.contains("ApacheBench"))
                .unwrap_or("")
                .split(" Copyright")
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
    }

    /// The command line of one run against `url`.
    pub fn command(&self, url: &str, l: &Load) -> Command {
        let mut c = Command::new(self.path());
        match self {
            Tool::Wrk(_) => {
                c.arg(format!("-t{}", l.threads))
                    .arg(format!("-c{}", l.connections))
                    .arg(format!("-d{}s", l.duration))
                    .arg("--timeout")
                    .arg("5s")
                    .arg(url);
            }
            // -t sets -n to 50000; the -n after it lifts that limit.
            Tool::Ab(_) => {
                c.args(["-q", "-k", "-c", &l.connections.to_string()])
                    .args(["-t", &l.duration.to_string(), "-n", "100000000"])
                    .arg(url);
            }
        }
        c
    }

    /// One run: requests per second.
    pub fn run(&self, url: &str, l: &Load) -> anyhow::Result<f64> {
        let what = format!("{} {url}", self.name());
        let out = run_with_timeout(
            self.command(url, l),
            Duration::from_secs(l.duration + 30),
            &what,
        )?;
        if !out.status_ok {
            bail!("{what} failed: {}", out.stderr_tail());
        }
        match self {
            Tool::Wrk(_) => parse_wrk(&out.stdout),
            Tool::Ab(_) => parse_ab(&out.stdout),
        }
        .with_context(|| format!("{what}: output:\n{}", out.stdout))
    }
}

/// The value after `key` on the first line that starts with it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// Requests/s from wrk's output; any non-2xx/3xx response or socket error
/// fails the run (an error page would be a different benchmark).
pub fn parse_wrk(out: &str) -> anyhow::Result<f64> {
    if let Some(n) = field(out, "Non-2xx or 3xx responses:") {
        bail!("wrk saw {n} non-2xx/3xx responses");
    }
    if let Some(e) = field(out, "Socket errors:") {
        bail!("wrk saw socket errors: {e}");
    }
    let v = field(out, "Requests/sec:").context("no `Requests/sec:` line")?;
    let r: f64 = v
        .parse()
        .with_context(|| format!("bad Requests/sec {v:?}"))?;
    if !(r.is_finite() && r > 0.0) {
        bail!("wrk measured {r} requests/s");
    }
    Ok(r)
}

/// Requests/s from ab's output; failed or non-2xx requests fail the run.
pub fn parse_ab(out: &str) -> anyhow::Result<f64> {
    let failed = field(out, "Failed requests:").context("no `Failed requests:` line")?;
    if failed != "0" {
        bail!("ab: {failed} failed requests");
    }
    if let Some(n) = field(out, "Non-2xx responses:") {
        bail!("ab saw {n} non-2xx responses");
    }
    let v = field(out, "Requests per second:").context("no `Requests per second:` line")?;
    let num = v.split_whitespace().next().unwrap_or("");
    let r: f64 = num
        .parse()
        .with_context(|| format!("bad requests per second {v:?}"))?;
    if !(r.is_finite() && r > 0.0) {
        bail!("ab measured {r} requests/s");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:8080/object.bin
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.50us  100.20us   3.00ms   90.00%
    Req/Sec    30.12k     1.00k   32.00k    70.00%
  90360 requests in 3.00s, 25.00MB read
Requests/sec:  30119.45
Transfer/sec:      8.33MB
";

    #[test]
    fn wrk_output_parses() {
        assert_eq!(parse_wrk(WRK).unwrap(), 30119.45);
        let bad = WRK.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse_wrk(&bad).unwrap_err().to_string().contains("12"));
        let sock = WRK.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&sock).is_err());
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn ab_output_parses() {
        let ab = "Complete requests:      5000\nFailed requests:        0\n\
                  Requests per second:    1234.56 [#/sec] (mean)\n";
        assert_eq!(parse_ab(ab).unwrap(), 1234.56);
        assert!(parse_ab(&ab.replace("requests:        0", "requests:        3")).is_err());
        assert!(parse_ab("Failed requests: 0\n").is_err());
    }

    #[test]
    fn commands_carry_the_load() {
        let l = Load {
            duration: 3,
            connections: 8,
            threads: 1,
        };
        let c = Tool::Wrk("/usr/bin/wrk".into()).command("http://x/", &l);
        let a: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(a, ["-t1", "-c8", "-d3s", "--timeout", "5s", "http://x/"]);
        let c = Tool::Ab("/usr/bin/ab".into()).command("http://x/", &l);
        let a: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a,
            [
                "-q",
                "-k",
                "-c",
                "8",
                "-t",
                "3",
                "-n",
                "100000000",
                "http://x/"
            ]
        );
    }
}
