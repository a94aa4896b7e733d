//! `brokerscope check`: the preflight table.
use std::process::ExitCode;

use observer::capture::preflight::{Status, run_checks};

pub fn run() -> anyhow::Result<ExitCode> {
    let checks = run_checks();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &checks {
        println!("{:<width$}  {:<4}  {}", c.name, c.status.label(), c.detail);
        if let Some(fix) = &c.fix
            && c.status != Status::Pass
        {
            println!("{:<width$}        → {fix}", "");
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        println!("\nall required checks passed: brokerscope can capture on this host");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{failed} required check(s) failed: fix them before running brokerscope");
        Ok(ExitCode::from(1))
    }
}
