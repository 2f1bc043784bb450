//! Reading the attributes of one sysfs directory without ever failing the whole scan.
//!
//! sysfs changes under our feet (a controller reconnects, a namespace goes away between listing
//! and reading) and differs between kernels, so a missing or odd value is noted as a [`Skip`] and
//! the field is left `None`; the collector counts the skips.
//!
//! Text becomes label values, so it is cleaned on the way in ([`clean_text`]): bytes that are not
//! UTF-8 and control characters (a terminal escape in a model string) become U+FFFD, and a value
//! longer than [`MAX_LABEL_BYTES`] is cut. The value is kept, and the change counts as a skip.
use std::fmt::Display;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One value that was missing or could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub path: PathBuf,
    pub reason: String,
}

/// Items found under a sysfs class, with the values that had to be skipped on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed<T> {
    pub items: Vec<T>,
    pub skipped: Vec<Skip>,
}

/// Reads the attributes of one directory, noting skips into a shared list.
pub(crate) struct Attrs<'a> {
    dir: &'a Path,
    skipped: &'a mut Vec<Skip>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(dir: &'a Path, skipped: &'a mut Vec<Skip>) -> Self {
        Attrs { dir, skipped }
    }

    pub(crate) fn skip(&mut self, name: &str, reason: impl Display) {
        self.skipped.push(Skip {
            path: self.dir.join(name),
            reason: reason.to_string(),
        });
    }

    /// The cleaned text of an attribute every kernel we support has, fit for a label (at most
    /// [`MAX_LABEL_BYTES`]): absence is a skip.
    pub(crate) fn text(&mut self, name: &str) -> Option<String> {
        self.read(name, true, MAX_LABEL_BYTES)
    }

    /// The cleaned text of an attribute that some kernels, transports or setups lack (ANA state
    /// without ANA, `subsystype` before 5.18, `hostnqn` on PCIe): absence is normal.
    pub(crate) fn optional_text(&mut self, name: &str) -> Option<String> {
        self.read(name, false, MAX_LABEL_BYTES)
    }

    /// [`Attrs::text`] of an attribute that is parsed further, not a label itself (a disk's
    /// `stat` line), so not cut at the label length.
    pub(crate) fn long_text(&mut self, name: &str) -> Option<String> {
        self.read(name, true, MAX_ATTR_BYTES)
    }

    /// [`Attrs::optional_text`] of an attribute that is parsed further (`address`, whose parts
    /// become labels: [`MAX_ADDRESS_BYTES`] bounds them all).
    pub(crate) fn optional_long_text(&mut self, name: &str, max: usize) -> Option<String> {
        self.read(name, false, max)
    }

    /// A number from a required attribute; an empty or unparsable value is a skip.
    pub(crate) fn number<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: Display,
    {
        let text = self.text(name)?;
        self.parse(name, &text)
    }

    /// A number from an attribute some kernels or transports lack.
    pub(crate) fn optional_number<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: Display,
    {
        let text = self.optional_text(name)?;
        self.parse(name, &text)
    }

    /// Whether an attribute that holds a secret (`dhchap_secret`: the key itself, or `none`)
    /// has one, reading no more than `none` and its newline: the key is never in the agent's
    /// memory. Absent (a kernel or transport without it): `None`; unreadable (a kernel that
    /// makes it 0600 and an agent without the right to read it): a skip.
    pub(crate) fn secret_configured(&mut self, name: &str) -> Option<bool> {
        use std::io::Read;
        let mut head = [0u8; 5];
        let read = std::fs::File::open(self.dir.join(name)).and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        });
        match read {
            Ok(n) => Some(!matches!(&head[..n], b"none\n" | b"none" | b"")),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                self.skip(name, e);
                None
            }
        }
    }

    pub(crate) fn parse<T: FromStr>(&mut self, name: &str, text: &str) -> Option<T>
    where
        T::Err: Display,
    {
        match text.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.skip(name, format!("{text:?} is not a number: {e}"));
                None
            }
        }
    }

    fn read(&mut self, name: &str, required: bool, max: usize) -> Option<String> {
        match read_small(&self.dir.join(name)) {
            Ok(bytes) => {
                let (text, changed) = clean_text(&bytes, max);
                if let Some(why) = changed {
                    self.skip(name, why);
                }
                Some(text)
            }
            Err(e) if e.kind() == ErrorKind::NotFound && !required => None,
            Err(e) => {
                self.skip(name, e);
                None
            }
        }
    }
}

/// The most a sysfs attribute read may return. The kernel gives an attribute one page (4 KiB on
/// x86_64, up to 64 KiB on arm64); anything longer is not an attribute (a file or device put in
/// its place: `/dev/zero` would never end) and is refused, whatever it holds.
pub(crate) const MAX_ATTR_BYTES: usize = 64 << 10;

/// The longest text kept for a label value, in bytes. The longest the kernel prints there is an
/// NQN (at most 223 bytes by the NVMe base specification); a model is 40, a serial 20. Anything
/// longer is not what the kernel writes, and would weigh on every series that carries it.
pub(crate) const MAX_LABEL_BYTES: usize = 256;

/// The longest `address` attribute kept: its parts (`traddr=`, `host_traddr=`, `src_addr=`, ...)
/// become labels; a real one, IPv6 on every part, is under 200 bytes.
pub(crate) const MAX_ADDRESS_BYTES: usize = 1024;

/// An attribute's bytes as text fit for a label: trimmed (sysfs text ends in a newline; model,
/// serial and firmware are space padded, some attributes NUL padded), bytes that are not UTF-8
/// and control characters replaced by U+FFFD, cut to at most `max` bytes at a character
/// boundary. The second value says what had to change, `None` when nothing did.
pub(crate) fn clean_text(bytes: &[u8], max: usize) -> (String, Option<String>) {
    let mut why = Vec::new();
    let lossy = String::from_utf8_lossy(bytes);
    if matches!(lossy, std::borrow::Cow::Owned(_)) {
        why.push("not UTF-8".to_owned());
    }
    let trimmed = lossy.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let mut text: String = if trimmed.chars().any(char::is_control) {
        why.push("control characters".to_owned());
        trimmed
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        trimmed.to_owned()
    };
    if text.len() > max {
        why.push(format!("{} bytes, cut to {max}", text.len()));
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let why = (!why.is_empty()).then(|| format!("{}: replaced by U+FFFD or cut", why.join(", ")));
    (text, why)
}

/// The bytes of a small file (a sysfs attribute is at most a page) by open and read alone, at
/// most [`MAX_ATTR_BYTES`]; one read for an attribute shorter than 4 KiB. `std::fs::read` first
/// asks for the file's size and position (statx, lseek), which sysfs answers with 4096 whatever
/// the content: two syscalls in five per attribute saved, and syscalls are most of what a
/// scrape costs.
pub(crate) fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) if buf.len() + n > MAX_ATTR_BYTES => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("longer than {MAX_ATTR_BYTES} bytes: not a sysfs attribute"),
                ))
            }
            // A read shorter than asked is the end: sysfs (kernfs) hands the whole of an
            // attribute's text to a read that has room for it, and so does a regular file; the
            // read that would return 0 was a third of the syscalls of an attribute, and under
            // TCG syscalls are most of a scrape's cost. A page or more reads on to the end.
            Ok(n) if n < chunk.len() => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(buf);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A small file's text, cleaned as a label value ([`clean_text`]: trimmed, no control
/// characters, at most [`MAX_LABEL_BYTES`]); `None` when it cannot be read. For readers that
/// keep no skip list (a module parameter, the possible CPUs): what was cleaned is not counted.
pub(crate) fn read_trim(path: &Path) -> Option<String> {
    read_clean(path).map(|(text, _)| text)
}

/// [`read_trim`], and whether the text had to be cleaned (for readers that count it).
pub(crate) fn read_clean(path: &Path) -> Option<(String, bool)> {
    let bytes = read_small(path).ok()?;
    let (text, changed) = clean_text(&bytes, MAX_LABEL_BYTES);
    Some((text, changed.is_some()))
}

/// Why a listed directory cannot be read as one (see [`still_there`]).
#[derive(Debug)]
pub(crate) enum Gone {
    /// Removed since its class was listed (its link dangles): the kernel deleted it, which is
    /// no error (a controller past its `ctrl_loss_tmo`, a disconnect).
    Vanished,
    /// Something no kernel makes: a link that loops, a file where a directory belongs.
    Bad(String),
}

impl Gone {
    /// What to count: nothing for a deletion, a skip for the rest.
    pub(crate) fn into_skip(self, path: PathBuf) -> Option<Skip> {
        match self {
            Gone::Vanished => None,
            Gone::Bad(reason) => Some(Skip { path, reason }),
        }
    }
}

/// Whether `dir` is still a directory that resolves: a controller or subsystem removed since
/// its class was listed, or a link that loops, is not; its attributes would all be missing, and
/// emitting it would make series with empty labels.
pub(crate) fn still_there(dir: &Path) -> Result<(), Gone> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Gone::Bad("not a directory".to_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Gone::Vanished),
        Err(e) => Err(Gone::Bad(format!("unresolvable ({e})"))),
    }
}

/// Names of the entries of a directory, sorted; a missing directory has none (no NVMe on this
/// node is not an error), an unreadable one is.
pub(crate) fn entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names: Vec<String> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Numeric order (nvme2 before nvme10) keeps the output stable and readable.
    names.sort_by_key(|n| natural_key(n));
    Ok(names)
}

/// A sort key that orders the digits of a name by value: `nvme2` < `nvme10`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-sized attribute is read whole; a file in an attribute's place that never ends
    /// (`/dev/zero`) or is too long is refused after at most the cap, never read to the end.
    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page");
        std::fs::write(&page, vec![b'x'; 4096]).unwrap();
        assert_eq!(read_small(&page).unwrap().len(), 4096);
        let long = dir.path().join("long");
        std::fs::write(&long, vec![b'x'; MAX_ATTR_BYTES + 1]).unwrap();
        let e = read_small(&long).unwrap_err();
        assert!(e.to_string().contains("not a sysfs attribute"), "{e}");
        let started = std::time::Instant::now();
        assert!(read_small(Path::new("/dev/zero")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(read_trim(Path::new("/dev/zero")), None);
    }

    /// A read stops at the first short read: a file longer than a read's buffer (a 64 KiB-page
    /// kernel's attribute) is still read to its end, and a real sysfs attribute whole.
    #[test]
    fn reads_stop_at_the_end_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4097, 8192, 10000] {
            let f = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&f, &bytes).unwrap();
            assert_eq!(read_small(&f).unwrap(), bytes, "{len} bytes");
        }
        let possible = Path::new("/sys/devices/system/cpu/possible");
        if let Ok(whole) = std::fs::read(possible) {
            assert_eq!(read_small(possible).unwrap(), whole);
        }
    }

    #[test]
    fn label_text_is_cleaned_and_capped_and_the_change_counted() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        w("model", b"\x1b[31mEvil\x07 Disk   \n");
        w("serial", b"SN\xff\xfe01\n");
        w(
            "subsysnqn",
            format!("nqn.test:{}\n", "\u{e9}".repeat(200)).as_bytes(),
        );
        w("firmware_rev", b"1.0\0\0\0\n");
        w(
            "stat",
            format!("{}\n", "18446744073709551615 ".repeat(17)).as_bytes(),
        );
        let mut skipped = Vec::new();
        let mut a = Attrs::new(dir.path(), &mut skipped);
        assert_eq!(a.text("model").unwrap(), "\u{FFFD}[31mEvil\u{FFFD} Disk");
        assert_eq!(a.text("serial").unwrap(), "SN\u{FFFD}\u{FFFD}01");
        let nqn = a.text("subsysnqn").unwrap();
        // Cut at a character boundary: `é` is two bytes, after the 9 of `nqn.test:`.
        assert_eq!(nqn.len(), 255, "{nqn}");
        assert!(nqn.starts_with("nqn.test:\u{e9}") && nqn.ends_with('\u{e9}'));
        // NUL padding is trimmed, not a change; a long line parsed further is not cut.
        assert_eq!(a.text("firmware_rev").unwrap(), "1.0");
        assert_eq!(a.long_text("stat").unwrap().split(' ').count(), 17);
        let reasons: Vec<_> = skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("control characters"), "{reasons:?}");
        assert!(reasons[1].contains("not UTF-8"), "{reasons:?}");
        assert!(reasons[2].contains("cut to 256"), "{reasons:?}");
    }

    #[test]
    fn required_missing_is_a_skip_optional_missing_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut skipped = Vec::new();
        let mut a = Attrs::new(dir.path(), &mut skipped);
        assert_eq!(a.text("state"), None);
        assert_eq!(a.optional_text("ana_state"), None);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].path, dir.path().join("state"));
    }

    #[test]
    fn text_is_trimmed_and_garbage_numbers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model"), "Linux       \n").unwrap();
        std::fs::write(dir.path().join("kato"), "5x\n").unwrap();
        std::fs::write(dir.path().join("cntlid"), "\n").unwrap();
        std::fs::write(dir.path().join("sqsize"), "127\n").unwrap();
        let mut skipped = Vec::new();
        let mut a = Attrs::new(dir.path(), &mut skipped);
        assert_eq!(a.text("model").as_deref(), Some("Linux"));
        assert_eq!(a.number::<u32>("kato"), None);
        assert_eq!(a.number::<u32>("cntlid"), None);
        assert_eq!(a.number::<u32>("sqsize"), Some(127));
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn entries_sort_numerically_and_a_missing_dir_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["nvme10", "nvme2", "nvme0"] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        assert_eq!(entries(dir.path()).unwrap(), ["nvme0", "nvme2", "nvme10"]);
        assert_eq!(entries(&dir.path().join("absent")).unwrap().len(), 0);
    }
}
