//! Turns on the machine. All integration tests are one process, run two at a
//! time (libtest's threads, one per core here); most share the machine
//! happily, but a few load it on their own and measure what the manager does
//! meanwhile (workers SIGKILLed under load, a full channel found hung at a
//! heartbeat timeout, a flood of output): those run [`alone`].
//!
//! A test shares the machine while it has a [`Manager`](super::Manager)
//! running: each manager holds a [`Shared`] turn, taken by the harness when
//! it starts. A test that calls [`alone`] first waits until no other test has
//! a manager running, and until it is done, none starts one. A thread that
//! holds a turn already never waits for another (a test may run several
//! managers; a test alone starts its own), so no test waits on itself.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

/// Who has the machine.
#[derive(Default)]
struct State {
    /// The test threads with managers running, and how many each.
    sharing: HashMap<ThreadId, usize>,
    /// The test that runs alone, if one does.
    alone: Option<ThreadId>,
    /// Tests waiting to run alone: no new test starts sharing meanwhile.
    waiting: usize,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

/// The state, even if a failing test poisoned its lock.
fn state() -> MutexGuard<'static, Option<State>> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for `state` to change, even if a failing test poisoned its lock.
fn wait(state: MutexGuard<'static, Option<State>>) -> MutexGuard<'static, Option<State>> {
    CHANGED
        .wait(state)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A test's turn to run alone: until it is dropped, no other test runs a
/// manager. Take it first thing in the test.
#[must_use = "the test runs alone only while the turn is held"]
pub struct Alone(ThreadId);

/// Waits until no other test runs a manager, and keeps it so.
pub fn alone() -> Alone {
    let me = thread::current().id();
    let mut guard = state();
    let s = guard.get_or_insert_with(State::default);
    assert!(
        !s.sharing.contains_key(&me),
        "alone() must come before the test starts a manager"
    );
    s.waiting += 1;
    loop {
        let s = guard.get_or_insert_with(State::default);
        if s.alone.is_none() && s.sharing.is_empty() {
            s.waiting -= 1;
            s.alone = Some(me);
            return Alone(me);
        }
        guard = wait(guard);
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let mut guard = state();
        if let Some(s) = guard.as_mut() {
            if s.alone == Some(self.0) {
                s.alone = None;
            }
        }
        CHANGED.notify_all();
    }
}

/// A running manager's share of the machine; `None` inside a test that runs
/// alone, whose managers need none.
pub(super) struct Shared(Option<ThreadId>);

/// Waits until no test runs alone or waits to, unless this thread shares
/// the machine already or is the one alone.
pub(super) fn share() -> Shared {
    let me = thread::current().id();
    let mut guard = state();
    loop {
        let s = guard.get_or_insert_with(State::default);
        if s.alone == Some(me) {
            return Shared(None);
        }
        let mine = s.sharing.contains_key(&me);
        if mine || (s.alone.is_none() && s.waiting == 0) {
            *s.sharing.entry(me).or_insert(0) += 1;
            return Shared(Some(me));
        }
        guard = wait(guard);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(thread) = self.0 else { return };
        let mut guard = state();
        if let Some(s) = guard.as_mut() {
            if let Some(count) = s.sharing.get_mut(&thread) {
                *count -= 1;
                if *count == 0 {
                    s.sharing.remove(&thread);
                }
            }
        }
        CHANGED.notify_all();
    }
}
