//! Where tracefs is: the tracepoint format files live there. Tried in order: the root given on the
//! command line, `/sys/kernel/tracing`, `/sys/kernel/debug/tracing`, and last a fresh mount of
//! tracefs at `/sys/kernel/tracing` (logged, since it changes the host's mount table).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

const TRACING: &str = "/sys/kernel/tracing";
const DEBUG_TRACING: &str = "/sys/kernel/debug/tracing";

/// A directory is a mounted tracefs when it has the `events` directory. Not being allowed to look
/// is an error of its own (tracefs is root-only), not "absent".
fn is_tracefs(p: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(p.join("events")) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(e).with_context(|| format!("reading tracefs at {}", p.display()))
        }
        Err(_) => Ok(false),
    }
}

/// Finds tracefs, mounting it when no candidate is mounted. An explicit root is used as is: it is
/// how tests and unusual hosts point at their own tree.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if is_tracefs(p)? {
            return Ok(p.to_owned());
        }
        bail!(
            "{} is not a tracefs root (no `events` directory)",
            p.display()
        );
    }
    for p in [TRACING, DEBUG_TRACING] {
        if is_tracefs(Path::new(p))? {
            return Ok(PathBuf::from(p));
        }
    }
    mount_tracefs(Path::new(TRACING))?;
    log::info!("mounted tracefs at {TRACING}: it was not mounted");
    Ok(PathBuf::from(TRACING))
}

fn mount_tracefs(at: &Path) -> anyhow::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let target = CString::new(at.as_os_str().as_bytes()).context("tracefs path")?;
    let fstype = c"tracefs";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {} failed: {err}",
            at.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_root_must_have_events() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not a tracefs root"), "{err}");
        std::fs::create_dir(dir.path().join("events")).unwrap();
        assert_eq!(locate(Some(dir.path())).unwrap(), dir.path());
    }
}
