//! `brokerscope audit`: read the audit log back — `query` prints matching records as JSON
//! lines, `export` writes them as a JSON array or CSV. Both read the rotated files too
//! (`FILE.N` … `FILE.1`, then `FILE`), oldest first.
use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use observer::audit::{
    AuditError, DEFAULT_AUDIT_FILE, ExportFormat, Filter,
    query::{self, now_ns, parse_time},
};

use crate::Usage;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the matching audit records, one JSON object per line.
    Query(QueryArgs),
    /// Write the matching audit records as a JSON array or CSV (RFC 4180, header line).
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// The audit log (its rotated files FILE.1 … are read too).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_AUDIT_FILE)]
    pub file: PathBuf,
    /// Only these actions: exact names or globs, e.g. `queue.*,access.denied` (repeatable).
    #[arg(long = "action", value_delimiter = ',', value_name = "ACTION")]
    pub actions: Vec<String>,
    /// Only records of this user name.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Only this outcome: success, failure or unknown.
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,
    /// Only this system: rabbitmq (or amqp), mqtt, nats, kafka.
    #[arg(long, value_name = "SYSTEM")]
    pub system: Option<String>,
    /// Records at or after this time: RFC 3339 or a duration ago (30s, 15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Records at or before this time: RFC 3339 or a duration ago.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// json (an array of records) or csv.
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn usage(e: AuditError) -> anyhow::Error {
    if e.is_usage() {
        Usage(e.to_string()).into()
    } else {
        e.into()
    }
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter, AuditError> {
        let now = now_ns();
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now)).transpose();
        let filter = Filter {
            actions: self.actions.clone(),
            user: self.user.clone(),
            outcome: self
                .outcome
                .as_deref()
                .map(Filter::outcome_from)
                .transpose()?,
            system: self
                .system
                .as_deref()
                .map(Filter::system_from)
                .transpose()?,
            since_ns: time(&self.since)?,
            until_ns: time(&self.until)?,
        };
        Ok(filter)
    }
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = match args.command {
        AuditCommand::Query(q) => {
            let filter = q.filter.filter().map_err(usage)?;
            query::query(&q.filter.file, &filter, &mut out).map_err(usage)?
        }
        AuditCommand::Export(x) => {
            let format: ExportFormat = x.format.parse().map_err(usage)?;
            let filter = x.filter.filter().map_err(usage)?;
            query::export(&x.filter.file, &filter, format, &mut out).map_err(usage)?
        }
    };
    out.flush()?;
    if stats.bad_lines > 0 {
        eprintln!(
            "brokerscope: skipped {} line(s) that are not audit records",
            stats.bad_lines
        );
    }
    Ok(ExitCode::SUCCESS)
}
