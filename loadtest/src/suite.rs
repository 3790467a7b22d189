//! The suite: run the chosen scenarios one after another (each with its
//! own store and fleet), keep going when one cannot run, and write the
//! combined summary (`summary.md`, `summary.json`) at the top of the
//! output dir.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::binaries::Binaries;
use crate::report::{details, table, Outcome};
use crate::run::{run_scenario, write};
use crate::scenario::{Plan, Scenario};

/// What to run and where to put it.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub scenarios: Vec<Scenario>,
    pub short: bool,
    /// Default: `loadtest/results/faults-<scenario|all>-<UTC stamp>/`.
    pub out: Option<PathBuf>,
    pub binaries: Binaries,
    /// Replace the plan's number of users.
    pub users: Option<usize>,
    /// Replace the plan's think time (ms, drawn uniformly).
    pub think_ms: Option<RangeInclusive<u64>>,
}

impl SuiteOptions {
    /// `scenario`'s plan with this run's replacements.
    fn plan(&self, scenario: Scenario) -> Plan {
        let mut plan = scenario.plan(self.short);
        if let Some(users) = self.users {
            plan.load.users = users;
        }
        if let Some(think) = &self.think_ms {
            plan.load.think_ms = think.clone();
        }
        plan
    }
}

/// What the suite found.
#[derive(Debug)]
pub struct SuiteResult {
    pub outcomes: Vec<Outcome>,
    pub out_dir: PathBuf,
    /// The markdown summary table.
    pub table: String,
    pub wall_s: f64,
}

impl SuiteResult {
    pub fn musts_hold(&self) -> bool {
        self.outcomes.iter().all(Outcome::musts_hold)
    }

    pub fn broken_musts(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .flat_map(Outcome::broken_musts)
            .collect()
    }
}

pub async fn run(options: &SuiteOptions) -> Result<SuiteResult> {
    let wall = Instant::now();
    let out_dir = options
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&options.scenarios));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut outcomes = Vec::with_capacity(options.scenarios.len());
    for &scenario in &options.scenarios {
        let dir = scenario_dir(&out_dir, scenario, options.scenarios.len());
        let plan = options.plan(scenario);
        let outcome =
            match run_scenario(scenario, &plan, options.short, &options.binaries, &dir).await {
                Ok(report) => Outcome::Ran(Box::new(report)),
                Err(e) => {
                    eprintln!("{scenario} did not run: {e:#}");
                    Outcome::Failed {
                        scenario: scenario.name().into(),
                        error: format!("{e:#}"),
                    }
                }
            };
        if options.scenarios.len() > 1 {
            if let Outcome::Ran(report) = &outcome {
                let single = [outcome.clone()];
                write_summary(&dir, &single, options.short, report.wall_s)?;
            }
        }
        outcomes.push(outcome);
    }
    let result = SuiteResult {
        table: table(&outcomes),
        outcomes,
        out_dir,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    write_summary(
        &result.out_dir,
        &result.outcomes,
        options.short,
        result.wall_s,
    )?;
    Ok(result)
}

/// A scenario's own dir: the output dir itself when it runs alone.
fn scenario_dir(out_dir: &Path, scenario: Scenario, count: usize) -> PathBuf {
    if count == 1 {
        out_dir.to_path_buf()
    } else {
        out_dir.join(scenario.name())
    }
}

fn default_out_dir(scenarios: &[Scenario]) -> PathBuf {
    let name = match scenarios {
        [one] => one.name(),
        _ => "all",
    };
    // 2026-11-27T05:46:39Z → 20261127T054639Z
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("faults-{name}-{stamp}"))
}

/// `summary.md` and `summary.json` of `outcomes` in `dir`.
fn write_summary(dir: &Path, outcomes: &[Outcome], short: bool, wall_s: f64) -> Result<()> {
    let broken: Vec<String> = outcomes.iter().flat_map(Outcome::broken_musts).collect();
    let verdict = if broken.is_empty() {
        "Every MUST held.".to_string()
    } else {
        format!("MUSTs broken:\n\n- {}", broken.join("\n- "))
    };
    let markdown = format!(
        "# Roost fault suite{}\n\n{}\n{verdict}\n\nWall time {wall_s:.1} s.\n{}",
        if short { " (short)" } else { "" },
        table(outcomes),
        details(outcomes)
    );
    write(&dir.join("summary.md"), &markdown)?;
    let json = serde_json::json!({
        "short": short,
        "wall_s": wall_s,
        "musts_hold": broken.is_empty(),
        "broken_musts": broken,
        "scenarios": outcomes,
    });
    let json = serde_json::to_string_pretty(&json).context("serialize summary.json")?;
    write(&dir.join("summary.json"), &json)
}
