//! Matching an app's `listen()` to the manager's listening sockets.
//!
//! A cluster worker's `server.listen(…)` arrives as a `queryServer` message
//! naming what the app asked for. The manager binds nothing: it looks for the
//! sockets it was given that the app's call describes, and the worker then
//! gets the connections of exactly those sockets.
//!
//! - `listen(port)` or `listen(port, '::' / '0.0.0.0')`: every TCP socket on
//!   that port, whatever its address (an IPv4 and an IPv6 socket both feed
//!   the one server).
//! - `listen(port, host)`: the sockets on that port bound to that address, or
//!   to the wildcard address, which covers it.
//! - `listen('/path.sock')`: the Unix socket at that path.
//! - `listen({fd: n})`, the socket-activation idiom: the `n - 3`th socket, as
//!   systemd would have numbered it (`SD_LISTEN_FDS_START` is 3).
//!
//! - a `dgram` socket's `bind(port[, host])`: the UDP sockets on that port,
//!   by the same rules (there are some only under `--policy none`).
//!
//! Anything else fails the app's `listen()` with an errno, as a failed bind
//! would: `EADDRNOTAVAIL` when no such socket was passed (an app that retries
//! on `EADDRINUSE` would otherwise retry forever), `ENOTSUP` for UDP when no
//! UDP socket was passed. The manager logs why in its own words.
//!
//! Round-robin replies carry no fd, but a `sockname`, which becomes what
//! `server.address()` shows; its port must be the one the app asked for, or
//! Node turns the reply into `EADDRINUSE`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde_json::{json, Value};

use crate::sockets::listener::{Kind, Local};

/// Linux errno values, negated as libuv reports them to Node.
pub(crate) const EBADF: i32 = -9;
pub(crate) const EINVAL: i32 = -22;
pub(crate) const EMFILE: i32 = -24;
pub(crate) const ENOTSUP: i32 = -95;
pub(crate) const EADDRNOTAVAIL: i32 = -99;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i64 = 3;

/// The answer to one `queryServer`.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Serve these sockets (indexes into the manager's list), telling the app
    /// it listens at `sockname` (none for a Unix socket).
    Serve {
        sockets: Vec<usize>,
        sockname: Option<Value>,
    },
    /// Fail the app's `listen()` with `errno`; `why` is for the manager's log.
    Refuse { errno: i32, why: String },
}

/// What the app asked for, in words, for logs: `port 8080`, `127.0.0.1:8080`, …
pub fn describe(query: &Value) -> String {
    let address = query.get("address").and_then(Value::as_str);
    let port = query.get("port").and_then(Value::as_i64);
    if let Some(fd) = query
        .get("fd")
        .and_then(Value::as_i64)
        .filter(|fd| *fd >= 0)
    {
        return format!("fd {fd}");
    }
    match (address, port) {
        (Some(path), Some(-1)) => format!("Unix socket {path}"),
        (Some(address), Some(port)) => match address.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port as u16).to_string(),
            Err(_) => format!("{address}:{port}"),
        },
        (None, Some(port)) => format!("port {port}"),
        _ => query.to_string(),
    }
}

/// Node's key for a server: `${address}:${port}:${addressType}:${fd}:${index}`,
/// each field as JavaScript prints it (`undefined` when absent). Opaque to the
/// worker, which echoes it; Node's format keeps wire logs familiar.
pub fn key(query: &Value) -> String {
    ["address", "port", "addressType", "fd", "index"]
        .iter()
        .map(|field| js_string(query.get(*field)))
        .collect::<Vec<_>>()
        .join(":")
}

fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Finds the sockets among `sockets` (the manager's, by index, each a
/// stream or a UDP socket) that `query` (a `queryServer` message) asks for.
pub fn resolve(query: &Value, sockets: &[(Kind, Local)]) -> Answer {
    let passed = || {
        let list: Vec<String> = sockets
            .iter()
            .map(|(kind, local)| match kind {
                Kind::Stream => local.to_string(),
                Kind::Datagram => format!("udp:{local}"),
            })
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    let wanted = describe(query);
    let address_type = query.get("addressType");
    let udp = address_type
        .and_then(Value::as_str)
        .filter(|kind| matches!(*kind, "udp4" | "udp6"));
    if let Some(kind) = udp {
        if !sockets.iter().any(|(k, _)| *k == Kind::Datagram) {
            return Answer::Refuse {
                errno: ENOTSUP,
                why: format!(
                    "the app binds a {kind} socket ({wanted}), but no UDP socket was passed; \
                     UDP is served under --policy none, from a ListenDatagram= socket or \
                     --listen udp:IP:PORT"
                ),
            };
        }
    }
    let wanted_kind = if udp.is_some() {
        Kind::Datagram
    } else {
        Kind::Stream
    };
    if let Some(fd) = query
        .get("fd")
        .and_then(Value::as_i64)
        .filter(|fd| *fd >= 0)
    {
        let index = usize::try_from(fd - LISTEN_FDS_START)
            .ok()
            .filter(|i| sockets.get(*i).is_some_and(|(k, _)| *k == wanted_kind));
        return match index {
            Some(index) => Answer::Serve {
                sockets: vec![index],
                sockname: sockname(&sockets[index].1),
            },
            None => Answer::Refuse {
                errno: EBADF,
                why: format!(
                    "the app listens on fd {fd}, but the passed sockets are fds 3..{} ({})",
                    LISTEN_FDS_START + sockets.len() as i64,
                    passed()
                ),
            },
        };
    }
    let address = query.get("address").and_then(Value::as_str);
    let port = query.get("port").and_then(Value::as_i64);
    let unix = address_type.and_then(Value::as_i64) == Some(-1) || port == Some(-1);
    let found: Vec<usize> = if unix {
        let Some(path) = address else {
            return invalid(&wanted);
        };
        sockets
            .iter()
            .enumerate()
            .filter(|(_, (kind, local))| {
                *kind == Kind::Stream && matches!(local, Local::Unix(p) if p == Path::new(path))
            })
            .map(|(i, _)| i)
            .collect()
    } else {
        let Some(port) = port.filter(|p| (1..=65535).contains(p)) else {
            if port == Some(0) {
                return Answer::Refuse {
                    errno: EADDRNOTAVAIL,
                    why: format!(
                        "the app listens on port 0 (any free port), but sockherd only serves the sockets it was given ({})",
                        passed()
                    ),
                };
            }
            return invalid(&wanted);
        };
        let ip = match address.map(str::parse::<IpAddr>) {
            None => None,
            Some(Ok(ip)) => Some(ip).filter(|ip| !ip.is_unspecified()),
            Some(Err(_)) => return invalid(&wanted),
        };
        let on_port = |(kind, local): &(Kind, Local)| match local {
            Local::Inet(sa) if *kind == wanted_kind && i64::from(sa.port()) == port => {
                Some(sa.ip())
            }
            _ => None,
        };
        // Exact address matches first, so `sockname` names the app's address.
        let mut found: Vec<(bool, usize)> = sockets
            .iter()
            .enumerate()
            .filter_map(|(i, socket)| {
                let bound = on_port(socket)?;
                match ip {
                    None => Some((false, i)),
                    Some(ip) if ip == bound => Some((true, i)),
                    Some(_) if bound.is_unspecified() => Some((false, i)),
                    Some(_) => None,
                }
            })
            .collect();
        found.sort_by_key(|(exact, i)| (!exact, *i));
        found.into_iter().map(|(_, i)| i).collect()
    };
    match found.first() {
        Some(first) => Answer::Serve {
            sockname: sockname(&sockets[*first].1),
            sockets: found,
        },
        None => Answer::Refuse {
            errno: EADDRNOTAVAIL,
            why: format!(
                "the app listens on {wanted}, but no socket for it was passed (passed: {})",
                passed()
            ),
        },
    }
}

fn invalid(wanted: &str) -> Answer {
    Answer::Refuse {
        errno: EINVAL,
        why: format!("the app asked to listen on something sockherd cannot serve: {wanted}"),
    }
}

/// What `server.address()` shows the app for a socket: Node's
/// `{address, family, port}`; nothing for a Unix socket.
fn sockname(local: &Local) -> Option<Value> {
    match local {
        Local::Inet(sa) => Some(json!({
            "address": sa.ip().to_string(),
            "family": if sa.is_ipv4() { "IPv4" } else { "IPv6" },
            "port": sa.port(),
        })),
        Local::Unix(_) | Local::UnixUnnamed => None,
    }
}

/// The name libuv gives a negated errno, for logs.
pub(crate) fn errno_name(errno: i32) -> &'static str {
    match errno {
        EBADF => "EBADF",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        ENOTSUP => "ENOTSUP",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        _ => "an error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> (Kind, Local) {
        (Kind::Stream, Local::Inet(s.parse().unwrap()))
    }

    fn udp(s: &str) -> (Kind, Local) {
        (Kind::Datagram, Local::Inet(s.parse().unwrap()))
    }

    fn query(address: Value, port: Value, address_type: Value) -> Value {
        json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": null,
               "address": address, "port": port, "addressType": address_type,
               "backlog": 0, "seq": 1})
    }

    fn served(answer: Answer) -> (Vec<usize>, Option<Value>) {
        match answer {
            Answer::Serve { sockets, sockname } => (sockets, sockname),
            Answer::Refuse { why, .. } => panic!("refused: {why}"),
        }
    }

    fn refused(answer: Answer) -> (i32, String) {
        match answer {
            Answer::Refuse { errno, why } => (errno, why),
            Answer::Serve { sockets, .. } => panic!("served {sockets:?}"),
        }
    }

    #[test]
    fn builds_node_keys() {
        let q = query(Value::Null, json!(8080), json!(4));
        assert_eq!(key(&q), "null:8080:4:undefined:0");
        let q = query(json!("127.0.0.1"), json!(443), json!(4));
        assert_eq!(key(&q), "127.0.0.1:443:4:undefined:0");
    }

    #[test]
    fn matches_by_port_whatever_the_address() {
        let sockets = [
            inet("127.0.0.1:8080"),
            inet("127.0.0.1:9090"),
            inet("[::1]:8080"),
        ];
        let (found, sockname) = served(resolve(
            &query(Value::Null, json!(8080), json!(4)),
            &sockets,
        ));
        assert_eq!(found, vec![0, 2]);
        assert_eq!(
            sockname,
            Some(json!({"address": "127.0.0.1", "family": "IPv4", "port": 8080}))
        );
        let (found, sockname) = served(resolve(
            &query(json!("::1"), json!(8080), json!(6)),
            &sockets,
        ));
        assert_eq!(found, vec![2]);
        assert_eq!(
            sockname,
            Some(json!({"address": "::1", "family": "IPv6", "port": 8080}))
        );
        let (found, _) = served(resolve(
            &query(json!("::"), json!(9090), json!(6)),
            &sockets,
        ));
        assert_eq!(found, vec![1]);
    }

    #[test]
    fn a_wildcard_socket_covers_a_specific_address() {
        let sockets = [inet("0.0.0.0:8080")];
        let (found, sockname) = served(resolve(
            &query(json!("127.0.0.1"), json!(8080), json!(4)),
            &sockets,
        ));
        assert_eq!(found, vec![0]);
        assert_eq!(sockname.unwrap()["port"], json!(8080));
        let sockets = [inet("127.0.0.2:8080")];
        let (errno, _) = refused(resolve(
            &query(json!("127.0.0.1"), json!(8080), json!(4)),
            &sockets,
        ));
        assert_eq!(errno, EADDRNOTAVAIL);
    }

    #[test]
    fn refuses_what_was_not_passed_with_a_clear_reason() {
        let sockets = [inet("127.0.0.1:8080")];
        let (errno, why) = refused(resolve(
            &query(Value::Null, json!(9999), json!(4)),
            &sockets,
        ));
        assert_eq!(errno, EADDRNOTAVAIL);
        assert!(
            why.contains("port 9999") && why.contains("127.0.0.1:8080"),
            "{why}"
        );
        let (errno, _) = refused(resolve(&query(Value::Null, json!(0), json!(4)), &sockets));
        assert_eq!(errno, EADDRNOTAVAIL);
        let udp = json!({"address": "127.0.0.1", "port": 8080, "addressType": "udp4", "fd": -1});
        assert_eq!(refused(resolve(&udp, &sockets)).0, ENOTSUP);
        let (errno, _) = refused(resolve(
            &query(json!("localhost"), json!(8080), json!(4)),
            &sockets,
        ));
        assert_eq!(errno, EINVAL);
    }

    #[test]
    fn matches_unix_sockets_and_passed_fds() {
        let sockets = [
            inet("127.0.0.1:8080"),
            (Kind::Stream, Local::Unix("/run/app.sock".into())),
        ];
        let (found, sockname) = served(resolve(
            &query(json!("/run/app.sock"), json!(-1), json!(-1)),
            &sockets,
        ));
        assert_eq!((found, sockname), (vec![1], None));
        let by_fd =
            json!({"address": null, "port": null, "addressType": null, "fd": 4, "index": 0});
        assert_eq!(served(resolve(&by_fd, &sockets)).0, vec![1]);
        let by_fd =
            json!({"address": null, "port": null, "addressType": null, "fd": 7, "index": 0});
        assert_eq!(refused(resolve(&by_fd, &sockets)).0, EBADF);
    }

    #[test]
    fn udp_binds_match_udp_sockets_only() {
        let sockets = [
            inet("127.0.0.1:5353"),
            udp("127.0.0.1:5353"),
            udp("[::]:5354"),
        ];
        let bind = |address: Value, port: u16, kind: &str| json!({"address": address, "port": port, "addressType": kind, "fd": -1, "flags": 0});
        let (found, sockname) = served(resolve(&bind(json!("127.0.0.1"), 5353, "udp4"), &sockets));
        assert_eq!(found, vec![1]);
        assert_eq!(sockname.unwrap()["port"], json!(5353));
        assert_eq!(
            served(resolve(&bind(json!("::"), 5354, "udp6"), &sockets)).0,
            vec![2]
        );
        let (errno, _) = refused(resolve(&bind(Value::Null, 9, "udp4"), &sockets));
        assert_eq!(errno, EADDRNOTAVAIL);
        assert_eq!(
            served(resolve(
                &query(Value::Null, json!(5353), json!(4)),
                &sockets
            ))
            .0,
            vec![0],
            "a TCP listen() gets the TCP socket"
        );
        let by_fd = json!({"address": null, "port": null, "addressType": null, "fd": 4});
        assert_eq!(refused(resolve(&by_fd, &sockets)).0, EBADF, "fd 4 is UDP");
    }
}
