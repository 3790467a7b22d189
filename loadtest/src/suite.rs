//! The suite: run the chosen scenarios one after another (each with its
//! own store and fleet), keep going when one cannot run, and write the
//! combined summary (`summary.md`, `summary.json`) at the top of the
//! output dir. [`run_all`] does this for any kind of run ([`RunKind`]):
//! the fault scenarios ([`run`]) and the ticket sale's runs.

use std::fmt::Display;
use std::future::Future;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::report::{details, table, Outcome, RunReport, ScenarioReport};
use crate::run::{run_scenario, write};
use crate::scenario::{Plan, Scenario};
use roost_testkit::bins::Binaries;

/// A family of runs the suite drives, and how its summary reads.
pub trait RunKind: Copy + Display + 'static {
    type Report: RunReport + Serialize + Clone;
    /// Every run, in the order `all` runs them.
    const ALL: &'static [Self];
    /// The heading of `summary.md`.
    const TITLE: &'static str;
    /// Default output dirs are `loadtest/results/<PREFIX>-<run|all>-<stamp>/`.
    const PREFIX: &'static str;
    fn name(self) -> &'static str;
    fn table(outcomes: &[Outcome<Self::Report>]) -> String;
    fn details(outcomes: &[Outcome<Self::Report>]) -> String;

    /// The run called `text`.
    fn named(text: &str) -> Result<Self> {
        match Self::ALL.iter().find(|run| run.name() == text) {
            Some(run) => Ok(*run),
            None => {
                let names: Vec<&str> = Self::ALL.iter().map(|run| run.name()).collect();
                anyhow::bail!(
                    "unknown {} run {text:?}: pick one of {}, or all",
                    Self::PREFIX,
                    names.join(", ")
                )
            }
        }
    }

    /// `all`, or one run's name.
    fn select(text: &str) -> Result<Vec<Self>> {
        if text == "all" {
            return Ok(Self::ALL.to_vec());
        }
        Ok(vec![Self::named(text)?])
    }
}

impl RunKind for Scenario {
    type Report = ScenarioReport;
    const ALL: &'static [Scenario] = &Scenario::ALL;
    const TITLE: &'static str = "Roost fault suite";
    const PREFIX: &'static str = "faults";

    fn name(self) -> &'static str {
        Scenario::name(self)
    }

    fn table(outcomes: &[Outcome]) -> String {
        table(outcomes)
    }

    fn details(outcomes: &[Outcome]) -> String {
        details(outcomes)
    }
}

/// What every suite is told, whatever it runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The CI version: fewer users, shorter runs.
    pub short: bool,
    /// Default: `loadtest/results/<suite>-<run|all>-<UTC stamp>/`.
    pub out: Option<PathBuf>,
    pub binaries: Binaries,
    /// Replace the plan's number of users.
    pub users: Option<usize>,
}

/// The fault scenarios to run, and how.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub scenarios: Vec<Scenario>,
    pub common: RunOptions,
    /// Replace the plan's think time (ms, drawn uniformly).
    pub think_ms: Option<RangeInclusive<u64>>,
}

impl SuiteOptions {
    /// `scenario`'s plan with this run's replacements.
    fn plan(&self, scenario: Scenario) -> Plan {
        let mut plan = scenario.plan(self.common.short);
        if let Some(users) = self.common.users {
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
pub struct SuiteResult<R = ScenarioReport> {
    pub outcomes: Vec<Outcome<R>>,
    pub out_dir: PathBuf,
    /// The markdown summary table.
    pub table: String,
    pub wall_s: f64,
}

impl<R: RunReport> SuiteResult<R> {
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

/// The fault scenarios of `options`.
pub async fn run(options: &SuiteOptions) -> Result<SuiteResult> {
    let common = &options.common;
    run_all(&options.scenarios, common, |scenario, dir| async move {
        let plan = options.plan(scenario);
        run_scenario(scenario, &plan, common.short, &common.binaries, &dir).await
    })
    .await
}

/// Run each of `runs` with `run_one(run, its output dir)`, one after
/// another; a run that fails is reported as not run and the rest go on.
/// With several runs each gets a subdir with its own summary; the combined
/// summary goes to `options.out` (default: a fresh dir under
/// `loadtest/results/`).
pub async fn run_all<K, F, Fut>(
    runs: &[K],
    options: &RunOptions,
    mut run_one: F,
) -> Result<SuiteResult<K::Report>>
where
    K: RunKind,
    F: FnMut(K, PathBuf) -> Fut,
    Fut: Future<Output = Result<K::Report>>,
{
    let wall = Instant::now();
    let short = options.short;
    let out_dir = options
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(K::PREFIX, runs));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut outcomes = Vec::with_capacity(runs.len());
    for &run in runs {
        let dir = run_dir(&out_dir, &run.to_string(), runs.len());
        let started = Instant::now();
        let outcome = match run_one(run, dir.clone()).await {
            Ok(report) => Outcome::Ran(Box::new(report)),
            Err(e) => {
                eprintln!("{run} did not run: {e:#}");
                Outcome::Failed {
                    scenario: run.to_string(),
                    error: format!("{e:#}"),
                }
            }
        };
        if runs.len() > 1 && matches!(outcome, Outcome::Ran(_)) {
            let single = [outcome.clone()];
            write_summary::<K>(&dir, &single, short, started.elapsed().as_secs_f64())?;
        }
        outcomes.push(outcome);
    }
    let result = SuiteResult {
        table: K::table(&outcomes),
        outcomes,
        out_dir,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    write_summary::<K>(&result.out_dir, &result.outcomes, short, result.wall_s)?;
    Ok(result)
}

/// A run's own dir: the output dir itself when it runs alone.
fn run_dir(out_dir: &Path, name: &str, count: usize) -> PathBuf {
    if count == 1 {
        out_dir.to_path_buf()
    } else {
        out_dir.join(name)
    }
}

fn default_out_dir(prefix: &str, runs: &[impl Display]) -> PathBuf {
    let name = match runs {
        [one] => one.to_string(),
        _ => "all".into(),
    };
    // 2026-11-27T05:46:39Z → 20261127T054639Z
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("{prefix}-{name}-{stamp}"))
}

/// `summary.md` and `summary.json` of `outcomes` in `dir`.
fn write_summary<K: RunKind>(
    dir: &Path,
    outcomes: &[Outcome<K::Report>],
    short: bool,
    wall_s: f64,
) -> Result<()> {
    let broken: Vec<String> = outcomes.iter().flat_map(Outcome::broken_musts).collect();
    let verdict = if broken.is_empty() {
        "Every MUST held.".to_string()
    } else {
        format!("MUSTs broken:\n\n- {}", broken.join("\n- "))
    };
    let markdown = format!(
        "# {}{}\n\n{}\n{verdict}\n\nWall time {wall_s:.1} s.\n{}",
        K::TITLE,
        if short { " (short)" } else { "" },
        K::table(outcomes),
        K::details(outcomes)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tickets::TicketRun;

    fn names_round_trip<K: RunKind + PartialEq + std::fmt::Debug>() {
        for &run in K::ALL {
            assert_eq!(K::named(run.name()).ok(), Some(run));
            assert_eq!(run.to_string(), run.name());
        }
        assert_eq!(K::select("all").ok().map(|r| r.len()), Some(K::ALL.len()));
        assert!(K::select("kill").is_err());
    }

    #[test]
    fn every_run_is_found_by_its_name() {
        names_round_trip::<Scenario>();
        names_round_trip::<TicketRun>();
    }
}
