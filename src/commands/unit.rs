//! `sockherd unit`: the systemd units that run an app, NAME.socket and
//! NAME.service, printed or installed.
//!
//! This is the single source of the units ([`render`]): `units/example.socket` and
//! `units/example.service` are this module's output for the example's
//! parameters (a test compares them byte for byte), so what the docs explain
//! is what users get. The units refer to the app through their own name
//! (`%N`): a renamed copy serves another app. The manager serves its control
//! interface on the system bus as the app's user (by default `sockherd`, the
//! package's user, which the bus policy lets own `io.sockherd.*`), and the
//! sandbox is as strict as running an arbitrary app allows. What depends on
//! the app is chosen here: `MemoryDenyWriteExecute=` stays off for Node.js
//! (V8 writes code, then executes it) and `ProtectHome=` is relaxed to
//! read-only when the app lives in a home directory.

pub(super) mod quote;
mod render;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use render::{render, Units};

use crate::cli::unit::UnitArgs;
use crate::print::{errln, outln};

/// Where `--install` puts the units.
pub(crate) const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// Runs `sockherd unit`: prints the units, or writes and installs them.
pub(crate) fn run(args: &UnitArgs) -> ExitCode {
    match emit(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sockherd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the units of `args`, or writes them (`--output`), or installs them
/// (`--install`); `sockherd import` does this for every app it imports.
pub(crate) fn emit(args: &UnitArgs) -> Result<(), String> {
    let units = render(args)?;
    match (&args.output, args.install) {
        (Some(dir), _) => write(dir, &args.name, &units, args.force).and_then(|paths| {
            paths
                .iter()
                .try_for_each(|path| outln!("{}", path.display()))
        }),
        (None, true) => install(args, &units),
        (None, false) => outln!("{}\n{}", units.socket, units.service),
    }
}

fn install(args: &UnitArgs, units: &Units) -> Result<(), String> {
    for warning in account_warnings(args) {
        errln!("sockherd: warning: {warning}");
    }
    write(Path::new(SYSTEM_UNIT_DIR), &args.name, units, args.force)?;
    let status = std::process::Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .map_err(|e| format!("cannot run systemctl daemon-reload: {e}"))?;
    if !status.success() {
        return Err(format!("systemctl daemon-reload failed ({status})"));
    }
    let name = &args.name;
    outln!("installed {SYSTEM_UNIT_DIR}/{name}.socket and {SYSTEM_UNIT_DIR}/{name}.service")?;
    outln!("start it now and at boot: systemctl enable --now {name}.socket")
}

/// What will not work as the units say, because an account is missing.
fn account_warnings(args: &UnitArgs) -> Vec<String> {
    use nix::unistd::{Group, User};
    let mut warnings = Vec::new();
    if !matches!(User::from_name(&args.run_as), Ok(Some(_))) {
        warnings.push(format!(
            "no user {}: systemd will make a transient one, which no bus policy names, so the \
             app will run without its D-Bus interface (create the user, or install the \
             sockherd package for its user sockherd)",
            args.run_as
        ));
    }
    if !matches!(Group::from_name(&args.control_group), Ok(Some(_))) {
        warnings.push(format!(
            "no group {}: only root and the app's user will be able to control it",
            args.control_group
        ));
    }
    warnings
}

/// Writes NAME.socket and NAME.service into `dir`, each through a temporary
/// file and a rename, so systemd never reads half a unit. A unit that exists
/// with other contents is kept unless `force`.
fn write(dir: &Path, name: &str, units: &Units, force: bool) -> Result<Vec<PathBuf>, String> {
    // Each unit's path, and the hidden temporary file it is written through.
    let files = [("socket", &units.socket), ("service", &units.service)].map(|(suffix, text)| {
        let file = format!("{name}.{suffix}");
        (
            dir.join(&file),
            dir.join(format!(".{file}.sockherd-new")),
            text,
        )
    });
    if !force {
        for (path, _, text) in &files {
            match fs::read_to_string(path) {
                Ok(existing) if existing != **text => {
                    return Err(format!(
                        "{} exists with other contents; --force replaces it",
                        path.display()
                    ))
                }
                _ => {}
            }
        }
    }
    for (path, temporary, text) in &files {
        fs::write(temporary, text)
            .and_then(|()| fs::rename(temporary, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files.into_iter().map(|(path, _, _)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(words: &[&str]) -> Result<Units, String> {
        render::tests::units(words)
    }

    #[test]
    fn written_units_are_kept_unless_forced() {
        let dir = std::env::temp_dir().join(format!("sockherd-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temporary directory");
        let one = units(&["a", "--listen", "1", "--", "/w"]).expect("renders");
        let two = units(&["a", "--listen", "2", "--", "/w"]).expect("renders");
        write(&dir, "a", &one, false).expect("a first write");
        write(&dir, "a", &one, false).expect("the same units again");
        assert!(write(&dir, "a", &two, false).is_err_and(|e| e.contains("--force")));
        write(&dir, "a", &two, true).expect("forced");
        assert_eq!(
            fs::read_to_string(dir.join("a.socket")).ok(),
            Some(two.socket)
        );
        fs::remove_dir_all(&dir).expect("removable");
    }
}
