//! Hostile input as property tests, run by `cargo test` with a bounded number
//! of cases: every decoder a worker or the environment can feed — the native
//! channel's `parse_notice`, the Node IPC line decoder (with every chunking
//! of the byte stream), the config file parser and the socket-activation
//! variables — against the checks in `hostile/mod.rs`, which compare each
//! with a model of its specification and fail on any panic.
//!
//! The same checks run under libFuzzer with `cargo +nightly fuzz` (`fuzz/`);
//! these tests are what CI runs. An input that ever fails a check is to be
//! kept in this file as a plain regression test (none has so far).

mod hostile;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

use hostile::*;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        // A failure is reported with its minimal input; keeping it is the
        // job of a regression test below, not of a file beside this one.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Splits `bytes` at the positions `cuts` pick (empty chunks included).
fn chunked<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        chunks.push(&bytes[start..end]);
        start = end;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// Escapes `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// The native channel

/// A line a worker might send: well-formed or nearly so.
fn notice_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("READY"),
        Just("STOPPING"),
        Just("WATCHDOG"),
        Just("STATUS"),
        Just("CLOSED"),
        Just("PROTOCOL"),
        Just("CONN"),
        Just("X_2"),
        Just("ready"),
        Just(""),
        Just("RÉADY"),
        Just("READY "),
    ];
    let value = prop_oneof![
        Just("1".to_owned()),
        Just("0".to_owned()),
        Just("2".to_owned()),
        Just("3".to_owned()),
        Just(String::new()),
        Just("a=b".to_owned()),
        Just("1\r".to_owned()),
        any::<String>().prop_map(|s| s.replace('\n', " ")),
    ];
    prop_oneof![
        8 => (key, value).prop_map(|(k, v)| format!("{k}={v}")),
        1 => Just(String::new()),
        1 => any::<String>().prop_map(|s| s.replace('\n', "")),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn notice_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_notice(&bytes);
    }

    #[test]
    fn notice_from_plausible_lines(lines in prop::collection::vec(notice_line(), 0..8)) {
        check_notice(lines.join("\n").as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn notice_around_the_size_limit(
        len in channel_limit_range(),
        status in any::<bool>(),
    ) {
        let mut message = if status { b"STATUS=".to_vec() } else { Vec::new() };
        message.resize(len, b'x');
        if !status {
            message[0] = b'X';
            if len > 2 { message[1] = b'='; }
        }
        check_notice(&message);
    }
}

fn channel_limit_range() -> std::ops::RangeInclusive<usize> {
    sockherd::decoders::notice::MAX_MESSAGE - 3..=sockherd::decoders::notice::MAX_MESSAGE + 3
}

// ---------------------------------------------------------------------------
// The Node IPC channel

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value a `queryServer` field might hold.
fn listen_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(3)),
        Just(json!(8080)),
        Just(json!(65536)),
        Just(json!(8080.0)),
        Just(json!(1e300)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!("127.0.0.1")),
        Just(json!("::")),
        Just(json!("0.0.0.0")),
        Just(json!("::1")),
        Just(json!("/run/app.sock")),
        Just(json!("localhost")),
        Just(json!("udp4")),
        Just(json!("udp6")),
        Just(json!(4)),
        Just(json!(6)),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        json_value(),
    ]
}

/// A message as Node's cluster worker sends them, with fields anything.
fn node_message() -> impl Strategy<Value = Value> {
    let act = prop_oneof![
        Just(json!("queryServer")),
        Just(json!("online")),
        Just(json!("listening")),
        Just(json!("close")),
        json_value(),
    ];
    let cmd = prop_oneof![
        Just(json!("NODE_CLUSTER")),
        Just(json!("NODE_HANDLE_ACK")),
        Just(json!("NODE_HANDLE_NACK")),
        Just(json!("NODE_")),
        Just(json!("hello")),
        json_value(),
    ];
    let fields = prop::collection::vec(
        (
            prop_oneof![
                Just("address"),
                Just("port"),
                Just("addressType"),
                Just("fd"),
                Just("index"),
                Just("seq"),
                Just("ack"),
                Just("key"),
                Just("data"),
                Just("msg"),
            ],
            listen_field(),
        ),
        0..8,
    );
    (cmd, act, fields).prop_map(|(cmd, act, fields)| {
        let mut m = Map::new();
        m.insert("cmd".into(), cmd);
        m.insert("act".into(), act);
        for (k, v) in fields {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    })
}

/// A line on the wire: a message as Node writes it, or something broken.
fn wire_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => node_message().prop_map(|m| serde_json::to_vec(&m).expect("serialise")),
        3 => json_value().prop_map(|m| serde_json::to_vec(&m).expect("serialise")),
        1 => Just(Vec::new()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"{\"cmd\":".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|mut b| { b.retain(|c| *c != b'\n'); b }),
    ]
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn wire_from_arbitrary_bytes_in_arbitrary_chunks(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        check_wire(&chunked(&bytes, &cuts));
    }
}

// Nested JSON is slow to generate: fewer cases, each a whole conversation.
proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn wire_from_node_messages_in_arbitrary_chunks(
        lines in prop::collection::vec(wire_line(), 0..8),
        trailing in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut stream = lines.join(&b'\n');
        if trailing {
            stream.push(b'\n');
        }
        check_wire(&chunked(&stream, &cuts));
    }

    #[test]
    fn every_node_message_is_taken_apart_safely(message in node_message()) {
        check_message(&message);
    }
}

proptest! {
    #![proptest_config(cases(24))]

    /// Messages just under, at and over the 1 MiB bound, whole or in pieces.
    #[test]
    fn wire_around_the_size_limit(
        len in wire_limit_range(),
        newline in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        // A JSON string of `len` bytes in all, quotes included.
        let mut line = vec![b'"'; 1];
        line.resize(len - 1, b'a');
        line.push(b'"');
        if newline {
            line.push(b'\n');
        }
        check_wire(&chunked(&line, &cuts));
    }
}

fn wire_limit_range() -> std::ops::RangeInclusive<usize> {
    sockherd::decoders::node::MAX_MESSAGE - 2..=sockherd::decoders::node::MAX_MESSAGE + 2
}

// ---------------------------------------------------------------------------
// The config file

/// One `key = value` line: a value valid for the key or not, and which.
fn config_line() -> impl Strategy<Value = (String, bool)> {
    // A count and whether it is in range: at least 1 unless `zero_ok`, at
    // most `max`.
    let count = |zero_ok: bool, max: u32| {
        prop_oneof![
            (1u32..=u32::MAX).prop_map(move |n| (n.to_string(), n <= max)),
            (1u32..=max).prop_map(|n| (n.to_string(), true)),
            Just(("0".to_owned(), zero_ok)),
            Just(("-1".to_owned(), false)),
            Just(("4294967296".to_owned(), false)),
            Just(("1.5".to_owned(), false)),
            Just(("\"3\"".to_owned(), false)),
            Just(("true".to_owned(), false)),
        ]
    };
    // A duration and its length in seconds (None: not a duration). Every
    // duration is at most a week; a heartbeat timeout at least a second.
    const WEEK: f64 = 604_800.0;
    let duration = |min: f64| {
        prop_oneof![
            (
                0u32..100_000,
                prop_oneof![
                    Just(("", 1.0)),
                    Just(("ms", 0.001)),
                    Just(("s", 1.0)),
                    Just(("m", 60.0)),
                    Just(("min", 60.0)),
                    Just(("h", 3600.0)),
                    Just(("d", 86_400.0)),
                ]
            )
                .prop_map(move |(n, (unit, scale))| {
                    let secs = f64::from(n) * scale;
                    (format!("\"{n}{unit}\""), (min..=WEEK).contains(&secs))
                }),
            (0u32..1000, 0u32..1000).prop_map(move |(a, b)| {
                let secs: f64 = format!("{a}.{b}").parse().unwrap_or(0.0);
                (format!("\"{a}.{b}s\""), secs >= min)
            }),
            prop_oneof![
                Just("\"\""),
                Just("\"5 s\""),
                Just("\"-1s\""),
                Just("\"1e3s\""),
                Just("\"soon\""),
                Just("\"1.2.3s\""),
                Just("\"ms\""),
                Just("\"99999999999999999999h\""),
                Just("5"),
                Just("\".\""),
                Just("\"5w\""),
                Just("\"8d\""),
            ]
            .prop_map(|v| (v.to_owned(), false)),
        ]
    };
    let size = prop_oneof![
        (
            1u32..100_000,
            prop_oneof![
                Just(""),
                Just("B"),
                Just("K"),
                Just("k"),
                Just("KiB"),
                Just("M"),
                Just("MiB"),
                Just("G"),
                Just("GiB"),
            ]
        )
            .prop_map(|(n, unit)| (format!("\"{n}{unit}\""), true)),
        prop_oneof![
            Just("\"0\""),
            Just("\"0M\""),
            Just("\"lots\""),
            Just("\"-1M\""),
            Just("\"1T\""),
            Just("\"\""),
            Just("\"99999999999999G\""),
            Just("512"),
            Just("\"M\""),
        ]
        .prop_map(|v| (v.to_owned(), false)),
    ];
    let signal = prop_oneof![
        prop_oneof![
            Just("\"SIGTERM\""),
            Just("\"INT\""),
            Just("\"sigquit\""),
            Just("\"hup\""),
        ]
        .prop_map(|v| (v.to_owned(), true)),
        prop_oneof![
            Just("\"SIGKILL\""),
            Just("\"STOP\""),
            Just("\"\""),
            Just("15"),
            Just("\"SIG\""),
            Just("\"SIGTERM \""),
        ]
        .prop_map(|v| (v.to_owned(), false)),
    ];
    let command = prop_oneof![
        prop::collection::vec(any::<String>(), 1..4).prop_map(|argv| {
            let items: Vec<String> = argv.iter().map(|a| toml_string(a)).collect();
            (format!("[{}]", items.join(", ")), true)
        }),
        Just(("[]".to_owned(), false)),
        Just(("\"/bin/app\"".to_owned(), false)),
        Just(("[1]".to_owned(), false)),
    ];
    let key_value = |key: &'static str, value: BoxedStrategy<(String, bool)>| {
        value.prop_map(move |(v, ok)| (format!("{key} = {v}"), ok))
    };
    prop_oneof![
        key_value("command", command.boxed()),
        key_value("workers", count(false, 4096).boxed()),
        key_value("max-workers", count(true, 4096).boxed()),
        key_value("max-restarts", count(true, u32::MAX).boxed()),
        key_value("reload-batch", count(false, u32::MAX).boxed()),
        key_value("kill-timeout", duration(0.0).boxed()),
        key_value("ready-timeout", duration(0.0).boxed()),
        key_value("restart-window", duration(0.0).boxed()),
        key_value("heartbeat-timeout", duration(1.0).boxed()),
        key_value("max-memory", size.boxed()),
        key_value("kill-signal", signal.boxed()),
        Just(("wokers = 3".to_owned(), false)),
        Just(("# a comment".to_owned(), true)),
        Just((String::new(), true)),
    ]
}

/// Fragments of TOML syntax, to reach the parser's corners.
fn toml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("workers"),
        Just("kill-timeout"),
        Just("command"),
        Just("max-memory"),
        Just(" = "),
        Just("="),
        Just("\""),
        Just("'"),
        Just("'''"),
        Just("\"\"\""),
        Just("["),
        Just("]"),
        Just("[["),
        Just("{"),
        Just("}"),
        Just(","),
        Just("."),
        Just("\n"),
        Just("\r\n"),
        Just("#"),
        Just("1"),
        Just("-"),
        Just("+"),
        Just("inf"),
        Just("nan"),
        Just("0x1F"),
        Just("1979-05-27T07:32:00Z"),
        Just("\\u0000"),
        Just("\\"),
        Just("true"),
        Just(" "),
        Just("\t"),
        Just("5s"),
        Just("512M"),
        Just("\u{feff}"),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn config_from_plausible_files(lines in prop::collection::vec(config_line(), 0..10)) {
        let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        let text = text.join("\n");
        check_config(&text);
        let keys: Vec<&str> = lines
            .iter()
            .filter_map(|(l, _)| l.split_once(" = ").map(|(k, _)| k))
            .collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        let valid = lines.iter().all(|(_, ok)| *ok) && unique.len() == keys.len();
        prop_assert_eq!(
            sockherd::decoders::config::parse(&text).is_ok(),
            valid,
            "{:?}: {:?}",
            text,
            sockherd::decoders::config::parse(&text)
        );
    }

    #[test]
    fn config_from_toml_soup(text in toml_soup()) {
        check_config(&text);
    }

    #[test]
    fn config_from_arbitrary_text(text in any::<String>()) {
        check_config(&text);
    }

    #[test]
    fn sizes_and_durations_from_arbitrary_text(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    Just("0"), Just("1"), Just("9"), Just("."), Just("ms"), Just("s"),
                    Just("m"), Just("min"), Just("h"), Just("K"), Just("M"), Just("G"),
                    Just("iB"), Just(" "), Just("-"), Just("e"), Just("99999999999"),
                ],
                0..8,
            )
            .prop_map(|t| t.concat()),
        ]
    ) {
        check_units(&text);
    }
}

// ---------------------------------------------------------------------------
// Socket activation

/// A `FileDescriptorName=` as systemd allows it: 1–255 printable ASCII, no `:`.
fn valid_name() -> impl Strategy<Value = String> {
    prop::collection::vec(0x21u8..0x7f, 1..=255).prop_map(|bytes| {
        bytes
            .into_iter()
            .map(|b| if b == b':' { '_' } else { char::from(b) })
            .collect()
    })
}

fn maybe_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(0x21u8..0x7f, 1..12).prop_map(|bytes| {
            bytes.into_iter().map(|b| if b == b':' { '_' } else { char::from(b) }).collect()
        }),
        1 => Just(String::new()),
        1 => Just("a b".to_owned()),
        1 => Just("caf\u{e9}".to_owned()),
        1 => Just("x".repeat(256)),
        1 => Just("tab\there".to_owned()),
        1 => any::<String>(),
    ]
}

/// An activation environment for a process whose pid is `ours`: each
/// variable absent, right, or wrong in one of the ways environments are.
fn activation_env() -> impl Strategy<Value = (Option<String>, Option<String>, Option<String>, u32)>
{
    (1u32..4_194_304).prop_flat_map(|ours| {
        let pid = prop_oneof![
            2 => Just(None),
            6 => Just(Some(ours.to_string())),
            1 => (1u32..4_194_304).prop_map(|p| Some(p.to_string())),
            1 => Just(Some(format!("+{ours}"))),
            1 => Just(Some(format!(" {ours}"))),
            1 => Just(Some(format!("{ours}\n"))),
            1 => Just(Some(format!("0{ours}"))),
            1 => Just(Some(String::new())),
            1 => Just(Some("-1".to_owned())),
            1 => Just(Some("4294967296".to_owned())),
            1 => any::<String>().prop_map(Some),
        ];
        let fds = prop_oneof![
            1 => Just(None),
            6 => (0usize..6).prop_map(|n| Some(n.to_string())),
            1 => (0usize..5000).prop_map(|n| Some(n.to_string())),
            1 => Just(Some("+2".to_owned())),
            1 => Just(Some("-0".to_owned())),
            1 => Just(Some(" 1".to_owned())),
            1 => Just(Some("1e2".to_owned())),
            1 => Just(Some(String::new())),
            1 => Just(Some("18446744073709551616".to_owned())),
            1 => any::<String>().prop_map(Some),
        ];
        let names = prop_oneof![
            2 => Just(None),
            6 => prop::collection::vec(maybe_name(), 0..7).prop_map(|n| Some(n.join(":"))),
            1 => any::<String>().prop_map(Some),
        ];
        (pid, fds, names, Just(ours))
    })
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn activation_from_malformed_environments(env in activation_env()) {
        let (pid, fds, names, ours) = env;
        check_activation(pid.as_deref(), fds.as_deref(), names.as_deref(), ours);
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn activation_names_round_trip(
        names in prop::collection::vec(valid_name(), 1..16),
        ours in 1u32..4_194_304,
        with_pid in any::<bool>(),
    ) {
        let pid = with_pid.then(|| ours.to_string());
        let list = names.join(":");
        let parsed = sockherd::decoders::activation::parse(
            pid.as_deref(),
            Some(&names.len().to_string()),
            Some(&list),
            ours,
        );
        // Without LISTEN_PID the sockets are not known to be ours.
        let expected = with_pid.then(|| sockherd::decoders::activation::Passed { names: names.clone() });
        prop_assert_eq!(parsed, Ok(expected));
        check_activation(pid.as_deref(), Some(&names.len().to_string()), Some(&list), ours);
    }
}
