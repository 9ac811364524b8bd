//! Which journal entries are an app's, as journalctl's matches: `FIELD=value`
//! words (different fields in a row must all match), groups of them joined
//! by `+` (any group may).

/// The matches for `app` (or its worker `worker`), whose manager runs in
/// `unit` when known.
///
/// - one worker: its own lines, `SYSLOG_IDENTIFIER=app/N` (journal streams
///   and, where a worker could not connect one, the lines the manager
///   forwarded for it), or the manager's events about it;
/// - the whole app: everything in its unit (workers, manager, `ExecReload=`'s
///   busctl), what systemd says about the unit, and any entry of the manager's
///   elsewhere (`SOCKHERD_APP`, e.g. `--log journal` outside a unit).
pub(super) fn of(app: &str, worker: Option<u32>, unit: Option<&str>, user: bool) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(id) = worker {
        words.push(format!("SYSLOG_IDENTIFIER={app}/{id}"));
        words.push("+".to_owned());
        words.push(format!("SOCKHERD_APP={app}"));
        words.push(format!("SOCKHERD_WORKER_ID={id}"));
        return words;
    }
    if let Some(unit) = unit {
        let (own, about, from) = if user {
            ("_SYSTEMD_USER_UNIT", "USER_UNIT", None)
        } else {
            ("_SYSTEMD_UNIT", "UNIT", Some("_PID=1"))
        };
        words.push(format!("{own}={unit}"));
        words.push("+".to_owned());
        words.extend(from.map(str::to_owned));
        words.push(format!("{about}={unit}"));
        words.push("+".to_owned());
    }
    words.push(format!("SOCKHERD_APP={app}"));
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_or_the_whole_app() {
        assert_eq!(
            of("web", Some(3), Some("web.service"), false),
            [
                "SYSLOG_IDENTIFIER=web/3",
                "+",
                "SOCKHERD_APP=web",
                "SOCKHERD_WORKER_ID=3"
            ]
        );
        assert_eq!(
            of("web", None, Some("web.service"), false),
            [
                "_SYSTEMD_UNIT=web.service",
                "+",
                "_PID=1",
                "UNIT=web.service",
                "+",
                "SOCKHERD_APP=web"
            ]
        );
        assert_eq!(
            of("web", None, Some("web.service"), true),
            [
                "_SYSTEMD_USER_UNIT=web.service",
                "+",
                "USER_UNIT=web.service",
                "+",
                "SOCKHERD_APP=web"
            ]
        );
        assert_eq!(of("web", None, None, false), ["SOCKHERD_APP=web"]);
    }
}
