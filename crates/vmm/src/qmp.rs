//! A minimal QMP client (QEMU Machine Protocol, JSON lines on a unix socket).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Asynchronous events received so far (`{"event": ...}` objects).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect (retrying until `timeout` while QEMU creates the socket),
    /// read the greeting and enter command mode (`qmp_capabilities`).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP socket {}", path.display()))
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("unexpected QMP greeting: {greeting}");
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?
            == 0
        {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP message: {line:?}"))
    }

    /// Run a command; returns its `return` value or fails with its `error`.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .context("writing to QMP")?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                bail!(
                    "QMP {command} failed: {}",
                    err["desc"].as_str().unwrap_or(&err.to_string())
                );
            }
            bail!("unexpected QMP reply to {command}: {reply}");
        }
    }

    /// `query-status`: (status, running), e.g. ("running", true).
    pub fn query_status(&mut self) -> Result<(String, bool)> {
        let r = self.execute("query-status", None)?;
        Ok((
            r["status"].as_str().unwrap_or("unknown").to_string(),
            r["running"].as_bool().unwrap_or(false),
        ))
    }

    /// `quit`: QEMU exits (the connection closes after the reply, or before).
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
