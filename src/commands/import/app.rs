//! One PM2 app as the `sockherd unit` command line that runs it, and a note
//! for every option it had: how it was mapped, approximated, or why it was
//! not. Nothing is left out without a word.
//!
//! Paths are taken from the ecosystem file's directory, where `pm2 start` is
//! usually run: `cwd` (the unit's WorkingDirectory=, that directory when not
//! set) and `script` from there, or from `PATH` for a bare command. The
//! interpreter is PM2's choice: `interpreter`, else by the script's
//! extension, else node for a script that is neither a binary nor starts
//! with `#!`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ecosystem::App;
use super::options::{canonical, fate, Fate};
use crate::cli::import::ListenFor;
use crate::cli::unit::DEFAULT_USER;

/// What every app of one import shares.
pub(super) struct Context<'a> {
    /// The ecosystem file's directory, absolute.
    pub dir: &'a Path,
    /// `--env NAME`.
    pub profile: Option<&'a str>,
    /// `--listen`.
    pub listen: &'a [ListenFor],
    /// `--run-as`, unless the app says `uid`.
    pub run_as: &'a str,
}

/// One app, imported.
#[derive(Debug)]
pub(super) struct Imported {
    pub name: String,
    /// The arguments of `sockherd unit` that make its units.
    pub words: Vec<String>,
    pub notes: Notes,
}

/// What became of each option, in the file's order within each kind.
#[derive(Debug, Default)]
pub(super) struct Notes {
    pub mapped: Vec<String>,
    pub approximated: Vec<String>,
    pub not_mapped: Vec<String>,
    /// Things to know that are no option's fault.
    pub warnings: Vec<String>,
}

/// PM2's interpreters by script extension (its `interpreter.json`, with
/// python3 for `python`, which Debian does not have).
const INTERPRETERS: [(&str, &str); 9] = [
    ("js", "node"),
    ("cjs", "node"),
    ("mjs", "node"),
    ("sh", "bash"),
    ("py", "python3"),
    ("rb", "ruby"),
    ("php", "php"),
    ("pl", "perl"),
    ("ts", "bun"),
];

/// Maps the app at `position` (0-based) of the file.
pub(super) fn import(position: usize, app: &App, cx: &Context<'_>) -> Result<Imported, String> {
    // Each option under the name PM2 reads it by, with the name it was given.
    let mut options: BTreeMap<&str, (&str, &Value)> = BTreeMap::new();
    for (key, value) in app {
        if let Some((other, _)) = options.insert(canonical(key), (key, value)) {
            return Err(format!(
                "app {}: both {other} and {key} are given",
                position + 1
            ));
        }
    }
    let get = |key: &str| options.get(key).map(|(_, value)| *value);
    let label = |key: &'static str| options.get(key).map_or(key, |(given, _)| *given);

    let script = match get("script") {
        Some(Value::String(script)) if !script.is_empty() => script.clone(),
        Some(_) => return Err(format!("app {}: `script` is not a path", position + 1)),
        None => return Err(format!("app {}: no `script`", position + 1)),
    };
    let name = name(app).ok_or_else(|| format!("app {}: `name` is not a name", position + 1))?;
    let fail = |why: String| format!("{name}: {why}");
    let mut notes = Notes::default();
    if get("name").is_some() {
        notes.mapped.push("name (the units' name)".into());
    }
    let mut words = vec![name.clone()];
    let mut option = |flag: &str, value: String| {
        words.push(flag.to_owned());
        words.push(value);
    };

    // Where it runs, and what.
    let cwd = match get("cwd") {
        Some(Value::String(cwd)) => {
            notes
                .mapped
                .push(format!("{} (--working-directory)", label("cwd")));
            absolute(cx.dir, cwd)
        }
        Some(other) => return Err(fail(format!("`cwd` {other} is not a path"))),
        None => cx.dir.to_path_buf(),
    };
    let program = locate(&cwd, &script);
    if !program.exists() {
        notes.warnings.push(format!(
            "{} does not exist here (yet): the unit runs it from there",
            program.display()
        ));
    }
    let interpreter = match get("exec_interpreter") {
        Some(Value::String(given)) if given.starts_with("node@") => {
            return Err(fail(format!(
                "interpreter {given} is PM2's own node version manager: give the path of \
                 that node instead"
            )))
        }
        Some(Value::String(given)) => {
            notes
                .mapped
                .push(format!("{} (the command)", label("exec_interpreter")));
            (given != "none").then(|| given.clone())
        }
        Some(other) => return Err(fail(format!("interpreter {other} is not a program"))),
        None => default_interpreter(&program),
    };
    let mut command = Vec::new();
    if let Some(interpreter) = &interpreter {
        command.push(interpreter.clone());
        if let Some(value) = get("node_args") {
            command.extend(arguments(value).map_err(|e| fail(format!("node_args: {e}")))?);
            notes
                .mapped
                .push(format!("{} (the command)", label("node_args")));
        }
    } else if get("node_args").is_some() {
        notes.not_mapped.push(format!(
            "{}: there is no interpreter to give them to (interpreter none)",
            label("node_args")
        ));
    }
    command.push(program.to_string_lossy().into_owned());
    notes
        .mapped
        .push(format!("{} (the command)", label("script")));
    if let Some(value) = get("args") {
        command.extend(arguments(value).map_err(|e| fail(format!("args: {e}")))?);
        notes.mapped.push("args (the command)".to_owned());
    }
    let runner = Path::new(&command[0])
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if matches!(runner.as_str(), "npm" | "npx" | "yarn" | "pnpm") {
        return Err(fail(format!(
            "script {runner}: a package manager would run the app as a child of its own, \
             node process, which takes the cluster channel first; give the app's entry \
             file as `script` (e.g. server.js)"
        )));
    }
    let node = matches!(runner.as_str(), "node" | "nodejs");
    if !node {
        notes.warnings.push(format!(
            "{runner} is not Node.js: its workers must speak sockherd's protocol \
             (docs/protocol.md), since a server that binds its own port cannot share \
             the socket"
        ));
    }

    // How many, and in which mode.
    let workers = instances(get("instances"), &mut notes, label("instances"), &name)
        .map_err(|e| fail(format!("instances: {e}")))?;
    match get("exec_mode").map(mode) {
        None => {}
        Some(Some("cluster")) if node => notes.mapped.push(format!(
            "{} cluster (Node.js apps always run as cluster workers)",
            label("exec_mode")
        )),
        Some(Some("cluster")) => notes.approximated.push(format!(
            "{} cluster: only Node.js apps have cluster mode; {runner} runs as sockherd workers",
            label("exec_mode")
        )),
        Some(Some(_)) if workers == 1 => notes.mapped.push(format!(
            "{} fork (a pool of one worker)",
            label("exec_mode")
        )),
        Some(Some(_)) => notes.approximated.push(format!(
            "{} fork with {workers} instances: PM2 starts separate processes that each \
             bind a port of their own; here they share the socket as workers",
            label("exec_mode")
        )),
        Some(None) => return Err(fail("exec_mode is neither fork nor cluster".into())),
    }

    // The environment, and so the port.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut profiles = Vec::new();
    if let Some(value) = get("env") {
        merge(&mut env, value, "env", &mut notes).map_err(fail)?;
        notes
            .mapped
            .push(format!("{} (--environment)", label("env")));
    }
    for (key, (given, value)) in &options {
        let Some(profile) = key.strip_prefix("env_") else {
            continue;
        };
        profiles.push(profile);
        if Some(profile) == cx.profile {
            merge(&mut env, value, given, &mut notes).map_err(fail)?;
            notes
                .mapped
                .push(format!("{given} (--env {profile}, --environment)"));
        } else {
            notes
                .not_mapped
                .push(format!("{given}: only with --env {profile}"));
        }
    }
    if let Some(profile) = cx.profile {
        if !profiles.contains(&profile) {
            notes
                .warnings
                .push(format!("no env_{profile}: env alone applies"));
        }
    }
    if let Some(port) = get("port") {
        let port = scalar(port).ok_or_else(|| fail(format!("port {port} is not a port")))?;
        env.insert("PORT".into(), port);
        notes.mapped.push(format!("{} (env PORT)", label("port")));
    }
    let listen = listen(&name, cx.listen, &mut env, &mut notes).map_err(fail)?;
    for addr in &listen {
        option("--listen", addr.clone());
    }
    option("--workers", workers.to_string());

    // Timeouts, limits, and Node's handshakes.
    if node {
        // PM2 asks a worker to stop with SIGINT (PM2_KILL_SIGNAL); apps
        // written for it handle that one.
        notes
            .mapped
            .push("PM2's stop signal, SIGINT (--kill-signal SIGINT)".into());
        option("--kill-signal", "SIGINT".to_owned());
    }
    if let Some(value) = get("kill_timeout") {
        let ms = milliseconds(value).ok_or_else(|| fail(format!("kill_timeout {value}")))?;
        let timeout = duration(ms);
        notes
            .mapped
            .push(format!("kill_timeout (--kill-timeout {timeout})"));
        option("--kill-timeout", timeout);
    }
    if let Some(value) = get("listen_timeout") {
        match milliseconds(value) {
            Some(0) => notes.not_mapped.push(
                "listen_timeout 0: it would kill every new worker at once; sockherd's \
                 default (10s) stays"
                    .into(),
            ),
            Some(ms) => {
                let timeout = duration(ms);
                notes
                    .mapped
                    .push(format!("listen_timeout (--ready-timeout {timeout})"));
                option("--ready-timeout", timeout);
            }
            None => return Err(fail(format!("listen_timeout {value}"))),
        }
    }
    if let Some(value) = get("max_memory_restart") {
        let bytes = memory(value).ok_or_else(|| fail(format!("max_memory_restart {value}")))?;
        let size = size(bytes);
        notes
            .mapped
            .push(format!("max_memory_restart (--max-memory {size})"));
        option("--max-memory", size);
    }
    if let Some(value) = get("max_restarts") {
        let count = value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| fail(format!("max_restarts {value}")))?;
        option("--max-restarts", count.to_string());
        notes.mapped.push(format!(
            "max_restarts (--max-restarts {count}: every crash within 5 minutes counts)"
        ));
    }
    let mut flags = Vec::new();
    for (key, flag) in [
        ("wait_ready", "--wait-ready"),
        ("shutdown_with_message", "--shutdown-message"),
    ] {
        match get(key) {
            None => {}
            Some(Value::Bool(true)) => {
                flags.push(flag);
                notes.mapped.push(format!("{key} ({flag})"));
            }
            Some(Value::Bool(false)) => notes.mapped.push(format!("{key} false (the default)")),
            Some(other) => return Err(fail(format!("{key} {other} is not true or false"))),
        }
    }

    // Who it runs as.
    let user = account(get("uid"), "uid", &mut notes).map_err(fail)?;
    match user {
        Some(user) => option("--run-as", user),
        None if cx.run_as != DEFAULT_USER => option("--run-as", cx.run_as.to_owned()),
        None => {}
    }
    if let Some(group) = account(get("gid"), "gid", &mut notes).map_err(fail)? {
        option("--run-group", group);
    }
    option("--working-directory", cwd.to_string_lossy().into_owned());
    for (key, value) in &env {
        option("--environment", format!("{key}={value}"));
    }
    words.extend(flags.iter().map(|flag| (*flag).to_owned()));

    // Everything else: said why.
    for (key, (given, value)) in &options {
        let known = [
            "script",
            "name",
            "cwd",
            "exec_interpreter",
            "node_args",
            "args",
            "instances",
            "exec_mode",
            "env",
            "port",
            "kill_timeout",
            "listen_timeout",
            "max_memory_restart",
            "max_restarts",
            "wait_ready",
            "shutdown_with_message",
            "uid",
            "gid",
        ];
        if known.contains(key) || key.starts_with("env_") {
            continue;
        }
        match fate(key, value, &name) {
            Some((Fate::Approximated, why)) => {
                notes.approximated.push(format!("{given}: {why}"));
            }
            Some((Fate::NotMapped, why)) => notes.not_mapped.push(format!("{given}: {why}")),
            None if *key == "autorestart" => {
                notes.mapped.push("autorestart (always)".into());
            }
            None => notes
                .not_mapped
                .push(format!("{given}: not a PM2 option sockherd knows")),
        }
    }
    words.push("--".to_owned());
    words.extend(command);
    Ok(Imported { name, words, notes })
}

/// The app's name: `name`, or PM2's name for an app without one; `None`
/// when `name` is no string.
pub(super) fn name(app: &App) -> Option<String> {
    match app.get("name") {
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => None,
        None => ["script", "exec", "cmd"]
            .iter()
            .find_map(|key| app.get(*key)?.as_str())
            .map(default_name),
    }
}

/// PM2's name for an app without one: the script's file name, less its
/// extension.
fn default_name(script: &str) -> String {
    let file = Path::new(script.trim_end_matches('/'))
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(script);
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
        _ => file.to_owned(),
    }
}

/// `path` from `dir` when relative, with `.` and `..` resolved.
fn absolute(dir: &Path, path: &str) -> PathBuf {
    let mut resolved = PathBuf::new();
    for part in dir.join(path).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            other => resolved.push(other),
        }
    }
    resolved
}

/// The script as PM2 finds it: from `cwd`, or a bare command from `PATH`.
fn locate(cwd: &Path, script: &str) -> PathBuf {
    let local = absolute(cwd, script);
    if local.exists() || script.contains('/') {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(script))
                .find(|found| found.is_file())
        })
        .unwrap_or(local)
}

/// The interpreter PM2 would pick for `program`; `None` to run it as it is.
/// PM2 runs a binary as it is and anything else with node; here a script
/// that starts with `#!` names its own interpreter too. A program that is
/// not there (yet) is taken for a Node.js one, as PM2's default.
fn default_interpreter(program: &Path) -> Option<String> {
    let extension = program.extension().and_then(|e| e.to_str());
    if let Some((_, interpreter)) = INTERPRETERS.iter().find(|(ext, _)| Some(*ext) == extension) {
        return Some((*interpreter).to_owned());
    }
    let mut head = [0u8; 4];
    let read = std::fs::File::open(program).and_then(|mut file| file.read(&mut head));
    match read {
        Ok(n) if head[..n].starts_with(b"\x7fELF") || head[..n].starts_with(b"#!") => None,
        _ => Some("node".to_owned()),
    }
}

/// `args` or `node_args`: a list, or a string split as PM2 splits it.
fn arguments(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| format!("{item} is not an argument")))
            .collect(),
        Value::String(text) => Ok(split(text)),
        other => Err(format!("{other} is neither a list nor a string")),
    }
}

/// PM2's split of an argument string: on blanks, a '…' or "…" word without
/// its quotes, `key="a b"` as one word with them.
fn split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while let Some(first) = rest.chars().next() {
        let quoted = matches!(first, '"' | '\'')
            .then(|| rest[1..].find(first).map(|end| (end + 2, &rest[1..=end])))
            .flatten();
        let (taken, word) = match quoted {
            Some((taken, inner)) => (taken, inner.to_owned()),
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let assignment = rest[..end].find("=\"").or_else(|| rest[..end].find("='"));
                let end = match assignment {
                    Some(at) if !rest[..at].contains(['"', '\'']) => {
                        let quote = &rest[at + 1..at + 2];
                        rest[at + 2..]
                            .find(quote)
                            .map_or(end, |close| at + 2 + close + 1)
                    }
                    _ => end,
                };
                (end, rest[..end].to_owned())
            }
        };
        if !word.trim().is_empty() {
            words.push(word);
        }
        rest = rest[taken..].trim_start();
    }
    words
}

/// A string, number or boolean as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `instances` as a worker count: 0 for one per CPU.
fn instances(
    value: Option<&Value>,
    notes: &mut Notes,
    given: &str,
    app: &str,
) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(1);
    };
    let count = match value {
        Value::String(text) if text == "max" => 0,
        Value::String(text) => text
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is not a number or max"))?,
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| format!("{number} is not a whole number"))?,
        other => return Err(format!("{other} is not a number or max")),
    };
    if count < 0 {
        notes.approximated.push(format!(
            "{given} {count}: PM2's \"CPUs minus {}\"; sockherd's --workers 0 is one per \
             CPU (its manager needs no core of its own); scale down with `sockherd scale \
             {app} -{}` if you want the core",
            -count, -count
        ));
        return Ok(0);
    }
    let workers = u32::try_from(count).map_err(|_| format!("{count} is too many"))?;
    notes.mapped.push(match workers {
        0 => format!("{given} {value} (--workers 0: one per CPU)"),
        n => format!("{given} (--workers {n})"),
    });
    Ok(workers)
}

/// `exec_mode`'s value, without PM2's `_mode` suffix.
fn mode(value: &Value) -> Option<&'static str> {
    match value.as_str()?.trim_end_matches("_mode") {
        "cluster" => Some("cluster"),
        "fork" => Some("fork"),
        _ => None,
    }
}

/// Adds `env` (or a profile) to the environment; a variable a unit cannot
/// carry is noted, not set.
fn merge(
    env: &mut BTreeMap<String, String>,
    value: &Value,
    given: &str,
    notes: &mut Notes,
) -> Result<(), String> {
    let Value::Object(vars) = value else {
        return Err(format!("{given} is not an object of variables"));
    };
    for (key, value) in vars {
        let text = match scalar(value) {
            Some(text) => text,
            None => {
                notes.not_mapped.push(format!(
                    "{given}.{key}: {value} is not a value a variable can hold"
                ));
                continue;
            }
        };
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            notes.not_mapped.push(format!(
                "{given}.{key}: a unit's variable name is letters, digits and _"
            ));
        } else if text.chars().any(char::is_control) {
            notes.not_mapped.push(format!(
                "{given}.{key}: a unit's variable cannot hold control characters"
            ));
        } else {
            env.insert(key.clone(), text);
        }
    }
    Ok(())
}

/// Where app `name` listens: its `--listen APP=`, else the bare `--listen`,
/// else its `PORT`. A single port given on the command line becomes `PORT`
/// too, so that the app's `listen(process.env.PORT)` finds the socket.
fn listen(
    name: &str,
    given: &[ListenFor],
    env: &mut BTreeMap<String, String>,
    notes: &mut Notes,
) -> Result<Vec<String>, String> {
    let mine: Vec<String> = given
        .iter()
        .filter(|l| l.app.as_deref() == Some(name))
        .map(|l| l.addr.0.clone())
        .collect();
    let addrs = if mine.is_empty() {
        given
            .iter()
            .filter(|l| l.app.is_none())
            .map(|l| l.addr.0.clone())
            .collect()
    } else {
        mine
    };
    if addrs.is_empty() {
        let port = env.get("PORT").ok_or(
            "no port: sockherd serves an app from a socket systemd owns, and this app \
             names none (no env.PORT); give --listen NAME=PORT, or, for an app that serves \
             nothing (a queue worker), a plain systemd service or `sockherd serve \
             --protocol node-ipc` (docs/node.md, workers that never listen)",
        )?;
        return match port.parse::<u16>() {
            Ok(port) if port > 0 => {
                notes
                    .mapped
                    .push(format!("env.PORT {port} (--listen {port})"));
                Ok(vec![port.to_string()])
            }
            _ => Err(format!(
                "env PORT={port:?} is not a port; give --listen NAME=ADDR"
            )),
        };
    }
    let ports: Vec<u16> = addrs
        .iter()
        .filter_map(|addr| addr.rsplit(':').next()?.parse().ok())
        .collect();
    if let [port] = ports[..] {
        let port = port.to_string();
        match env.insert("PORT".into(), port.clone()) {
            Some(before) if before != port => notes.warnings.push(format!(
                "env PORT={before} is replaced by {port}, where --listen puts the socket"
            )),
            Some(_) => {}
            None => notes.warnings.push(format!(
                "PORT={port} is set, from --listen, for the app to read"
            )),
        }
    }
    Ok(addrs)
}

/// A count of milliseconds: a number, or digits in a string.
fn milliseconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// Milliseconds as `--kill-timeout` takes them: `2s`, `1600ms`.
fn duration(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `max_memory_restart` in bytes: a number of bytes, or a number with K, M or
/// G (powers of 1024, as PM2 reads them).
fn memory(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64().filter(|&n| n > 0),
        Value::String(text) => {
            let unit = match text.chars().last()?.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return text.parse().ok().filter(|&n| n > 0),
            };
            let number: f64 = text[..text.len() - 1].parse().ok()?;
            let bytes = number * unit as f64;
            (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
        }
        _ => None,
    }
}

/// Bytes the way `--max-memory` reads them, in the largest exact unit.
fn size(bytes: u64) -> String {
    for (unit, scale) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// `uid` or `gid` as a name (a number is looked up).
fn account(value: Option<&Value>, key: &str, notes: &mut Notes) -> Result<Option<String>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    let name = match value {
        None => return Ok(None),
        Some(Value::String(name)) if name.parse::<u32>().is_err() => name.clone(),
        Some(value) => {
            let id = milliseconds(value)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{key} {value} is neither a name nor a number"))?;
            let found = if key == "uid" {
                User::from_uid(Uid::from_raw(id))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            } else {
                Group::from_gid(Gid::from_raw(id))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            };
            found.ok_or_else(|| format!("{key} {id}: no such account here; give its name"))?
        }
    };
    let flag = if key == "uid" {
        "--run-as"
    } else {
        "--run-group"
    };
    notes.mapped.push(format!("{key} ({flag} {name})"));
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_pm2_splits_them() {
        assert_eq!(split("  a b  "), ["a", "b"]);
        assert_eq!(
            split("--name 'my app' \"x y\""),
            ["--name", "my app", "x y"]
        );
        assert_eq!(split("--title=\"a b\" c"), ["--title=\"a b\"", "c"]);
        assert_eq!(split("'unclosed x"), ["'unclosed", "x"]);
        assert!(split("").is_empty());
    }

    #[test]
    fn names_sizes_and_counts() {
        assert_eq!(default_name("./apps/http.js"), "http");
        assert_eq!(default_name("./service-worker/"), "service-worker");
        assert_eq!(default_name("server"), "server");
        assert_eq!(memory(&Value::from("260M")), Some(260 << 20));
        assert_eq!(memory(&Value::from("1.5G")), Some(3 << 29));
        assert_eq!(memory(&Value::from(4096)), Some(4096));
        assert_eq!(memory(&Value::from("lots")), None);
        assert_eq!(size(260 << 20), "260M");
        assert_eq!(size(3 << 29), "1536M");
        assert_eq!(size(1000), "1000");
        let mut notes = Notes::default();
        assert_eq!(
            instances(Some(&Value::from("max")), &mut notes, "instances", "a"),
            Ok(0)
        );
        assert_eq!(
            instances(Some(&Value::from(-1)), &mut notes, "instances", "a"),
            Ok(0)
        );
        assert_eq!(
            instances(Some(&Value::from("3")), &mut notes, "instances", "a"),
            Ok(3)
        );
        assert_eq!(instances(None, &mut notes, "instances", "a"), Ok(1));
        assert!(instances(Some(&Value::from("many")), &mut notes, "instances", "a").is_err());
        assert_eq!(notes.approximated.len(), 1);
    }

    #[test]
    fn paths_from_the_file_directory() {
        let dir = Path::new("/srv/app");
        assert_eq!(absolute(dir, "./a/../b.js"), Path::new("/srv/app/b.js"));
        assert_eq!(absolute(dir, "/opt/x"), Path::new("/opt/x"));
        assert_eq!(
            default_interpreter(Path::new("/srv/a.py")).as_deref(),
            Some("python3")
        );
        assert_eq!(
            default_interpreter(Path::new("/srv/app/")).as_deref(),
            Some("node")
        );
        assert_eq!(default_interpreter(Path::new("/bin/sh")), None);
    }
}
