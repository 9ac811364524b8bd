//! A private D-Bus daemon with the system bus's rules and sockherd's own
//! policy file (`packaging/dbus/io.sockherd.conf`), on a socket in a
//! temporary directory: what the tests of the D-Bus interface and of the
//! commands built on it (`status`, `monit`) run managers on.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::TempDir;

/// A private bus with the system bus's rules and sockherd's policy file.
pub struct Daemon {
    /// The `dbus-daemon` process, killed on drop.
    child: Child,
    /// What clients connect to, as the daemon printed it.
    pub address: String,
    /// Holds the config and the socket.
    pub dir: TempDir,
}

impl Daemon {
    pub fn start() -> Daemon {
        let dir = TempDir::new();
        // nobody must reach the bus socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/dbus/io.sockherd.conf");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={dir}/bus</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
                dir = dir.path().display(),
                policy = policy.display()
            ),
        )
        .expect("write the bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon must be installed (Debian: dbus-daemon)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("dbus-daemon's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "bus address {address:?}");
        Daemon {
            child,
            address,
            dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
