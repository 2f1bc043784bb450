//! The terminal view: a scraper thread sends a scrape every interval; this thread draws the
//! latest interval and answers keys at once, whatever the agent's answer time.
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::{model, render, rows, Client, Options, Scrape};

/// What the screen shows between two refreshes.
struct View {
    rows: Vec<model::ControllerRow>,
    seconds: f64,
    sort: model::SortKey,
    reverse: bool,
    /// The last scrape's error, shown until one succeeds.
    error: Option<String>,
    /// Malformed lines in the last scrape.
    skipped: usize,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    // The first scrape before the screen is taken: an agent that is not there is a plain
    // error on the terminal the user typed into.
    let (client, first) = Client::connect(o)?;
    let source = client.source();
    let (tx, scrapes) = mpsc::sync_channel(1);
    let interval = o.interval;
    std::thread::Builder::new()
        .name("top-scraper".into())
        .spawn(move || scraper(client, interval, tx))
        .context("starting the scraper thread")?;
    let mut terminal = ratatui::try_init().context("taking the terminal")?;
    let result = event_loop(&mut terminal, o, &source, first, &scrapes);
    ratatui::restore();
    result
}

/// Scrapes every `interval` until the receiver is gone (the view quit).
fn scraper(client: Client, interval: Duration, tx: mpsc::SyncSender<anyhow::Result<Scrape>>) {
    let mut next = std::time::Instant::now() + interval;
    loop {
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        next += interval;
        if tx.send(client.scrape()).is_err() {
            return;
        }
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    o: &Options,
    source: &str,
    first: Scrape,
    scrapes: &mpsc::Receiver<anyhow::Result<Scrape>>,
) -> anyhow::Result<()> {
    let mut last = first;
    let mut view = View {
        rows: Vec::new(),
        seconds: 0.0,
        sort: o.sort,
        reverse: o.reverse,
        error: None,
        skipped: 0,
    };
    loop {
        terminal
            .draw(|f| draw(f, source, &view))
            .context("drawing")?;
        // Keys are read in slices of 100 ms so that a new scrape is shown within that long.
        if event::poll(Duration::from_millis(100)).context("reading the terminal")? {
            if let Event::Key(k) = event::read().context("reading the terminal")? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') | KeyCode::Tab => view.sort = view.sort.step(1),
                    KeyCode::Char('S') | KeyCode::BackTab => view.sort = view.sort.step(-1),
                    KeyCode::Char('r') => view.reverse = !view.reverse,
                    _ => continue,
                }
                model::sort(&mut view.rows, view.sort, view.reverse);
            }
        }
        match scrapes.try_recv() {
            Ok(Ok(next)) => {
                (view.rows, view.seconds) = rows(&last, &next, view.sort, view.reverse);
                view.error = None;
                view.skipped = next.skipped;
                last = next;
            }
            Ok(Err(e)) => view.error = Some(format!("{e:#}")),
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => anyhow::bail!("the scraper thread ended"),
        }
    }
}

fn draw(f: &mut ratatui::Frame, source: &str, v: &View) {
    let [title, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let summary = match v.seconds > 0.0 {
        true => format!(
            "{} ctrl/{} q  {:.2} s",
            v.rows.len(),
            v.rows.iter().map(|c| c.queues.len()).sum::<usize>(),
            v.seconds
        ),
        false => "waiting for the second scrape".into(),
    };
    let direction = if v.reverse { " reversed" } else { "" };
    f.render_widget(
        Paragraph::new(Line::from(format!(
            "nvmeof-exporter top  {source}  sort {}{direction}  {summary}",
            v.sort.name()
        )))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        title,
    );
    f.render_widget(
        Paragraph::new(render::lines(&v.rows, v.sort, usize::from(table.height))),
        table,
    );
    let line = match &v.error {
        Some(e) => Line::styled(e.clone(), Style::default().fg(Color::Red)),
        None if v.skipped > 0 => Line::styled(
            format!("{} malformed lines of /metrics skipped", v.skipped),
            Style::default().fg(Color::Yellow),
        ),
        None => Line::styled(
            "s/Tab sort  S back  r reverse  q quit",
            Style::default().add_modifier(Modifier::DIM),
        ),
    };
    f.render_widget(Paragraph::new(line), status);
}
