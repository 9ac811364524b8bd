//! The shim: sockherd's part inside a Node.js worker (`shim.js`).
//!
//! Some things only the worker's own process can tell or do: whether the app
//! listens for the stop signal (then its handler must run, with its servers
//! still open), and a `listen({exclusive: true})` that binds in the worker and
//! never reaches the manager. The manager writes a few lines of JavaScript to
//! its private directory ([`crate::conn::rundir`]) and has Node load them
//! before the app, by adding `--require=<file>` to `NODE_OPTIONS` (after
//! whatever `NODE_OPTIONS` the manager was given). The app's code is not
//! touched. The shim talks to the manager with internal messages
//! (`NODE_SOCKHERD`), which the app never sees.
//!
//! A worker whose shim does not say hello (a wrapper that clears
//! `NODE_OPTIONS`, say) is stopped the way Node's cluster stops a worker:
//! `disconnect`.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use crate::conn::rundir::RunDir;

/// The JavaScript the workers load.
const SOURCE: &str = include_str!("shim.js");

/// The shim's file, written once per manager; its directory lives as long
/// as the shim is in use.
#[derive(Debug)]
pub(crate) struct Shim {
    path: PathBuf,
    _dir: Option<Rc<RunDir>>,
}

impl Shim {
    /// Writes the shim into `dir`.
    pub(crate) fn write(dir: Rc<RunDir>) -> io::Result<Shim> {
        let path = dir.path().join("node-shim.js");
        std::fs::write(&path, SOURCE).map_err(|e| {
            io::Error::other(format!(
                "cannot write the Node.js shim {}: {e}",
                path.display()
            ))
        })?;
        Ok(Shim {
            path,
            _dir: Some(dir),
        })
    }

    /// The shim at `path`, without writing it (for tests).
    #[cfg(test)]
    pub(crate) fn at(path: PathBuf) -> Shim {
        Shim { path, _dir: None }
    }

    /// `NODE_OPTIONS` for a worker: `given` (the manager's own, if any),
    /// then the shim's `--require`.
    pub(crate) fn node_options(&self, given: Option<OsString>) -> OsString {
        let path = self.path.to_string_lossy();
        let require = if path.contains([' ', '"', '\\']) {
            format!(
                "--require=\"{}\"",
                path.replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            format!("--require={path}")
        };
        match given.filter(|options| !options.is_empty()) {
            Some(mut options) => {
                options.push(" ");
                options.push(require);
                options
            }
            None => require.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_comes_after_the_options_the_manager_was_given() {
        let shim = Shim::at("/run/sockherd.1/node-shim.js".into());
        assert_eq!(
            shim.node_options(None),
            "--require=/run/sockherd.1/node-shim.js"
        );
        assert_eq!(
            shim.node_options(Some("--max-old-space-size=512".into())),
            "--max-old-space-size=512 --require=/run/sockherd.1/node-shim.js"
        );
        let spaced = Shim::at("/tmp/my dir/node-shim.js".into());
        assert_eq!(
            spaced.node_options(None),
            "--require=\"/tmp/my dir/node-shim.js\""
        );
    }
}
