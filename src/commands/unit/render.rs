//! The text of the units: NAME.socket and NAME.service for an app, with the
//! sandbox, timeouts and reload wiring explained in their comments.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use nix::sys::signal::Signal;

use super::quote::{escape_specifiers, exec_word, quote, shell_quote};
use crate::bus::plan::{bus_name, NAME_PREFIX};
use crate::cli::unit::{
    parse_absolute, UnitArgs, DEFAULT_LOG_BURST, DEFAULT_LOG_INTERVAL, DEFAULT_USER,
};
use crate::conn::node::ProtocolArg;

/// Used when the path of the running binary cannot be found.
const INSTALLED_BINARY: &str = "/usr/bin/sockherd";
/// How much longer than `--kill-timeout` systemd waits for a stop: the reap
/// grace (2 s) and a margin.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// The two units of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Units {
    /// NAME.socket: the listening sockets, owned by systemd.
    pub socket: String,
    /// NAME.service: the manager and its workers.
    pub service: String,
}

/// The units for `args`.
pub(super) fn render(args: &UnitArgs) -> Result<Units, String> {
    let command = args
        .command
        .iter()
        .map(|arg| {
            arg.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{arg:?}: the command must be valid UTF-8 to go in a unit"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let program = command
        .first()
        .ok_or("no worker command: give it after --")?
        .clone();
    let node =
        is_node(&program) || matches!(args.node.protocol, ProtocolArg::Node | ProtocolArg::NodeIpc);
    // Without its JIT, V8 needs no executable memory of its own making.
    let jitless = command.iter().any(|arg| arg == "--jitless");
    if node && args.deny_write_execute && !jitless {
        return Err(
            "--deny-write-execute would stop node: V8 compiles JavaScript into memory \
             it then makes executable, which MemoryDenyWriteExecute=yes forbids (node \
             --jitless runs under it, without its compiler)"
                .into(),
        );
    }
    if args.run_as == "root" {
        return Err(
            "--run-as root: the units sandbox the app as an unprivileged user, \
                    and root would undo that; run it as a user of its own"
                .into(),
        );
    }
    let resolved = resolve(&program);
    let sockherd = match &args.sockherd {
        Some(path) => path.clone(),
        None => running_binary(),
    };
    let generated_by = generated_by(args, &command);
    let socket = socket_unit(args, &generated_by);
    let service = service_unit(
        args,
        &generated_by,
        &sockherd,
        &resolved,
        &command[1..],
        node,
    )?;
    Ok(Units { socket, service })
}

fn is_node(program: &str) -> bool {
    matches!(
        Path::new(program).file_name().and_then(|n| n.to_str()),
        Some("node" | "nodejs")
    )
}

/// A bare program name as the unit will find it: the first match in `PATH`
/// here, so the unit says what it runs. Unchanged when not found, or not bare.
fn resolve(program: &str) -> String {
    if program.contains('/') {
        return program.to_owned();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .and_then(|found| found.to_str().map(str::to_owned))
        .unwrap_or_else(|| program.to_owned())
}

/// The path of this binary, which the service is to run.
fn running_binary() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.to_str().map(str::to_owned))
        .filter(|path| parse_absolute(path).is_ok())
        .unwrap_or_else(|| INSTALLED_BINARY.to_owned())
}

/// The command line that makes these units, for their header: only the
/// options that differ from the defaults, the command as given.
fn generated_by(args: &UnitArgs, command: &[String]) -> String {
    let mut words = vec!["sockherd".to_owned(), "unit".to_owned(), args.name.clone()];
    let mut option = |flag: &str, value: &str| {
        words.push(flag.to_owned());
        words.push(value.to_owned());
    };
    for listen in &args.listen {
        option("--listen", &listen.0);
    }
    option("--workers", &args.workers.to_string());
    if args.kill_timeout != Duration::from_secs(20) {
        option("--kill-timeout", &format_duration(args.kill_timeout));
    }
    if args.run_as != DEFAULT_USER {
        option("--run-as", &args.run_as);
    }
    if let Some(group) = &args.run_group {
        option("--run-group", group);
    }
    if let Some(dir) = &args.working_directory {
        option("--working-directory", dir);
    }
    for var in &args.environment {
        option("--environment", &format!("{}={}", var.key, var.value));
    }
    if args.control_group != DEFAULT_USER {
        option("--control-group", &args.control_group);
    }
    if args.fd_name != "http" {
        option("--fd-name", &args.fd_name);
    }
    words.extend(serve_options(args));
    if args.deny_write_execute {
        words.push("--deny-write-execute".to_owned());
    }
    words.push("--".to_owned());
    words.extend(command.iter().cloned());
    words
        .iter()
        .map(|word| shell_quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `sockherd serve` options that are only passed on, when set.
fn serve_options(args: &UnitArgs) -> Vec<String> {
    let mut words = Vec::new();
    if args.kill_signal != Signal::SIGTERM {
        words.extend([
            "--kill-signal".to_owned(),
            args.kill_signal.as_str().to_owned(),
        ]);
    }
    if let Some(size) = &args.max_memory {
        words.extend(["--max-memory".to_owned(), size.clone()]);
    }
    if let Some(timeout) = args.ready_timeout {
        words.extend(["--ready-timeout".to_owned(), format_duration(timeout)]);
    }
    if let Some(count) = args.max_restarts {
        words.extend(["--max-restarts".to_owned(), count.to_string()]);
    }
    if args.node.protocol != ProtocolArg::Auto {
        if let Some(value) = args.node.protocol.to_possible_value() {
            words.extend(["--protocol".to_owned(), value.get_name().to_owned()]);
        }
    }
    if args.node.wait_ready {
        words.push("--wait-ready".to_owned());
    }
    if args.node.shutdown_message {
        words.push("--shutdown-message".to_owned());
    }
    if let Some(config) = &args.config {
        words.extend(["--config".to_owned(), config.clone()]);
    }
    if args.log_rate_limit_interval != DEFAULT_LOG_INTERVAL {
        words.push("--log-rate-limit-interval".to_owned());
        words.push(format_duration(args.log_rate_limit_interval));
    }
    if args.log_rate_limit_burst != DEFAULT_LOG_BURST {
        words.push("--log-rate-limit-burst".to_owned());
        words.push(args.log_rate_limit_burst.to_string());
    }
    words
}

fn socket_unit(args: &UnitArgs, generated_by: &str) -> String {
    let name = &args.name;
    let mut listen = String::new();
    for addr in &args.listen {
        // Infallible: writing to a String.
        let _ = writeln!(listen, "ListenStream={}", escape_specifiers(&addr.0));
    }
    let fd_name = &args.fd_name;
    format!(
        "\
# {name}.socket: the listening socket of the sockherd app {name}.
# Generated by: {generated_by}
#
# systemd owns this socket. It listens from boot (sockets.target) or from
# `systemctl start {name}.socket`, and starts {name}.service on the first
# connection. The service gets the socket by socket activation (LISTEN_FDS);
# sockherd accepts on it and hands every connection to the next ready worker.
# systemd keeps its own copy: while the service restarts (crash, watchdog,
# `systemctl restart`), new connections wait in the backlog and are answered
# once it is back.

[Unit]
Description=%N listening socket (sockherd)

[Socket]
# Every address the app serves; each is passed to the manager in order.
{listen}\
# Workers receive this name with every connection (CONN={fd_name}), so an app with
# several sockets can tell them apart.
FileDescriptorName={fd_name}
# The queue that holds connections while no worker is ready or the manager
# restarts. The kernel caps it at net.core.somaxconn.
Backlog=4096
NoDelay=yes
# ReusePort= stays off: one socket, one acceptor. Per-worker SO_REUSEPORT
# listeners would reset the connections queued on a listener that closes.

[Install]
WantedBy=sockets.target
"
    )
}

fn service_unit(
    args: &UnitArgs,
    generated_by: &str,
    sockherd: &str,
    program: &str,
    program_args: &[String],
    node: bool,
) -> Result<String, String> {
    let name = &args.name;
    let kill_timeout = format_duration(args.kill_timeout);
    let stop_timeout = (args.kill_timeout + STOP_MARGIN).as_secs_f64().ceil();
    let control_group = &args.control_group;

    let mut exec = vec![
        exec_word(sockherd)?,
        "serve --name %N --bus system --control-group".to_owned(),
        exec_word(control_group)?,
        format!("--workers {}", args.workers),
        format!("--kill-timeout {kill_timeout}"),
    ];
    for word in serve_options(args) {
        exec.push(exec_word(&word)?);
    }
    exec.push("--".to_owned());
    exec.push(exec_word(program)?);
    for arg in program_args {
        exec.push(exec_word(arg)?);
    }
    let exec_start = exec.join(" ");

    let mut app = String::new();
    if let Some(dir) = &args.working_directory {
        let _ = writeln!(app, "WorkingDirectory={}", escape_specifiers(dir));
    }
    for var in &args.environment {
        let _ = writeln!(
            app,
            "Environment={}",
            quote(&escape_specifiers(&format!("{}={}", var.key, var.value)))
        );
    }

    // A bus name the unit name maps to unchanged can follow a renamed copy.
    let bus = if bus_name(name) == format!("{NAME_PREFIX}{name}") {
        format!("{NAME_PREFIX}%N")
    } else {
        bus_name(name)
    };

    let mut identity = format!(
        "\
# The app's user. With DynamicUser=yes, systemd uses the static user of that
# name when there is one (the package creates `sockherd` with sysusers.d, and
# its bus policy lets it own io.sockherd.*), and makes a transient one when
# there is not; either way the sandboxing that comes with DynamicUser= applies.
DynamicUser=yes
User={}
",
        args.run_as
    );
    if let Some(group) = &args.run_group {
        let _ = writeln!(identity, "Group={group}");
    }

    let in_home = [
        Some(sockherd),
        Some(program),
        args.working_directory.as_deref(),
        args.config.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|path| {
        ["/home", "/root", "/run/user"]
            .iter()
            .any(|home| path == *home || path.starts_with(&format!("{home}/")))
    });
    let protect_home = if in_home {
        "# The app lives in a home directory: readable, never writable.\nProtectHome=read-only\n"
    } else {
        "ProtectHome=yes\n"
    };

    let write_execute = if args.deny_write_execute {
        "\
# No memory both writable and executable: the workers compile no code at run time.
MemoryDenyWriteExecute=yes
"
    } else if node {
        "\
# The workers are Node.js: V8 compiles JavaScript into memory that it then
# makes executable, and MemoryDenyWriteExecute=yes makes node abort at start.
MemoryDenyWriteExecute=no
"
    } else {
        ""
    };
    let not_set_write_execute = if node || args.deny_write_execute {
        ""
    } else {
        "# MemoryDenyWriteExecute= (breaks JIT runtimes: V8/Node, the JVM, LuaJIT;\n# `sockherd unit --deny-write-execute` sets it for AOT-compiled workers),\n"
    };

    let log_rate_limit = log_rate_limit(args);

    Ok(format!(
        "\
# {name}.service: the sockherd app {name}, started by {name}.socket.
# Generated by: {generated_by}
#
# sockherd is the main process: it speaks sd_notify (Type=notify), forks the
# workers, hands them connections, and keeps its PID for its whole life, so
# no PIDFile= or MAINPID= dance is needed. Both units find each other, the
# app's name and its D-Bus name through the unit name (%N), so a copy renamed
# for another app works too; see docs/systemd.md.

[Unit]
Description=%N (sockherd cluster)
Requires=%N.socket
After=%N.socket network.target

[Service]
# READY=1 comes once every worker is ready (or --min-ready N of them); until
# then the unit is \"activating\" and the first connections wait in the socket.
Type=notify
# Only the manager may notify; workers report to it over their own channel.
NotifyAccess=main
# The manager serves {bus} on the system bus: root, the app's user
# and members of group {control_group} may scale, reload and restart it.
ExecStart={exec_start}
{app}
# Reload = rolling replacement of the workers, new before old. It must be
# synchronous, and `kill -HUP $MAINPID` is not: systemctl would return before
# any worker was replaced, and could not report a failed reload. sockherd's
# D-Bus method Reload() returns when the reload finished and fails if it
# failed, so systemctl reload waits for it and reports its outcome.
# On systemd 253 or newer (check `systemctl --version`) there is a simpler
# way: set Type=notify-reload instead of Type=notify and remove ExecReload=.
# systemd then sends SIGHUP itself and waits for the RELOADING=1 ... READY=1
# that sockherd already sends. Debian 12 ships systemd 252, which lacks it.
ExecReload=/usr/bin/busctl call --timeout=120 {bus} /io/sockherd/Manager io.sockherd.Manager1 Reload

# SIGTERM goes to the manager alone: it stops accepting and drains every
# worker itself. Whatever is left after it exits is SIGKILLed.
KillMode=mixed
# Above the drain's own bound: --kill-timeout ({kill_timeout}) + 2s to reap + margin.
# While a drain makes progress sockherd also sends EXTEND_TIMEOUT_USEC=.
TimeoutStopSec={stop_timeout}s
# Bounds a start (and, on systemd, a reload); slow steps extend it the same way.
TimeoutStartSec=60s
# Heartbeats go out every WatchdogSec/2, only while the manager's event loop
# and its pool loop both answer. A hung manager is killed (SIGABRT) and
# restarted; connections made meanwhile wait in the socket.
WatchdogSec=10s
Restart=on-failure
RestartSec=1s
# One worker killed by the OOM killer must not stop the whole service
# (the default, DefaultOOMPolicy=stop, would). sockherd restarts that worker.
OOMPolicy=continue
# The manager holds accepted connections briefly; workers hold many.
LimitNOFILE=65536

{log_rate_limit}
{identity}
# Sandbox. It applies to the manager and its workers alike (one unit), so it
# is as strict as a server that runs an arbitrary app allows. Tighten it for
# your app (e.g. PrivateNetwork=yes for a Unix-socket-only app, ReadWritePaths=
# for the directories it writes). Not set, on purpose:
{not_set_write_execute}\
# ProcSubset=pid (hides /proc/cpuinfo and /proc/meminfo, which runtimes read),
# PrivateNetwork= (the app may need to reach its database).
NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectSystem=strict
{protect_home}\
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
{write_execute}\
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
UMask=0077

[Install]
# The socket starts the service; enabling the service enables the socket.
Also=%N.socket
"
    ))
}

/// journald's rate limit for the app, with why.
fn log_rate_limit(args: &UnitArgs) -> String {
    let interval = args.log_rate_limit_interval;
    if interval.is_zero() {
        return "\
# The app's log: each worker writes to the journal directly (one worker:
# journalctl -u %N -t %N/ID). journald's rate limit is off for this app: it
# keeps every line, however many (see docs/systemd.md for the trade-off).
LogRateLimitIntervalSec=0
"
        .to_owned();
    }
    let burst = args.log_rate_limit_burst;
    let per_second = (f64::from(burst) / interval.as_secs_f64()).round();
    format!(
        "\
# The app's log: each worker writes to the journal directly (one worker:
# journalctl -u %N -t %N/ID). journald's default rate limit, 10000 lines per
# 30s per service, would drop most of an access log. This one takes
# {burst} lines per {interval} ({per_second} per second on average, more
# when disk space is plentiful), then drops lines until the interval ends
# and logs how many: a runaway app cannot flood the journal and push other
# services' logs out. See docs/systemd.md for the trade-off.
LogRateLimitIntervalSec={interval}
LogRateLimitBurst={burst}
",
        interval = format_duration(interval)
    )
}

/// `250ms`, `5s`: the shortest way `sockherd serve` reads back.
fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::cli::unit::Listen;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// Parses `sockherd unit ARGS…`.
    fn args(words: &[&str]) -> Result<UnitArgs, String> {
        let cli = Cli::try_parse_from(["sockherd", "unit"].iter().chain(words))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Unit(args) => Ok(*args),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    pub fn units(words: &[&str]) -> Result<Units, String> {
        render(&args(words)?)
    }

    fn service(words: &[&str]) -> String {
        units(words).expect("renders").service
    }

    /// The units every user reads about are this generator's output.
    #[test]
    fn the_example_units_are_generated() {
        let example = units(&[
            "example",
            "--listen",
            "8080",
            "--workers",
            "4",
            "--sockherd",
            "/usr/bin/sockherd",
            "--",
            "/usr/local/lib/sockherd/hello",
        ])
        .expect("renders");
        let regenerate = "units/ is out of date; regenerate it with: cargo run -- unit example \
            --listen 8080 --workers 4 --sockherd /usr/bin/sockherd --output units --force -- \
            /usr/local/lib/sockherd/hello";
        assert!(
            example.socket == include_str!("../../../units/example.socket"),
            "{regenerate}"
        );
        assert!(
            example.service == include_str!("../../../units/example.service"),
            "{regenerate}"
        );
    }

    #[test]
    fn journald_rate_limit_is_set_for_access_logs_or_as_asked() {
        let default = service(&["web", "--listen", "80", "--", "/srv/web"]);
        assert!(default.contains("\nLogRateLimitIntervalSec=10s\nLogRateLimitBurst=500000\n"));
        let custom = service(&[
            "web",
            "--listen",
            "80",
            "--log-rate-limit-interval",
            "30s",
            "--log-rate-limit-burst",
            "90000",
            "--",
            "/srv/web",
        ]);
        assert!(custom.contains("\nLogRateLimitIntervalSec=30s\nLogRateLimitBurst=90000\n"));
        assert!(custom.contains("--log-rate-limit-interval 30s --log-rate-limit-burst 90000"));
        let off = service(&[
            "web",
            "--listen",
            "80",
            "--log-rate-limit-interval",
            "0",
            "--",
            "/srv/web",
        ]);
        assert!(off.contains("\nLogRateLimitIntervalSec=0\n"));
        assert!(!off.contains("LogRateLimitBurst="));
        assert!(units(&[
            "web",
            "--listen",
            "80",
            "--log-rate-limit-burst",
            "0",
            "--",
            "/w"
        ])
        .is_err());
    }

    #[test]
    fn the_service_runs_the_manager_on_the_system_bus_as_the_apps_user() {
        let text = service(&[
            "web",
            "--listen",
            "80",
            "--workers",
            "3",
            "--sockherd",
            "/opt/sh",
            "--",
            "/srv/w",
        ]);
        assert!(text.contains(
            "\nExecStart=/opt/sh serve --name %N --bus system --control-group sockherd \
             --workers 3 --kill-timeout 20s -- /srv/w\n"
        ));
        assert!(text.contains("\nDynamicUser=yes\nUser=sockherd\n"));
        assert!(text.contains(
            "\nExecReload=/usr/bin/busctl call --timeout=120 io.sockherd.%N /io/sockherd/Manager \
             io.sockherd.Manager1 Reload\n"
        ));
        let text = service(&[
            "web",
            "--listen",
            "80",
            "--run-as",
            "web",
            "--run-group",
            "www-data",
            "--control-group",
            "ops",
            "--",
            "/srv/w",
        ]);
        assert!(text.contains("\nUser=web\nGroup=www-data\n"));
        assert!(text.contains("--control-group ops "));
    }

    #[test]
    fn a_name_that_is_no_bus_name_element_gets_its_bus_name_spelled_out() {
        let text = service(&["my-app.v2", "--listen", "80", "--", "/srv/w"]);
        assert!(text.contains("busctl call --timeout=120 io.sockherd.my_app_v2 /io/sockherd"));
    }

    #[test]
    fn the_stop_timeout_follows_the_kill_timeout() {
        let text = service(&["a", "--listen", "1", "--kill-timeout", "5s", "--", "/w"]);
        assert!(text.contains("--kill-timeout 5s --") && text.contains("\nTimeoutStopSec=15s\n"));
        let text = service(&["a", "--listen", "1", "--kill-timeout", "1500ms", "--", "/w"]);
        assert!(text.contains("--kill-timeout 1500ms --"));
        assert!(text.contains("\nTimeoutStopSec=12s\n"));
    }

    #[test]
    fn node_keeps_write_execute_memory() {
        let text = service(&["n", "--listen", "1", "--", "node", "app.js"]);
        assert!(text.contains("\nMemoryDenyWriteExecute=no\n"));
        assert!(!text.contains("# MemoryDenyWriteExecute= (breaks"));
        let refused = units(&[
            "n",
            "--listen",
            "1",
            "--deny-write-execute",
            "--",
            "/usr/bin/nodejs",
        ]);
        assert!(refused.is_err_and(|e| e.contains("V8")));
        let text = service(&[
            "n",
            "--listen",
            "1",
            "--deny-write-execute",
            "--",
            "/srv/aot",
        ]);
        assert!(text.contains("\nMemoryDenyWriteExecute=yes\n"));
        let words = [
            "n",
            "--listen",
            "1",
            "--deny-write-execute",
            "--",
            "node",
            "--jitless",
            "a.js",
        ];
        assert!(service(&words).contains("\nMemoryDenyWriteExecute=yes\n"));
    }

    #[test]
    fn serve_options_are_passed_on() {
        let text = service(&[
            "n",
            "--listen",
            "1",
            "--kill-signal",
            "int",
            "--max-memory",
            "512M",
            "--ready-timeout",
            "1500ms",
            "--max-restarts",
            "5",
            "--protocol",
            "node",
            "--wait-ready",
            "--shutdown-message",
            "--config",
            "/etc/sockherd/n.toml",
            "--",
            "/srv/n/start.sh",
        ]);
        assert!(text.contains(
            " --kill-timeout 20s --kill-signal SIGINT --max-memory 512M --ready-timeout 1500ms \
             --max-restarts 5 --protocol node --wait-ready --shutdown-message \
             --config /etc/sockherd/n.toml -- /srv/n/start.sh\n"
        ));
        assert!(text.contains(
            "# Generated by: sockherd unit n --listen 1 --workers 0 --kill-signal SIGINT \
             --max-memory 512M --ready-timeout 1500ms --max-restarts 5 "
        ));
        assert!(
            text.contains("\nMemoryDenyWriteExecute=no\n"),
            "a script that execs node is node too"
        );
        assert!(units(&["n", "--listen", "1", "--max-memory", "12Q", "--", "/w"]).is_err());
        assert!(units(&["n", "--listen", "1", "--kill-signal", "KILL", "--", "/w"]).is_err());
    }

    #[test]
    fn a_bare_program_is_found_in_path() {
        assert_eq!(resolve("/srv/x"), "/srv/x");
        assert_eq!(resolve("no-such-program-here"), "no-such-program-here");
        let sh = resolve("sh");
        assert!(sh.starts_with('/') && sh.ends_with("/sh"), "{sh}");
    }

    #[test]
    fn the_app_settings_are_written_quoted() {
        let text = service(&[
            "a",
            "--listen",
            "1",
            "--working-directory",
            "/srv/a/",
            "--environment",
            "GREETING=say \"hi\" 100%",
            "--environment",
            "PORT=1",
            "--",
            "/w",
            "two words",
            "$HOME",
            "50%",
            ";",
            "",
        ]);
        assert!(text.contains(
            "\nWorkingDirectory=/srv/a\nEnvironment=\"GREETING=say \\\"hi\\\" 100%%\"\nEnvironment=\"PORT=1\"\n"
        ));
        assert!(text.contains(" -- /w \"two words\" $$HOME 50%% \";\" \"\"\n"));
        assert!(text.contains(
            "# Generated by: sockherd unit a --listen 1 --workers 0 --working-directory /srv/a \
             --environment 'GREETING=say \"hi\" 100%' --environment PORT=1 -- /w 'two words' \
             '$HOME' 50% ';' ''\n"
        ));
    }

    #[test]
    fn an_app_in_a_home_directory_may_read_it() {
        let text = service(&["a", "--listen", "1", "--", "/home/al/app/server"]);
        assert!(text.contains("\nProtectHome=read-only\n"));
        let text = service(&["a", "--listen", "1", "--", "/srv/homework"]);
        assert!(text.contains("\nProtectHome=yes\n"));
    }

    #[test]
    fn listen_addresses() {
        let parse = |text: &str| text.parse::<Listen>().map(|l| l.0);
        assert_eq!(parse("8080"), Ok("8080".into()));
        assert_eq!(parse("127.0.0.1:80"), Ok("127.0.0.1:80".into()));
        assert_eq!(parse("[::1]:80"), Ok("[::1]:80".into()));
        assert_eq!(parse("/run/a.sock"), Ok("/run/a.sock".into()));
        for bad in [
            "0",
            "65536",
            "host:80",
            "127.0.0.1:0",
            "a.sock",
            "/run/a b",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let socket = units(&[
            "a",
            "--listen",
            "80",
            "--listen",
            "/run/a%.sock",
            "--",
            "/w",
        ])
        .expect("renders")
        .socket;
        assert!(socket.contains("\nListenStream=80\nListenStream=/run/a%%.sock\n"));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        for words in [
            &["a b", "--listen", "1", "--", "/w"][..],
            &["a@b", "--listen", "1", "--", "/w"],
            &["-a", "--listen", "1", "--", "/w"],
            &["a", "--", "/w"],
            &["a", "--listen", "1"],
            &["a", "--listen", "1", "--run-as", "no body", "--", "/w"],
            &["a", "--listen", "1", "--run-as", "root", "--", "/w"],
            &["a", "--listen", "1", "--environment", "1X=2", "--", "/w"],
            &["a", "--listen", "1", "--environment", "X", "--", "/w"],
            &["a", "--listen", "1", "--environment", "X=a\nb", "--", "/w"],
            &[
                "a",
                "--listen",
                "1",
                "--working-directory",
                "srv",
                "--",
                "/w",
            ],
            &["a", "--listen", "1", "--fd-name", "a:b", "--", "/w"],
            &["a", "--listen", "1", "--", "/w", "line\nbreak"],
        ] {
            assert!(units(words).is_err(), "{words:?}");
        }
    }
}
