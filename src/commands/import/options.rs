//! PM2's app options, by what becomes of them: their other names (PM2
//! accepts several for some), and for those that do not become a `sockherd
//! unit` option, why: what sockherd does instead, or that it has no such
//! thing. The options that do map are read in [`super::app`].

use serde_json::Value;

/// What an option that does not map exactly becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Something close is done instead; the reason says how it differs.
    Approximated,
    /// Nothing is done with it; the reason says what to do instead.
    NotMapped,
}

/// The name PM2 reads an option under (`exec_interpreter` for
/// `interpreter`, …); the option's own name when it has no other.
pub(super) fn canonical(key: &str) -> &str {
    match key {
        "exec" | "cmd" => "script",
        "interpreter" => "exec_interpreter",
        "interpreterArgs" | "interpreter_args" => "node_args",
        "out" | "output" | "out_log" => "out_file",
        "error" | "err" | "err_file" | "err_log" => "error_file",
        "log" => "log_file",
        "combine_logs" => "merge_logs",
        "cron" => "cron_restart",
        "user" => "uid",
        other => other,
    }
}

/// Why an option (by its [`canonical`] name) of app `app` is not mapped
/// exactly, unless [`super::app`] maps it; `None` for an option PM2 does
/// not have either.
pub(super) fn fate(key: &str, value: &Value, app: &str) -> Option<(Fate, String)> {
    use Fate::{Approximated, NotMapped};
    let logs = "the journal keeps every line with its time, per worker, rotated by journald \
                (`sockherd logs {app}`, `journalctl -u {app}`)";
    let (fate, why) = match key {
        "watch" | "ignore_watch" | "watch_options" | "watch_delay" => (
            NotMapped,
            "sockherd does not watch files: deploy, then `sockherd reload {app}`, which has \
             new workers ready before old ones go"
                .to_owned(),
        ),
        "cron_restart" => (
            NotMapped,
            "a systemd timer does it: OnCalendar= with a service that runs `sockherd reload \
             {app}` (new workers before old ones, unlike PM2's restart)"
                .to_owned(),
        ),
        "out_file" | "error_file" | "log_file" | "merge_logs" | "log_date_format" | "log_type"
        | "disable_logs" | "time" => (NotMapped, logs.to_owned()),
        "pid_file" => (
            NotMapped,
            "no pid files: `systemctl show -p MainPID {app}` for the manager, `sockherd status \
             {app}` for the workers"
                .to_owned(),
        ),
        "min_uptime" => (
            Approximated,
            "sockherd counts every crash of a worker within 5 minutes towards --max-restarts, \
             however long it had been up (PM2 counts only those under min_uptime, so an app \
             that crashes every few seconds loops for ever)"
                .to_owned(),
        ),
        "restart_delay" => (
            Approximated,
            "sockherd's delay between restarts is its own backoff: none after a worker that \
             was up 30 s, then 100 ms growing ×1.5 up to 15 s while it keeps crashing; it has \
             no fixed delay"
                .to_owned(),
        ),
        "exp_backoff_restart_delay" => (
            Approximated,
            "sockherd always backs off exponentially: from 100 ms (not configurable), ×1.5, \
             up to 15 s, reset once a worker stays up 30 s (PM2: from this value, ×1.5, up \
             to 15 s)"
                .to_owned(),
        ),
        "autorestart" if value == &Value::Bool(false) => (
            NotMapped,
            "sockherd always restarts a worker that exits; a program meant to run once is a \
             plain systemd service (Type=oneshot)"
                .to_owned(),
        ),
        "autostart" => (
            NotMapped,
            "the units start when you enable them: `systemctl enable --now {app}.socket`"
                .to_owned(),
        ),
        "stop_exit_codes" => (
            NotMapped,
            "sockherd restarts a worker whatever its exit code".to_owned(),
        ),
        "treekill" => (
            NotMapped,
            "KillMode=mixed: when the app stops, systemd kills whatever its workers left \
             behind"
                .to_owned(),
        ),
        "kill_retry_time" => (
            NotMapped,
            "sockherd is told when a worker exits; it does not poll".to_owned(),
        ),
        "increment_var" => (
            NotMapped,
            "sockherd sets NODE_APP_INSTANCE (0-based, stable per worker): derive the \
             value from it"
                .to_owned(),
        ),
        "instance_var" => (
            NotMapped,
            "sockherd always sets NODE_APP_INSTANCE, under that name".to_owned(),
        ),
        "namespace" => (
            NotMapped,
            "PM2's groups of apps; systemd groups units with a target or a slice".to_owned(),
        ),
        "filter_env" => (
            NotMapped,
            "a unit's workers never inherit the environment of the shell that installed it: \
             only env (and env_NAME) reach them"
                .to_owned(),
        ),
        "append_env_to_name" | "name_prefix" => (
            NotMapped,
            "the app's name is its units' name, as written in `name`".to_owned(),
        ),
        "force" => (
            NotMapped,
            "a unit exists once: there is no starting it twice".to_owned(),
        ),
        "source_map_support" | "disable_source_map_support" => (
            NotMapped,
            "PM2 injects source-map-support; give node --enable-source-maps in node_args"
                .to_owned(),
        ),
        "vizion"
        | "pmx"
        | "automation"
        | "trace"
        | "disable_trace"
        | "v8"
        | "event_loop_inspector"
        | "deep_monitoring"
        | "io"
        | "post_update" => (
            NotMapped,
            "PM2's monitoring (Keymetrics); sockherd's is D-Bus, `sockherd monit` and \
             Prometheus metrics (--metrics)"
                .to_owned(),
        ),
        "install_url" => (NotMapped, "PM2 modules are PM2's own".to_owned()),
        "windowsHide" => (NotMapped, "Windows only".to_owned()),
        "username" | "execute_command" | "write" => (NotMapped, "PM2's own bookkeeping".to_owned()),
        _ => return None,
    };
    Some((fate, why.replace("{app}", app)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_reasons() {
        assert_eq!(canonical("interpreter_args"), "node_args");
        assert_eq!(canonical("err_log"), "error_file");
        assert_eq!(canonical("watch"), "watch");
        let (verdict, why) = fate("watch", &Value::Bool(true), "api").expect("known");
        assert_eq!(verdict, Fate::NotMapped);
        assert!(why.contains("sockherd reload api"), "{why}");
        assert_eq!(fate("autorestart", &Value::Bool(true), "api"), None);
        assert_eq!(fate("no_such_option", &Value::Null, "api"), None);
    }
}
