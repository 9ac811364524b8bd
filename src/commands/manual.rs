//! The manual that ships with the package, generated from the command line's
//! own definition ([`crate::cli::Cli`]) so it cannot drift from the binary:
//! `sockherd completions SHELL` prints a completion script, and the hidden
//! `sockherd manpage DIR` writes sockherd(1) and one page per command
//! (sockherd-serve(1), sockherd-unit(1), …), the way git's pages are split.
//! `packaging/build-deb.sh` runs both with the binary it packages.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_mangen::Man;

use crate::cli::manual::{CompletionsArgs, ManpageArgs};
use crate::cli::Cli;
use crate::print::{errln, outln};

/// sockherd(1)'s description: the one-line `about` says too little.
const MAIN_DESCRIPTION: &str = r#".SH DESCRIPTION
\fBsockherd\fR is a cluster manager that lives inside systemd. systemd owns an
app's listening sockets (\fINAME\fR.socket) and starts \fBsockherd serve\fR
(\fINAME\fR.service) on the first connection; sockherd runs a pool of worker
processes and hands every accepted connection to the next ready worker by
passing its file descriptor. Unmodified Node.js apps run as its cluster
workers.
.PP
It tells systemd when the workers are ready, reloading or stopping
(sd_notify), keeps the watchdog fed while it is healthy, has every line its
workers write reach the journal under the worker's own pid and identifier
(\fINAME\fR/\fIID\fR), replaces workers new\-before\-old on reload, restarts
crashed workers with backoff, and is steered over D\-Bus
(\fIio.sockherd.NAME\fR, object \fI/io/sockherd/Manager\fR, interface
\fIio.sockherd.Manager1\fR) by \fBsockherd status\fR, \fBscale\fR,
\fBreload\fR and \fBrestart\fR, by \fBsystemctl reload\fR and by
\fBbusctl\fR; \fBsockherd monit\fR watches and steers them live, and
\fBsockherd logs\fR reads their journal.
.PP
\fBsockherd unit\fR writes the systemd units of an app, and \fBsockherd
import\fR those of every app in a PM2 ecosystem file. Each command has a
page of its own, listed below.
"#;

/// What sockherd(1) says beyond the options: where things are, how it is
/// used, and where to read on.
const MAIN_EXTRA: &str = r#".SH EXAMPLES
Run four workers of an app behind a port, without systemd:
.PP
.RS
.nf
sockherd serve \-\-listen 127.0.0.1:8080 \-\-workers 4 \-\- node app.js
.fi
.RE
.PP
Install the systemd units of an app, start it, and steer it:
.PP
.RS
.nf
sockherd unit myapp \-\-listen 8080 \-\-workers 4 \e
    \-\-working\-directory /srv/myapp \-\-install \-\- node app.js
systemctl enable \-\-now myapp.socket
sockherd status myapp
sockherd scale myapp +2
systemctl reload myapp
sockherd monit
sockherd logs myapp \-\-worker 3 \-f
.fi
.RE
.PP
Move the apps of a PM2 ecosystem file over:
.PP
.RS
.nf
sockherd import ecosystem.config.js \-\-env production \-\-install
.fi
.RE
.SH FILES
.TP
.I /etc/systemd/system/NAME.socket, /etc/systemd/system/NAME.service
The units of an app, as written by \fBsockherd unit \-\-install\fR.
.TP
.I /usr/share/dbus-1/system.d/io.sockherd.conf
The system bus policy: root and the user \fBsockherd\fR may own \fIio.sockherd.*\fR names.
.TP
.I /usr/lib/sysusers.d/sockherd.conf
The user and group \fBsockherd\fR: apps run as the user by default, members of the group may control them.
.TP
.I /usr/share/doc/sockherd/
The README, the documentation (docs/) and the example units (examples/).
.SH SEE ALSO
\fBsockherd\-serve\fR(1), \fBsockherd\-unit\fR(1), \fBsockherd\-status\fR(1),
\fBsockherd\-scale\fR(1), \fBsockherd\-reload\fR(1), \fBsockherd\-restart\fR(1),
\fBsockherd\-monit\fR(1), \fBsockherd\-logs\fR(1), \fBsockherd\-import\fR(1),
\fBsystemd.socket\fR(5), \fBsystemd.service\fR(5), \fBsystemd.exec\fR(5),
\fBbusctl\fR(1), \fBjournalctl\fR(1)
"#;

/// Runs `sockherd completions`.
pub(crate) fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "sockherd", &mut script);
    match outln!("{}", String::from_utf8_lossy(&script).trim_end()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sockherd: cannot print the completions: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `sockherd manpage`.
pub(crate) fn manpages(args: &ManpageArgs) -> ExitCode {
    match write_manpages(&args.dir) {
        Ok(written) => match written
            .iter()
            .try_for_each(|path| outln!("{}", path.display()))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("sockherd: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            errln!("sockherd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every page into `dir`; returns their paths.
pub(crate) fn write_manpages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Without clap's `help` command, which needs no page.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![("sockherd".to_owned(), render_main(&command))];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("sockherd-{}", sub.get_name());
        pages.push((name, render_sub(sub)));
    }
    let mut written = Vec::with_capacity(pages.len());
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let page = page.map_err(|e| format!("cannot render {name}(1): {e}"))?;
        fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// sockherd(1): what the program is, its commands, and [`MAIN_EXTRA`].
fn render_main(command: &Command) -> io::Result<Vec<u8>> {
    let man = Man::new(command.clone()).manual("sockherd manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    page.extend_from_slice(MAIN_DESCRIPTION.as_bytes());
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(MAIN_EXTRA.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// sockherd-NAME(1): one command, its options, and a pointer back. The
/// parent was built, which named the command `sockherd-NAME` for display and
/// `sockherd NAME` for its synopsis.
fn render_sub(sub: &Command) -> io::Result<Vec<u8>> {
    let man = Man::new(sub.clone()).manual("sockherd manual");
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(b".SH SEE ALSO\n\\fBsockherd\\fR(1)\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page() {
        let dir = std::env::temp_dir().join(format!("sockherd-man-{}", std::process::id()));
        let written = write_manpages(&dir).expect("pages are written");
        let names: Vec<_> = written
            .iter()
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        for expected in [
            "sockherd.1",
            "sockherd-serve.1",
            "sockherd-unit.1",
            "sockherd-status.1",
            "sockherd-monit.1",
            "sockherd-logs.1",
            "sockherd-import.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(!names
            .iter()
            .any(|n| n == "sockherd-manpage.1" || n == "sockherd-help.1"));
        let serve = fs::read_to_string(dir.join("sockherd-serve.1")).expect("readable");
        assert!(serve.contains("kill\\-timeout"), "options are documented");
        let main = fs::read_to_string(dir.join("sockherd.1")).expect("readable");
        assert!(main.contains(".SH EXAMPLES") && main.contains("sockherd\\-unit"));
        fs::remove_dir_all(&dir).expect("removable");
    }
}
