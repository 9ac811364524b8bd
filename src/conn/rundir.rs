//! The manager's private directory: files it makes for its workers.
//!
//! The notify sockets of `--policy none` workers and the Node.js shim live in
//! one directory per manager, `sockherd.<pid>` (mode 0700), under
//! `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
//! `$XDG_RUNTIME_DIR`, else the temporary directory. It is removed when the
//! manager is done; one that a SIGKILLed manager left behind is removed by
//! the next manager of the same user that starts there.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The directory's name is this and the manager's pid, so that the next
/// manager can tell whose it is.
const PREFIX: &str = "sockherd.";

/// One manager's private directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates this manager's directory, after removing those of managers
    /// that are gone.
    pub(crate) fn create() -> io::Result<RunDir> {
        let base = runtime_base();
        sweep(&base);
        let path = base.join(format!("{PREFIX}{}", std::process::id()));
        // One of ours by pid: a manager that had this pid before is gone.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot create the manager's directory in {}: {e}",
                    base.display()
                ))
            })?;
        Ok(RunDir { path })
    }

    /// Takes over the directory an earlier image of this manager created,
    /// with what is in it (a re-exec: same pid, same workers).
    pub(crate) fn adopt(path: PathBuf) -> io::Result<RunDir> {
        let expected = format!("{PREFIX}{}", std::process::id());
        if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) || !path.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not this manager's directory",
                path.display()
            )));
        }
        Ok(RunDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the directories of managers that are gone (a SIGKILL leaves one
/// behind): those of this user whose pid no longer runs.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if ours && gone && pid > 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where the directory goes.
fn runtime_base() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .map(|v| {
                // systemd lists several directories separated by `:`; the first will do.
                let first = v.to_string_lossy().split(':').next().map(PathBuf::from);
                first.unwrap_or_default()
            })
            .filter(|p| p.is_absolute() && p.is_dir())
    };
    from("RUNTIME_DIRECTORY")
        .or_else(|| from("XDG_RUNTIME_DIR"))
        .unwrap_or_else(std::env::temp_dir)
}
