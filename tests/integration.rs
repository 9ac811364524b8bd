//! Every integration test, in one binary: the real `sockherd` binary with
//! real workers, driven by the harness in `common/`. Each file of `tests/` is
//! a module here (`cargo test --test integration dbus::` runs one of them);
//! `tests/hostile_input.rs`, which starts no process, is a binary of its own.
//! Why one binary, and how its tests share the machine: `common/mod.rs`.

mod common;

mod bad_input;
mod dbus;
mod dispatch;
mod faults;
mod flood;
mod import;
mod lifecycle;
mod logs;
mod misbehaving;
mod monit;
mod node;
mod notify;
mod policies;
mod reexec;
mod reliability;
mod reload;
mod units;
mod worker_crate;
