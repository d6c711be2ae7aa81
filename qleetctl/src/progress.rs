//! How a wait shows its progress on stderr: on a terminal, a bar of ready placements over
//! all of them with what they wait on; otherwise a line whenever the progress changes (what
//! scripts, CI logs and the e2e trial read).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use qleetos_crds::rollout::RolloutReport;

use crate::output::held_by;

const BAR_TEMPLATE: &str = "{spinner} {prefix} [{bar:30}] {pos}/{len} placements ready {wide_msg}";
const TICK: Duration = Duration::from_millis(120);

/// Where the progress of one wait goes.
#[derive(Debug)]
pub enum Progress {
    /// `{what}: {line}` on stderr, each time the line changes.
    Lines { what: String, shown: String },
    /// A bar redrawn in place.
    Bar(ProgressBar),
}

impl Progress {
    /// A bar when stderr is a terminal, else lines.
    pub fn on_stderr(what: &str) -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Bar(bar(what))
        } else {
            Progress::Lines {
                what: what.to_owned(),
                shown: String::new(),
            }
        }
    }

    /// Shows `report` if it says something new.
    pub fn show(&mut self, report: &RolloutReport) {
        match self {
            Progress::Lines { what, shown } => {
                let line = line(report);
                if line != *shown {
                    eprintln!("{what}: {line}");
                    *shown = line;
                }
            }
            Progress::Bar(bar) => {
                let (ready, total) = counts(report);
                bar.set_position(ready);
                // No placements yet is nothing done, not all of nothing done.
                match total {
                    0 => bar.unset_length(),
                    total => bar.set_length(total),
                }
                bar.set_message(waits_on(report).unwrap_or_default());
            }
        }
    }

    /// The wait is over: the bar goes (what follows says how it ended); the lines are all
    /// printed already.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn bar(what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(0)
        .with_style(style)
        .with_prefix(what.to_owned());
    bar.enable_steady_tick(TICK);
    bar
}

/// `1/2 placements ready; eu-west: Progressing: 1/2 Deployments ready`.
pub fn line(report: &RolloutReport) -> String {
    let (ready, total) = counts(report);
    let mut text = format!("{ready}/{total} placements ready");
    if let Some(waiting) = waits_on(report) {
        text.push_str(&format!("; {waiting}"));
    }
    text
}

/// (ready placements, all placements).
fn counts(report: &RolloutReport) -> (u64, u64) {
    let ready = report.placements.iter().filter(|p| p.ready).count();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    (count(ready), count(report.placements.len()))
}

/// What the placements that are not Ready wait on, or the Workload's own reason when none
/// says; nothing once rolled out.
fn waits_on(report: &RolloutReport) -> Option<String> {
    if report.rolled_out {
        return None;
    }
    let waiting: Vec<String> = report
        .placements
        .iter()
        .filter(|p| !p.ready)
        .map(|p| {
            format!(
                "{}: {}{}: {}",
                p.runtime,
                failed(&p.reason),
                p.reason,
                p.message
            )
        })
        .collect();
    Some(if waiting.is_empty() {
        let reason = &report.reason;
        format!("{}{reason}: {}", failed(reason), report.message)
    } else {
        waiting.join("; ")
    })
}

/// `failed: ` before a reason whose class is Failed; nothing before a wait (the line reads
/// as waiting already).
fn failed(reason: &str) -> &'static str {
    if held_by(reason) == "failed" {
        "failed: "
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use qleetos_crds::PlacementStatus;

    use super::*;

    fn placement(runtime: &str, ready: bool) -> PlacementStatus {
        PlacementStatus {
            runtime: runtime.into(),
            ready,
            reason: if ready { "RolledOut" } else { "Progressing" }.into(),
            message: if ready { "" } else { "0/1 Deployments ready" }.into(),
            ..PlacementStatus::default()
        }
    }

    #[test]
    fn a_line_names_what_each_waiting_placement_waits_on() {
        let report = RolloutReport {
            placements: vec![placement("eu-west", true), placement("us-east", false)],
            ..RolloutReport::default()
        };
        assert_eq!(counts(&report), (1, 2));
        assert_eq!(
            line(&report),
            "1/2 placements ready; us-east: Progressing: 0/1 Deployments ready"
        );
    }

    #[test]
    fn without_placements_the_workload_reason_is_shown() {
        let report = RolloutReport {
            reason: "NoMatchingRuntime".into(),
            message: "no runtime in region nowhere-1".into(),
            ..RolloutReport::default()
        };
        assert_eq!(
            line(&report),
            "0/0 placements ready; failed: NoMatchingRuntime: no runtime in region nowhere-1"
        );
    }

    #[test]
    fn a_failed_placement_says_it_failed_and_a_waiting_one_does_not() {
        let failing = PlacementStatus {
            reason: "RolloutFailed".into(),
            message: "web: ImagePullBackOff".into(),
            ..placement("us-east", false)
        };
        let report = RolloutReport {
            placements: vec![placement("eu-west", false), failing],
            ..RolloutReport::default()
        };
        assert_eq!(
            line(&report),
            "0/2 placements ready; eu-west: Progressing: 0/1 Deployments ready; us-east: failed: RolloutFailed: web: ImagePullBackOff"
        );
    }

    #[test]
    fn a_rolled_out_report_waits_on_nothing() {
        let report = RolloutReport {
            rolled_out: true,
            placements: vec![placement("eu-west", true)],
            ..RolloutReport::default()
        };
        assert_eq!(waits_on(&report), None);
        assert_eq!(line(&report), "1/1 placements ready");
    }
}
