//! The screen, drawn from the [`View`] with ratatui: a title, the apps and
//! their workers as one list (an app's line, then a line per worker, in
//! PM2's columns plus open connections), the latest events, the last key's
//! outcome and the keys. Everything fits 80×24; a terminal smaller than
//! [`MIN_WIDTH`]×[`MIN_HEIGHT`] is asked to grow.

use std::time::{SystemTime, UNIX_EPOCH};

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

use super::reading::{AppData, Process};
use super::view::{AppView, Row, View};
use crate::commands::control::table::{human_bytes, human_duration};
use crate::commands::local_time::clock;

/// The smallest terminal the view is drawn in.
pub(super) const MIN_WIDTH: u16 = 60;
pub(super) const MIN_HEIGHT: u16 = 12;
/// Lines of the events pane, with its borders.
const EVENT_LINES: u16 = 7;
/// What the keys do.
const KEYS: &str = "q quit · ↑↓ select · r reload · + - scale · R restart worker";

/// Draws `view` over the whole frame.
pub(super) fn draw(frame: &mut Frame<'_>, view: &View) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "sockherd monit needs a terminal of at least {MIN_WIDTH}×{MIN_HEIGHT} \
             (this one is {}×{}); q quits",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    let [title, header, list, events, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(EVENT_LINES),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let apps = match view.apps.len() {
        1 => "1 app".to_owned(),
        n => format!("{n} apps"),
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    frame.render_widget(
        Paragraph::new(format!("sockherd monit · {} · {apps}", view.bus)).style(bold),
        title,
    );
    frame.render_widget(
        Paragraph::new(columns([
            "id", "pid", "state", "cpu", "mem", "open", "handed", "↺", "uptime",
        ])),
        header,
    );
    draw_list(frame, view, list);
    draw_events(frame, view, events);
    frame.render_widget(
        Paragraph::new(view.status.clone().unwrap_or_default()).style(bold),
        status,
    );
    frame.render_widget(Paragraph::new(KEYS), keys);
}

fn draw_list(frame: &mut Frame<'_>, view: &View, area: Rect) {
    let placeholder = if view.waiting {
        Some(format!("reading {}…", view.bus))
    } else if let Some(error) = &view.error {
        Some(error.clone())
    } else if view.apps.is_empty() {
        Some(format!("no sockherd apps on {}", view.bus))
    } else {
        None
    };
    if let Some(text) = placeholder {
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    let now_usec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let items: Vec<ListItem<'_>> = view
        .rows()
        .into_iter()
        .map(|row| match row {
            Row::App(i) => ListItem::new(app_line(&view.apps[i]))
                .style(Style::default().add_modifier(Modifier::BOLD)),
            Row::Worker(i, j) => {
                let app = &view.apps[i];
                let process = app
                    .reading
                    .data
                    .as_ref()
                    .ok()
                    .and_then(|data| data.processes.get(j));
                ListItem::new(process.map_or_else(String::new, |p| {
                    process_line(p, app.cpu.get(&p.pid).copied(), now_usec)
                }))
            }
        })
        .collect();
    let list = List::new(items).highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(view.index());
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_events(frame: &mut Frame<'_>, view: &View, area: Rect) {
    let shown = usize::from(area.height.saturating_sub(2));
    let width = view
        .events
        .iter()
        .map(|e| e.app.chars().count())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line<'_>> = view
        .events
        .iter()
        .skip(view.events.len().saturating_sub(shown))
        .map(|e| {
            Line::from(format!(
                "{} {:<width$}  {}",
                clock(e.at_usec),
                e.app,
                e.text
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" events ")),
        area,
    );
}

/// `web · rr · generation 2 · 4/4 ready · 12.5 conn/s · 3 restarts · serving`.
fn app_line(app: &AppView) -> String {
    let data: &AppData = match &app.reading.data {
        Ok(data) => data,
        Err(e) => return format!("{} · {e}", app.app()),
    };
    let rate = app
        .rate
        .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}"));
    let restarts = match data.restarts {
        1 => "1 restart".to_owned(),
        n => format!("{n} restarts"),
    };
    format!(
        "{} · {} · generation {} · {}/{} ready · {rate} conn/s · {restarts} · {}",
        data.app,
        data.policy,
        data.generation,
        data.ready,
        data.workers,
        state(data)
    )
}

/// The app's state in words: serving, reloading, gave up, …
fn state(data: &AppData) -> String {
    if !data.gave_up.is_empty() {
        let ids: Vec<String> = data.gave_up.iter().map(u32::to_string).collect();
        return format!("gave up: worker {}", ids.join(", "));
    }
    match data.state.as_str() {
        "running" => "serving".to_owned(),
        other => other.to_owned(),
    }
}

fn process_line(p: &Process, cpu: Option<f64>, now_usec: u64) -> String {
    let dash = || "-".to_owned();
    let cells = [
        p.id.to_string(),
        p.pid.to_string(),
        p.state.clone(),
        cpu.map_or_else(dash, |cpu| format!("{cpu:.1}%")),
        human_bytes(p.rss_bytes),
        p.open.map_or_else(dash, |open| open.to_string()),
        p.connections.to_string(),
        p.restarts.to_string(),
        human_duration(now_usec.saturating_sub(p.started_usec) / 1_000_000),
    ];
    columns(cells.each_ref().map(String::as_str))
}

/// One line in the workers' columns (id, pid, state, cpu, mem, open,
/// handed, ↺, uptime): 73 characters.
fn columns(cells: [&str; 9]) -> String {
    let [id, pid, state, cpu, mem, open, handed, restarts, uptime] = cells;
    format!(
        "  {id:<6} {pid:>8} {state:<9} {cpu:>7} {mem:>9} {open:>6} {handed:>8} {restarts:>3} {uptime:>7}"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::commands::monit::reading::Reading;
    use crate::commands::monit::view::tests::app;

    fn screen(view: &View, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a terminal");
        terminal.draw(|frame| draw(frame, view)).expect("drawn");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn fits_80_by_24() {
        let mut view = View::new("the system bus".into());
        view.update(Reading {
            at: Instant::now(),
            apps: Ok(vec![app(
                "web",
                7,
                &[(0, 4242, "ready", 0), (1, 4243, "starting", 0)],
            )]),
        });
        view.event("web", "worker 1 started (pid 4243)".into());
        let lines = screen(&view, 80, 24);
        assert_eq!(lines[0], "sockherd monit · the system bus · 1 app");
        assert!(
            lines[1].starts_with("  id          pid state"),
            "{:?}",
            lines[1]
        );
        assert!(
            lines[2].starts_with(
                "web · rr · generation 1 · 1/2 ready · - conn/s · 0 restarts · serving"
            ),
            "{:?}",
            lines[2]
        );
        assert!(
            lines[3].starts_with("  0          4242 ready"),
            "{:?}",
            lines[3]
        );
        assert!(lines[3].contains("3.0MiB") && lines[3].contains("      1        5"));
        assert!(
            lines[4].starts_with("  1          4243 starting"),
            "{:?}",
            lines[4]
        );
        assert!(lines
            .iter()
            .any(|l| l.ends_with("web  worker 1 started (pid 4243)")));
        assert_eq!(lines[23], KEYS);
        assert!(lines.iter().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn too_small_says_so() {
        let view = View::new("bus".into());
        let lines = screen(&view, 40, 10);
        assert!(lines[0].starts_with("sockherd monit needs a terminal"));
    }
}
