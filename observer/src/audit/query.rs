//! Reading audit files back: every file of a rotated log, oldest first, filtered; export as
//! JSON or CSV.
//!
//! Files: `path.N` … `path.1` (rotated, oldest first), then `path`. Lines that do not parse as
//! records (a line cut by a crash, a foreign line) are skipped and counted in [`ReadStats`].
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    str::FromStr,
};

use super::{AuditError, AuditRecord, sink::rotated_path};
use crate::render::glob_match;

/// Which records to keep. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `event.action`: exact names or globs (`queue.*`); any may match.
    pub actions: Vec<String>,
    /// `user.name`, exact.
    pub user: Option<String>,
    /// `event.outcome`: success, failure or unknown.
    pub outcome: Option<String>,
    /// `messaging.system`: rabbitmq, mqtt, nats or kafka.
    pub system: Option<String>,
    /// Records at or after this time (ns since the epoch).
    pub since_ns: Option<i128>,
    /// Records at or before this time (ns since the epoch).
    pub until_ns: Option<i128>,
}

impl Filter {
    /// Checks and normalises an outcome name.
    pub fn outcome_from(s: &str) -> Result<String, AuditError> {
        match s {
            "success" | "failure" | "unknown" => Ok(s.to_owned()),
            _ => Err(AuditError::BadOutcome(s.to_owned())),
        }
    }

    /// Checks and normalises a system name (`amqp` means `rabbitmq`).
    pub fn system_from(s: &str) -> Result<String, AuditError> {
        match s {
            "rabbitmq" | "amqp" => Ok("rabbitmq".into()),
            "mqtt" | "nats" | "kafka" => Ok(s.to_owned()),
            _ => Err(AuditError::BadSystem(s.to_owned())),
        }
    }

    pub fn matches(&self, r: &AuditRecord) -> bool {
        if !self.actions.is_empty() && !self.actions.iter().any(|a| glob_match(a, &r.event.action))
        {
            return false;
        }
        if let Some(u) = &self.user
            && r.user.as_ref().is_none_or(|x| &x.name != u)
        {
            return false;
        }
        if self.outcome.as_ref().is_some_and(|o| o != &r.event.outcome) {
            return false;
        }
        if self
            .system
            .as_ref()
            .is_some_and(|s| s != &r.messaging.system)
        {
            return false;
        }
        if self.since_ns.is_some() || self.until_ns.is_some() {
            let Some(t) = r.time_ns() else { return false };
            if self.since_ns.is_some_and(|s| t < s) || self.until_ns.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// What a read saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: usize,
    pub lines: u64,
    pub matched: u64,
    /// Lines that are not audit records (skipped).
    pub bad_lines: u64,
}

/// The files of the audit log at `path` that exist, oldest first.
pub fn audit_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    let mut n = 1;
    // Rotated files are contiguous from .1; tolerate one hole (a rotation interrupted).
    let mut misses = 0;
    while misses < 2 {
        let p = rotated_path(path, n);
        if p.exists() {
            rotated.push(p);
            misses = 0;
        } else {
            misses += 1;
        }
        n += 1;
    }
    rotated.reverse();
    if path.exists() {
        rotated.push(path.to_owned());
    }
    rotated
}

/// Calls `each(record, line)` for every record of the log at `path` that `filter` keeps, oldest
/// file first, in file order.
pub fn read_records(
    path: &Path,
    filter: &Filter,
    mut each: impl FnMut(&AuditRecord, &str) -> io::Result<()>,
) -> Result<ReadStats, AuditError> {
    let files = audit_files(path);
    if files.is_empty() {
        return Err(AuditError::NoFile(path.to_owned()));
    }
    let mut stats = ReadStats {
        files: files.len(),
        ..Default::default()
    };
    for f in files {
        let read_err = |source| AuditError::Read {
            path: f.clone(),
            source,
        };
        let reader = BufReader::new(File::open(&f).map_err(read_err)?);
        for line in reader.lines() {
            let line = line.map_err(read_err)?;
            if line.trim().is_empty() {
                continue;
            }
            stats.lines += 1;
            let Ok(rec) = serde_json::from_str::<AuditRecord>(&line) else {
                stats.bad_lines += 1;
                continue;
            };
            if filter.matches(&rec) {
                stats.matched += 1;
                each(&rec, &line).map_err(AuditError::Write)?;
            }
        }
    }
    Ok(stats)
}

/// Prints the matching lines as they are in the files.
pub fn query(path: &Path, filter: &Filter, out: &mut dyn Write) -> Result<ReadStats, AuditError> {
    let stats = read_records(path, filter, |_, line| writeln!(out, "{line}"))?;
    out.flush().map_err(AuditError::Write)?;
    Ok(stats)
}

/// `export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A JSON array of records, one per line.
    Json,
    /// RFC 4180 CSV with [`CSV_COLUMNS`] and a header line.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(ExportFormat::Json),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(AuditError::BadFormat(other.to_owned())),
        }
    }
}

/// The CSV columns, in order (dotted names of the JSON fields).
pub const CSV_COLUMNS: [&str; 20] = [
    "time",
    "node",
    "event.action",
    "event.outcome",
    "messaging.system",
    "user.name",
    "vhost",
    "resource.type",
    "resource.name",
    "resource.parent",
    "reason.code",
    "reason.text",
    "client.ip",
    "client.port",
    "server.ip",
    "server.port",
    "process.pid",
    "process.executable",
    "connection",
    "protocol_method",
];

/// One CSV field, quoted when RFC 4180 needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The values of [`CSV_COLUMNS`] for `r` (empty when absent).
pub fn csv_values(r: &AuditRecord) -> Vec<String> {
    let o = |v: Option<String>| v.unwrap_or_default();
    let res = r.resource.as_ref();
    vec![
        r.time.clone(),
        r.node.clone(),
        r.event.action.clone(),
        r.event.outcome.clone(),
        r.messaging.system.clone(),
        o(r.user.as_ref().map(|u| u.name.clone())),
        o(r.vhost.clone()),
        o(res.map(|x| x.kind.clone())),
        o(res.and_then(|x| x.name.clone())),
        o(res.and_then(|x| x.parent.clone())),
        o(r.reason
            .as_ref()
            .and_then(|x| x.code)
            .map(|c| c.to_string())),
        o(r.reason.as_ref().and_then(|x| x.text.clone())),
        o(r.client.as_ref().map(|c| c.ip.clone())),
        o(r.client.as_ref().map(|c| c.port.to_string())),
        o(r.server.as_ref().map(|c| c.ip.clone())),
        o(r.server.as_ref().map(|c| c.port.to_string())),
        o(r.process
            .as_ref()
            .and_then(|p| p.pid)
            .map(|p| p.to_string())),
        o(r.process.as_ref().and_then(|p| p.executable.clone())),
        o(r.connection.clone()),
        o(r.protocol_method.clone()),
    ]
}

fn csv_line(values: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut line = values
        .into_iter()
        .map(|v| csv_field(v.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Writes the matching records as `format`.
pub fn export(
    path: &Path,
    filter: &Filter,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<ReadStats, AuditError> {
    let w = AuditError::Write;
    let stats = match format {
        ExportFormat::Csv => {
            out.write_all(csv_line(CSV_COLUMNS).as_bytes()).map_err(w)?;
            read_records(path, filter, |r, _| {
                out.write_all(csv_line(csv_values(r)).as_bytes())
            })?
        }
        ExportFormat::Json => {
            out.write_all(b"[").map_err(w)?;
            let mut first = true;
            let stats = read_records(path, filter, |r, _| {
                let sep = if first { "\n" } else { ",\n" };
                first = false;
                write!(out, "{sep}{}", r.to_json_line())
            })?;
            out.write_all(if first { b"]\n" } else { b"\n]\n" })
                .map_err(w)?;
            stats
        }
    };
    out.flush().map_err(w)?;
    Ok(stats)
}

/// Parses a CSV export (RFC 4180) into rows of fields: for tests and tools.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Times

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 (`2026-05-01T12:00:00Z`, fractions, `+02:00` offsets, `t`/space separator) → ns
/// since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i128 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut ns = String::from(&digits[..digits.len().min(9)]);
        while ns.len() < 9 {
            ns.push('0');
        }
        frac = ns.parse().ok()?;
    }
    let offset: i64 = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let off = oh * 3600 + om * 60;
            if tz.starts_with('-') { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// `--since` / `--until`: RFC 3339, or a duration before `now_ns` (`30s`, `15m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ns: i128) -> Result<i128, AuditError> {
    let bad = || AuditError::BadTime(s.to_owned());
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i128 = n.parse().map_err(|_| bad())?;
    let secs: i128 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(now_ns - n * secs * 1_000_000_000)
}

/// Now, ns since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}
