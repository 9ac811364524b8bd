//! `sockherd import FILE`: the apps of a PM2 ecosystem file as systemd
//! units, the ones `sockherd unit` writes, printed, written (`--output`) or
//! installed (`--install`).
//!
//! The file is read as PM2 reads it ([`ecosystem`]; JavaScript only by
//! running node, [`evaluate`]). Each app becomes the command line of
//! `sockherd unit` that runs it ([`app`]), parsed by the same definition as
//! when typed, so every value is checked as if typed; each option PM2 has
//! and sockherd has not is said, with why ([`options`]). The report goes to
//! stderr, one block per app, starting with that command. If any app cannot
//! be imported, nothing is written: every reason is printed, and the others
//! can be imported with `--only`.

mod app;
mod ecosystem;
mod evaluate;
mod options;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use super::unit::{emit, quote::shell_quote};
use crate::cli::import::ImportArgs;
use crate::cli::unit::UnitArgs;
use crate::cli::{Cli, Command};
use crate::print::errln;
use app::{Context, Imported, Notes};

/// Runs `sockherd import`.
pub(crate) fn run(args: &ImportArgs) -> ExitCode {
    let apps = match plan(args) {
        Ok(apps) => apps,
        Err(errors) => {
            for error in errors {
                errln!("sockherd: {error}");
            }
            return ExitCode::from(2);
        }
    };
    for (imported, unit) in &apps {
        if let Err(e) = emit(unit) {
            errln!("sockherd: {}: {e}", imported.name);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Every app to import, with its units' options; the report printed. The
/// errors, if any app cannot be imported.
fn plan(args: &ImportArgs) -> Result<Vec<(Imported, UnitArgs)>, Vec<String>> {
    let file = &args.file;
    let dir = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .map_err(|e| vec![format!("cannot read {}: {e}", file.display())])?;
    let ecosystem = ecosystem::read(file).map_err(|e| vec![e])?;
    if let Some(note) = &ecosystem.note {
        errln!("sockherd import: {note}");
    }
    for key in &ecosystem.others {
        let why = if key == "deploy" {
            "sockherd does not deploy code (PM2's deploy runs git over ssh): deploy, then \
             `sockherd reload APP`"
        } else {
            "not a part of an ecosystem file sockherd knows"
        };
        errln!("sockherd import: {key}: not mapped: {why}");
    }
    let names: Vec<Option<String>> = ecosystem.apps.iter().map(app::name).collect();
    let mut errors = Vec::new();
    for only in &args.only {
        if !names.iter().flatten().any(|name| name == only) {
            errors.push(format!("--only {only}: no such app in {}", file.display()));
        }
    }
    for listen in &args.listen {
        if let Some(app) = &listen.app {
            if !names.iter().flatten().any(|name| name == app) {
                errors.push(format!(
                    "--listen {app}=…: no such app in {}",
                    file.display()
                ));
            }
        }
    }
    let selected = |name: &Option<String>| {
        args.only.is_empty() || name.as_ref().is_some_and(|name| args.only.contains(name))
    };
    if args.listen.iter().any(|listen| listen.app.is_none()) {
        let sharing: Vec<&str> = names
            .iter()
            .filter(|name| selected(name))
            .flatten()
            .filter(|name| !args.listen.iter().any(|l| l.app.as_ref() == Some(*name)))
            .map(String::as_str)
            .collect();
        if sharing.len() > 1 {
            errors.push(format!(
                "a --listen without APP= is for every app, and {} cannot all listen there; \
                 give each its own: --listen APP=ADDR",
                sharing.join(", ")
            ));
        }
    }
    let cx = Context {
        dir: &dir,
        profile: args.env.as_deref(),
        listen: &args.listen,
        run_as: &args.run_as,
    };
    let mut apps: Vec<(Imported, UnitArgs)> = Vec::new();
    for (position, app) in ecosystem.apps.iter().enumerate() {
        if !selected(&names[position]) {
            continue;
        }
        match app::import(position, app, &cx).and_then(|imported| {
            let unit = unit_args(&imported, args)?;
            Ok((imported, unit))
        }) {
            Ok((imported, unit)) => {
                if apps.iter().any(|(other, _)| other.name == imported.name) {
                    errors.push(format!("two apps are named {}", imported.name));
                }
                report(&imported);
                apps.push((imported, unit));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        return Ok(apps);
    }
    if args.only.is_empty() && ecosystem.apps.len() > 1 {
        errors.push("nothing was written; --only NAME imports the apps that can be".to_owned());
    } else {
        errors.push("nothing was written".to_owned());
    }
    Err(errors)
}

/// The options of `sockherd unit` for one app, parsed as if typed.
fn unit_args(imported: &Imported, args: &ImportArgs) -> Result<UnitArgs, String> {
    let split = imported
        .words
        .iter()
        .position(|word| word == "--")
        .unwrap_or(imported.words.len());
    let (options, command) = imported.words.split_at(split);
    let mut words: Vec<String> = ["sockherd", "unit"].map(str::to_owned).to_vec();
    words.extend(options.iter().cloned());
    if let Some(sockherd) = &args.sockherd {
        words.extend(["--sockherd".to_owned(), sockherd.clone()]);
    }
    if let Some(dir) = &args.output {
        words.push("--output".to_owned());
        words.push(dir.to_string_lossy().into_owned());
    }
    if args.install {
        words.push("--install".to_owned());
    }
    if args.force {
        words.push("--force".to_owned());
    }
    words.extend(command.iter().cloned());
    let refused = |e: clap::Error| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or("invalid").to_owned();
        format!("{}: {}", imported.name, first.trim_start_matches("error: "))
    };
    match Cli::try_parse_from(&words).map_err(refused)?.command {
        Command::Unit(unit) => Ok(*unit),
        _ => Err(format!("{}: not a unit", imported.name)),
    }
}

/// One app's block of the report, on stderr.
fn report(imported: &Imported) {
    let command: Vec<String> = imported.words.iter().map(|w| shell_quote(w)).collect();
    errln!("{}: sockherd unit {}", imported.name, command.join(" "));
    let Notes {
        mapped,
        approximated,
        not_mapped,
        warnings,
    } = &imported.notes;
    if !mapped.is_empty() {
        errln!("  mapped: {}", mapped.join(", "));
    }
    for note in approximated {
        errln!("  approximated: {note}");
    }
    for note in not_mapped {
        errln!("  not mapped: {note}");
    }
    for note in warnings {
        errln!("  note: {note}");
    }
}
