//! `brokerscope top`: a live view, refreshed every interval. Per destination: publish and
//! deliver rates (with a sparkline of the last minute), publish→confirm, publish→deliver and
//! deliver→ack p50/p99, messages in flight (delivered, not yet settled) and errors; per
//! connection (`c`): client address, user, protocol, rates. Keys sort (`s`, `r`), filter
//! (`/`), select (↑/↓); the detail pane shows the selected destination's latency histograms;
//! the status bar has the loss counters. When stdout is not a terminal it prints a plain table
//! every interval instead.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{IsTerminal, Write},
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use observer::{
    capture::{CaptureSession, ConnId, StreamEvent, StreamSink},
    correlate::{Correlator, CorrelatorConfig},
    event::{BrokerEvent, EventKind, Outcome, System},
    live::{LiveStats, LogHistogram, Stage},
    protocol::{infer::Inference, pipeline::DecodePipeline},
};
use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState},
};

use crate::{CaptureOptions, TargetArgs, latency::human_ns, trace::parse_protocols};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// With no --pid, --process or --port: every broker found on the host.
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub options: CaptureOptions,
    /// Refresh interval in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Plain periodic tables even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Decode PORT as SYSTEM (amqp, mqtt, nats, kafka) whatever its first bytes say (repeatable).
    #[arg(long = "protocol", value_name = "PORT=SYSTEM")]
    pub protocols: Vec<String>,
}

/// Rate samples kept per destination for the sparklines (one per interval).
const HISTORY: usize = 60;

#[derive(Default)]
struct ConnRow {
    system: Option<System>,
    peer: Option<SocketAddr>,
    user: Option<String>,
    published: u64,
    delivered: u64,
    rates: (f64, f64),
    last: (u64, u64),
    open: bool,
}

/// Publish and deliver rate samples, and the counts the last samples came from.
type RateHistory = (VecDeque<f64>, VecDeque<f64>, u64, u64);

/// Everything the screen shows, updated from events.
struct Model {
    live: LiveStats,
    correlator: Correlator,
    conns: HashMap<ConnId, ConnRow>,
    /// (system, destination) → publish and deliver rate samples and the counts they came from.
    history: BTreeMap<(System, Option<String>), RateHistory>,
}

impl Model {
    fn event(&mut self, e: &BrokerEvent) {
        self.live.event(e);
        let live = &mut self.live;
        self.correlator.observe(e, &mut |o| live.observation(&o, e));
        let row = self.conns.entry(e.conn.id).or_default();
        row.system = Some(e.system);
        row.peer = Some(e.conn.peer);
        match e.kind {
            EventKind::ConnectionOpened => row.open = true,
            EventKind::ConnectionClosed => row.open = false,
            EventKind::Auth if e.outcome != Some(Outcome::Failure) => {
                row.user.clone_from(&e.user);
            }
            EventKind::Publish => row.published += u64::from(e.record_count.unwrap_or(1)),
            EventKind::Deliver => row.delivered += u64::from(e.record_count.unwrap_or(1)),
            _ => {}
        }
    }

    /// Once per interval: rates from the counts' increase; closed connections leave.
    fn tick(&mut self, seconds: f64) {
        for (key, c) in self.live.destinations() {
            let h = self
                .history
                .entry(key.clone())
                .or_insert_with(|| (VecDeque::new(), VecDeque::new(), 0, 0));
            h.0.push_back((c.published - h.2) as f64 / seconds);
            h.1.push_back((c.delivered - h.3) as f64 / seconds);
            (h.2, h.3) = (c.published, c.delivered);
            for q in [&mut h.0, &mut h.1] {
                while q.len() > HISTORY {
                    q.pop_front();
                }
            }
        }
        self.conns
            .retain(|_, c| c.open || c.published + c.delivered > c.last.0 + c.last.1);
        for c in self.conns.values_mut() {
            c.rates = (
                (c.published - c.last.0) as f64 / seconds,
                (c.delivered - c.last.1) as f64 / seconds,
            );
            c.last = (c.published, c.delivered);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.correlator.expire(now);
    }

    fn histogram(
        &self,
        system: System,
        dest: &Option<String>,
        stage: Stage,
    ) -> Option<&LogHistogram> {
        self.live
            .stages()
            .find(|((s, d, st), _)| *s == system && d == dest && *st == stage)
            .map(|(_, h)| h)
    }

    /// The destination rows, filtered and sorted.
    fn rows(&self, ui: &Ui) -> Vec<DestRow> {
        let mut rows: Vec<DestRow> = self
            .live
            .destinations()
            .filter(|((_, d), _)| {
                ui.filter.is_empty() || d.as_deref().unwrap_or("-").contains(ui.filter.as_str())
            })
            .map(|((system, dest), c)| {
                let h = self.history.get(&(*system, dest.clone()));
                let q = |stage, p| {
                    self.histogram(*system, dest, stage)
                        .filter(|h| h.count() > 0)
                        .map(|h| h.quantile(p))
                };
                DestRow {
                    system: *system,
                    destination: dest.clone(),
                    pub_rate: h.and_then(|h| h.0.back().copied()).unwrap_or(0.0),
                    del_rate: h.and_then(|h| h.1.back().copied()).unwrap_or(0.0),
                    pub_history: h.map(|h| h.0.iter().copied().collect()).unwrap_or_default(),
                    confirm: (
                        q(Stage::PublishConfirm, 0.5),
                        q(Stage::PublishConfirm, 0.99),
                    ),
                    deliver: (
                        q(Stage::PublishDeliver, 0.5),
                        q(Stage::PublishDeliver, 0.99),
                    ),
                    ack: (q(Stage::DeliverAck, 0.5), q(Stage::DeliverAck, 0.99)),
                    in_flight: c.delivered.saturating_sub(c.acked + c.nacked + c.rejected),
                    errors: c.errors(),
                }
            })
            .collect();
        let key = |r: &DestRow| -> f64 {
            match SORTS[ui.sort] {
                "destination" => 0.0,
                "pub/s" => r.pub_rate,
                "del/s" => r.del_rate,
                "p→c p99" => r.confirm.1.unwrap_or(0) as f64,
                "p→d p99" => r.deliver.1.unwrap_or(0) as f64,
                "d→a p99" => r.ack.1.unwrap_or(0) as f64,
                _ => r.errors as f64,
            }
        };
        if SORTS[ui.sort] == "destination" {
            rows.sort_by(|a, b| a.destination.cmp(&b.destination));
        } else {
            rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
        }
        if ui.reverse {
            rows.reverse();
        }
        rows
    }
}

struct DestRow {
    system: System,
    destination: Option<String>,
    pub_rate: f64,
    del_rate: f64,
    pub_history: Vec<f64>,
    confirm: (Option<u64>, Option<u64>),
    deliver: (Option<u64>, Option<u64>),
    ack: (Option<u64>, Option<u64>),
    in_flight: u64,
    errors: u64,
}

const SORTS: [&str; 7] = [
    "destination",
    "pub/s",
    "del/s",
    "p→c p99",
    "p→d p99",
    "d→a p99",
    "errors",
];

#[derive(Default)]
struct Ui {
    connections: bool,
    sort: usize,
    reverse: bool,
    filter: String,
    editing: bool,
    table: TableState,
    quit: bool,
}

impl Ui {
    fn key(&mut self, code: KeyCode) {
        if self.editing {
            match code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('c') | KeyCode::Tab => self.connections = !self.connections,
            KeyCode::Char('s') => self.sort = (self.sort + 1) % SORTS.len(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
            }
            KeyCode::Down | KeyCode::Char('j') => self.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table.select_previous(),
            _ => {}
        }
    }
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), human_ns)
}

/// At most 4 characters ("37µ", "3.4m", "120m", "1.5s"), so three p50/p99 pairs fit in 80
/// columns.
fn short(v: Option<u64>) -> String {
    let Some(ns) = v else { return "-".into() };
    let (x, unit) = match ns {
        0..1_000 => return format!("{ns}n"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µ"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "m"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if x >= 10.0 {
        format!("{x:.0}{unit}")
    } else {
        format!("{x:.1}{unit}")
    }
}

fn pair(p: (Option<u64>, Option<u64>)) -> String {
    format!("{}/{}", short(p.0), short(p.1))
}

fn spark(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let top = tail.iter().copied().fold(0.0f64, f64::max);
    tail.iter()
        .map(|v| {
            if top <= 0.0 {
                ' '
            } else {
                BARS[((v / top) * 7.0).round() as usize]
            }
        })
        .collect()
}

/// Loss and decode counters for the status bar.
fn status(session: &CaptureSession, malformed: u64) -> String {
    let lost = session
        .kernel_counters()
        .ok()
        .map_or(0, |k| k.get(observer_common::Counter::ChunksLost));
    let s = session.stats();
    format!(
        "targets {} | conns {} | ring lost {lost} | gap bytes lost {} truncated {} | malformed {malformed}",
        session.targets().count(),
        session.open_connections(),
        s.gap_bytes_lost,
        s.gap_bytes_truncated,
    )
}

fn draw(frame: &mut Frame, model: &Model, ui: &mut Ui, status_line: &str) {
    let [header, main, detail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(6),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    let filter = if ui.editing || !ui.filter.is_empty() {
        format!(
            " filter: {}{}",
            ui.filter,
            if ui.editing { "▏" } else { "" }
        )
    } else {
        String::new()
    };
    frame.render_widget(
        Paragraph::new(format!(
            "brokerscope top — {} — sort: {}{}{}",
            if ui.connections {
                "connections"
            } else {
                "destinations"
            },
            SORTS[ui.sort],
            if ui.reverse { " (reversed)" } else { "" },
            filter
        ))
        .style(Style::new().add_modifier(Modifier::BOLD)),
        header,
    );
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let rows = model.rows(ui);
    if ui.connections {
        let mut conns: Vec<_> = model.conns.values().collect();
        conns.sort_by(|a, b| (b.rates.0 + b.rates.1).total_cmp(&(a.rates.0 + a.rates.1)));
        let table = Table::new(
            conns.iter().map(|c| {
                Row::new(vec![
                    Cell::from(c.peer.map_or("-".into(), |p| p.to_string())),
                    Cell::from(c.system.map_or("-", |s| s.as_str())),
                    Cell::from(c.user.clone().unwrap_or_else(|| "-".into())),
                    Cell::from(format!("{:.0}", c.rates.0)),
                    Cell::from(format!("{:.0}", c.rates.1)),
                ])
            }),
            [
                Constraint::Length(22),
                Constraint::Length(6),
                Constraint::Length(14),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["CLIENT", "PROTO", "USER", "PUB/S", "DEL/S"]).style(bold))
        .block(Block::new().borders(Borders::TOP));
        frame.render_stateful_widget(table, main, &mut ui.table);
    } else {
        let table = Table::new(
            rows.iter().map(|r| {
                Row::new(vec![
                    Cell::from(format!(
                        "{} {}",
                        r.system.as_str(),
                        r.destination.as_deref().unwrap_or("-")
                    )),
                    Cell::from(format!("{:.0}", r.pub_rate)),
                    Cell::from(spark(&r.pub_history, 8)),
                    Cell::from(format!("{:.0}", r.del_rate)),
                    Cell::from(pair(r.confirm)),
                    Cell::from(pair(r.deliver)),
                    Cell::from(pair(r.ack)),
                    Cell::from(r.in_flight.to_string()),
                    Cell::from(r.errors.to_string()),
                ])
            }),
            [
                Constraint::Min(14),
                Constraint::Length(5),
                Constraint::Length(8),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Length(3),
            ],
        )
        .header(
            Row::new([
                "DESTINATION",
                "PUB/S",
                "",
                "DEL/S",
                "P→C 50/99",
                "P→D 50/99",
                "D→A 50/99",
                "INFL",
                "ERR",
            ])
            .style(bold),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::new().borders(Borders::TOP));
        frame.render_stateful_widget(table, main, &mut ui.table);
    }
    // Detail: histograms of the selected (or first) destination, one line per stage.
    let selected = ui.table.selected().unwrap_or(0);
    let mut lines = Vec::new();
    if let Some(r) = rows.get(selected).filter(|_| !ui.connections) {
        lines.push(Line::from(format!(
            "{} {}",
            r.system.as_str(),
            r.destination.as_deref().unwrap_or("-")
        )));
        for stage in [
            Stage::PublishConfirm,
            Stage::PublishDeliver,
            Stage::DeliverAck,
        ] {
            if let Some(h) = model
                .histogram(r.system, &r.destination, stage)
                .filter(|h| h.count() > 0)
            {
                let octaves = h.octaves();
                let counts: Vec<f64> = octaves.iter().map(|(_, c)| *c as f64).collect();
                lines.push(Line::from(format!(
                    "{:<5} n={} p50={} p99={} max={}  {} from {}",
                    stage.arrow(),
                    h.count(),
                    human_ns(h.quantile(0.5)),
                    human_ns(h.quantile(0.99)),
                    human_ns(h.max()),
                    spark(&counts, 40),
                    human_ns(octaves[0].0)
                )));
            }
        }
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title("detail")),
        detail,
    );
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(status_line.to_owned()),
            Line::from("q quit  c connections  s sort  r reverse  / filter  ↑↓ select"),
        ]),
        footer,
    );
}

fn plain(model: &Model, ui: &Ui, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<30} {:>8} {:>8} {:>17} {:>17} {:>17} {:>6} {:>5}",
        "DESTINATION", "PUB/S", "DEL/S", "P→C p50/p99", "P→D p50/p99", "D→A p50/p99", "INFL", "ERR"
    )?;
    for r in model.rows(ui) {
        writeln!(
            out,
            "{:<30} {:>8.0} {:>8.0} {:>17} {:>17} {:>17} {:>6} {:>5}",
            format!(
                "{} {}",
                r.system.as_str(),
                r.destination.as_deref().unwrap_or("-")
            ),
            r.pub_rate,
            r.del_rate,
            format!("{}/{}", ms(r.confirm.0), ms(r.confirm.1)),
            format!("{}/{}", ms(r.deliver.0), ms(r.deliver.1)),
            format!("{}/{}", ms(r.ack.0), ms(r.ack.1)),
            r.in_flight,
            r.errors
        )?;
    }
    writeln!(out)?;
    out.flush()
}

struct Sink<'a> {
    pipeline: &'a mut DecodePipeline<Model>,
}

impl StreamSink for Sink<'_> {
    fn event(&mut self, event: StreamEvent<'_>) {
        self.pipeline.event(event);
    }
}

impl observer::protocol::EventSink for Model {
    fn event(&mut self, e: &BrokerEvent) {
        Model::event(self, e);
    }
}

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(crate::Usage(format!(
            "--interval {}: give at least 0.1 seconds",
            args.interval
        ))
        .into());
    }
    let forced = parse_protocols(&args.protocols)?;
    let mut session = CaptureSession::start(
        args.targets.spec_or_discover(),
        args.options.session_config(),
    )?;
    let model = Model {
        live: LiveStats::new(0),
        correlator: Correlator::new(CorrelatorConfig::default()),
        conns: HashMap::new(),
        history: BTreeMap::new(),
    };
    let mut pipeline = DecodePipeline::new(Inference::new(forced), model);
    let interactive = !args.plain && std::io::stdout().is_terminal();
    let mut terminal = interactive.then(ratatui::init);
    let mut ui = Ui::default();
    let interval = Duration::from_secs_f64(args.interval);
    let deadline = args
        .options
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut last_tick = Instant::now();
        let mut status_line = String::new();
        loop {
            // Short slices keep the keys responsive; the model ticks once per interval.
            let slice = Duration::from_millis(if interactive { 100 } else { 250 });
            let mut stop = false;
            let wait = async {
                tokio::select! {
                    _ = tokio::time::sleep(slice) => {},
                    _ = tokio::signal::ctrl_c() => stop = true,
                    _ = term.recv() => stop = true,
                }
            };
            session
                .run(
                    &mut Sink {
                        pipeline: &mut pipeline,
                    },
                    wait,
                )
                .await?;
            if interactive {
                while event::poll(Duration::ZERO)? {
                    if let Event::Key(k) = event::read()?
                        && k.kind == KeyEventKind::Press
                    {
                        ui.key(k.code);
                    }
                }
            }
            let elapsed = last_tick.elapsed();
            if elapsed >= interval {
                last_tick = Instant::now();
                let malformed = pipeline.stats().decoder.malformed;
                status_line = status(&session, malformed);
                pipeline.sink_mut().tick(elapsed.as_secs_f64());
                if !interactive {
                    plain(pipeline.sink(), &ui, &mut std::io::stdout().lock())?;
                }
            }
            if let Some(t) = terminal.as_mut() {
                t.draw(|f| draw(f, pipeline.sink(), &mut ui, &status_line))?;
            }
            if stop || ui.quit || deadline.is_some_and(|d| Instant::now() >= d) {
                return anyhow::Ok(());
            }
        }
    });
    if terminal.is_some() {
        ratatui::restore();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
