//! The keyboard: a thread of its own waits for terminal events (crossterm
//! reads them blocking) and hands them to the view's loop, and each key is
//! given its meaning here.

use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Quit,
    /// Move the selection by this many rows.
    Move(isize),
    Reload,
    /// Scale by this many workers.
    Scale(i32),
    RestartWorker,
    /// The terminal changed size, or anything else worth a redraw.
    Redraw,
}

/// How often the thread looks whether the view is gone.
const CHECK: Duration = Duration::from_millis(200);

/// Starts the thread; it ends once the receiver is dropped.
pub(super) fn start() -> mpsc::Receiver<Key> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            let key = match event::poll(CHECK) {
                Ok(false) => continue,
                Ok(true) => match event::read() {
                    Ok(Event::Key(key)) => meaning(key),
                    Ok(Event::Resize(..)) => Some(Key::Redraw),
                    Ok(_) => None,
                    // The terminal is gone: nothing more will come from it.
                    Err(_) => Some(Key::Quit),
                },
                Err(_) => Some(Key::Quit),
            };
            if let Some(key) = key {
                if tx.blocking_send(key).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// What `key` means; `None` for a key that means nothing here.
fn meaning(key: KeyEvent) -> Option<Key> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c' | 'd')).then_some(Key::Quit);
    }
    Some(match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
        KeyCode::Up | KeyCode::Char('k') => Key::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Key::Move(1),
        KeyCode::PageUp => Key::Move(-10),
        KeyCode::PageDown => Key::Move(10),
        KeyCode::Home => Key::Move(isize::MIN / 2),
        KeyCode::End => Key::Move(isize::MAX / 2),
        KeyCode::Char('r') => Key::Reload,
        KeyCode::Char('+' | '=') => Key::Scale(1),
        KeyCode::Char('-') => Key::Scale(-1),
        KeyCode::Char('R') => Key::RestartWorker,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(meaning(key(KeyCode::Char('q'))), Some(Key::Quit));
        assert_eq!(meaning(key(KeyCode::Down)), Some(Key::Move(1)));
        assert_eq!(meaning(key(KeyCode::Char('+'))), Some(Key::Scale(1)));
        assert_eq!(meaning(key(KeyCode::Char('R'))), Some(Key::RestartWorker));
        assert_eq!(meaning(key(KeyCode::Char('x'))), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(meaning(ctrl_c), Some(Key::Quit));
    }
}
