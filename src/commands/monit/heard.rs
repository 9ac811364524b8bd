//! What the managers say on their own: the signals of every manager on the
//! bus (`WorkerStarted`, `WorkerExited`, `Reloaded`, and the
//! `PropertiesChanged` that carry scale changes, give-ups and reloads
//! starting), taken from one subscription to the object path they all serve.

use std::collections::HashMap;

use zbus::message::Type;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::bus::interface::{INTERFACE, PATH};

/// One signal, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Heard {
    Started {
        id: u32,
        pid: u32,
    },
    Exited {
        id: u32,
        pid: u32,
        reason: String,
    },
    Reloaded {
        generation: u32,
        ok: bool,
    },
    /// `Workers` changed: a scale.
    Scaled(u32),
    /// `State` changed.
    State(String),
    /// `GaveUp` changed: the slots that gave up now.
    GaveUp(Vec<u32>),
}

/// Every signal any manager on the bus sends.
pub(super) async fn subscribe(connection: &Connection) -> zbus::Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .path(PATH)?
        .build();
    MessageStream::for_match_rule(rule, connection, Some(256)).await
}

/// Who sent `message` (a unique name), and what it said; `None` for
/// anything else.
pub(super) fn decode(message: &Message) -> Option<(String, Vec<Heard>)> {
    let header = message.header();
    let sender = header.sender()?.to_string();
    let body = message.body();
    let heard = match header.member()?.as_str() {
        "WorkerStarted" => {
            let (id, pid): (u32, u32) = body.deserialize().ok()?;
            vec![Heard::Started { id, pid }]
        }
        "WorkerExited" => {
            let (id, pid, _, reason): (u32, u32, i32, String) = body.deserialize().ok()?;
            vec![Heard::Exited { id, pid, reason }]
        }
        "Reloaded" => {
            let (generation, ok): (u32, bool) = body.deserialize().ok()?;
            vec![Heard::Reloaded { generation, ok }]
        }
        "PropertiesChanged" => {
            let (interface, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
                body.deserialize().ok()?;
            if interface != INTERFACE {
                return None;
            }
            changes(&changed)
        }
        _ => return None,
    };
    Some((sender, heard))
}

/// The changes of `PropertiesChanged` that are worth an event.
fn changes(changed: &HashMap<String, OwnedValue>) -> Vec<Heard> {
    let mut heard = Vec::new();
    if let Some(count) = changed.get("Workers").and_then(|v| u32::try_from(v).ok()) {
        heard.push(Heard::Scaled(count));
    }
    if let Some(state) = changed
        .get("State")
        .and_then(|v| String::try_from(v.clone()).ok())
    {
        heard.push(Heard::State(state));
    }
    if let Some(ids) = changed
        .get("GaveUp")
        .and_then(|v| Vec::<String>::try_from(v.clone()).ok())
    {
        heard.push(Heard::GaveUp(
            ids.iter().filter_map(|id| id.parse().ok()).collect(),
        ));
    }
    heard
}
