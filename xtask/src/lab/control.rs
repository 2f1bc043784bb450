//! The lab's control channel, the VM's second serial port: the host writes `CMD <id> <script in
//! base64>`, `guest/lab.sh` runs the script and answers `@@BEGIN <id>`, the output in base64 and
//! `@@END <id> <exit code>`. Base64 keeps a script's bytes and its output whole on a serial line.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use super::qemu::tail;
use super::GuestOutput;

pub(super) struct Control {
    ctl: BufReader<UnixStream>,
    next_id: u64,
}

impl Control {
    pub(super) fn connect(sock: &Path) -> Result<Control> {
        let stream = UnixStream::connect(sock).with_context(|| {
            format!("connecting to the lab's control channel {}", sock.display())
        })?;
        Ok(Control {
            ctl: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Runs `script` in the guest; an error (timeout, closed channel) carries the tail of
    /// `console`, the guest's kernel log.
    pub(super) fn run(
        &mut self,
        script: &str,
        timeout: Duration,
        console: &Path,
    ) -> Result<GuestOutput> {
        let id = self.next_id;
        self.next_id += 1;
        // The leading newline ends any partial line a lost byte may have left in the guest.
        let line = format!("\nCMD {id} {}\n", base64_encode(script.as_bytes()));
        self.ctl
            .get_mut()
            .write_all(line.as_bytes())
            .context("writing to the lab's control channel")?;
        let deadline = Instant::now() + timeout;
        let mut body = String::new();
        let mut inside = false;
        loop {
            let line = self
                .read_line(deadline, console)
                .with_context(|| format!("waiting for the guest to run: {}", first_line(script)))?;
            let line = line.trim_end();
            if line == format!("@@BEGIN {id}") {
                inside = true;
            } else if let Some(rest) = line.strip_prefix(&format!("@@END {id} ")) {
                let rc: i32 = rest.trim().parse().unwrap_or(-1);
                let bytes = base64_decode(&body)?;
                return Ok(GuestOutput {
                    rc,
                    out: String::from_utf8_lossy(&bytes).into_owned(),
                });
            } else if inside {
                body.push_str(line);
            }
        }
    }

    fn read_line(&mut self, deadline: Instant, console: &Path) -> Result<String> {
        let console_tail = || tail(&read_lossy(console), 30);
        let mut buf = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out; console tail:\n{}", console_tail());
            }
            self.ctl.get_ref().set_read_timeout(Some(deadline - now))?;
            match self.ctl.read_until(b'\n', &mut buf) {
                Ok(0) => bail!(
                    "the lab VM closed its control channel; console tail:\n{}",
                    console_tail()
                ),
                Ok(_) if buf.ends_with(b"\n") => {
                    return Ok(String::from_utf8_lossy(&buf).into_owned())
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("reading the lab's control channel"),
            }
        }
    }
}

/// A file's text, lossily; empty when it cannot be read.
pub(super) fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

pub(super) fn first_line(script: &str) -> &str {
    script.trim().lines().next().unwrap_or("")
}

fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Base64 as the guest's tools print it: wrapped lines, so whitespace is dropped first.
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let packed: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(packed)
        .context("invalid base64 from the guest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_takes_wrapped_lines() {
        for n in 0..300usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data, "n={n}");
        }
        assert_eq!(base64_encode(b"lab"), "bGFi");
        assert_eq!(base64_decode("bG\nFi\r\n").unwrap(), b"lab");
        assert!(base64_decode("b*Fi").is_err());
    }
}
