//! The results: each figure with its ceiling, their ratio and its target, as a Markdown table
//! and as JSON, compared with the previous run's JSON.

use std::collections::HashMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// What a figure is judged against.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// value / ceiling must be at least this.
    MinRatio { ratio: f64 },
    /// value must be at most this.
    AtMost { value: f64 },
    /// value must be at least this.
    AtLeast { value: f64 },
}

/// One measured figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    pub store: String,
    /// `commands`, `reads`, `search`, `rebuild`, or the collection of a quality figure (`cisi`).
    pub group: String,
    pub name: String,
    pub unit: String,
    /// `None` when not measured (e.g. search not available).
    pub value: Option<f64>,
    pub ceiling: Option<f64>,
    pub ceiling_name: String,
    pub higher_is_better: bool,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub note: String,
}

impl Figure {
    pub fn new(store: &str, group: &str, name: &str, unit: &str, higher_is_better: bool) -> Self {
        Self {
            store: store.into(),
            group: group.into(),
            name: name.into(),
            unit: unit.into(),
            value: None,
            ceiling: None,
            ceiling_name: String::new(),
            higher_is_better,
            targets: Vec::new(),
            note: String::new(),
        }
    }

    pub fn value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }

    pub fn ceiling(mut self, name: &str, value: f64) -> Self {
        self.ceiling_name = name.into();
        self.ceiling = Some(value);
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// value / ceiling (for latencies, ceiling / value: how close to the floor).
    pub fn ratio(&self) -> Option<f64> {
        let (value, ceiling) = (self.value?, self.ceiling?);
        if self.higher_is_better {
            (ceiling > 0.0).then(|| value / ceiling)
        } else {
            (value > 0.0).then(|| ceiling / value)
        }
    }

    /// Whether every target is met (`None` without targets or value).
    pub fn met(&self) -> Option<bool> {
        if self.targets.is_empty() {
            return None;
        }
        let value = self.value?;
        Some(self.targets.iter().all(|t| match t {
            Target::MinRatio { ratio } => self.ratio().is_some_and(|r| r >= *ratio),
            Target::AtMost { value: max } => value <= *max,
            Target::AtLeast { value: min } => value >= *min,
        }))
    }

    fn key(&self) -> String {
        format!("{}/{}", self.store, self.name)
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub generated_at: String,
    pub revision: String,
    pub command: String,
    pub machine: String,
    pub settings: String,
    pub figures: Vec<Figure>,
}

/// A figure worse than half its previous value (throughput halved, latency doubled).
pub fn regressions(current: &Results, previous: &Results) -> Vec<String> {
    let before: HashMap<String, &Figure> = previous.figures.iter().map(|f| (f.key(), f)).collect();
    current
        .figures
        .iter()
        .filter_map(|f| {
            let old = before.get(&f.key())?.value?;
            let new = f.value?;
            let worse = if f.higher_is_better {
                new < old / 2.0
            } else {
                new > old * 2.0
            };
            worse.then(|| {
                format!(
                    "{}: {} {} (previous {} {})",
                    f.key(),
                    shown(new, &f.unit),
                    f.unit,
                    shown(old, &f.unit),
                    f.unit
                )
            })
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A value in its unit; scores (no unit, 0..=1) keep three decimals.
fn shown(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        format!("{v:.3}")
    } else {
        fmt(v)
    }
}

fn describe(target: &Target, unit: &str) -> String {
    match target {
        Target::MinRatio { ratio } => format!("≥ {:.0}% of ceiling", ratio * 100.0),
        Target::AtMost { value } => format!("< {} {unit}", fmt(*value)),
        Target::AtLeast { value } => format!("≥ {} {unit}", fmt(*value)),
    }
}

/// The Markdown report.
pub fn markdown(current: &Results, previous: Option<&Results>) -> String {
    let before: HashMap<String, &Figure> = previous
        .map(|p| p.figures.iter().map(|f| (f.key(), f)).collect())
        .unwrap_or_default();
    let flagged = previous
        .map(|p| regressions(current, p))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# ipto benchmark results\n");
    let _ = writeln!(out, "- generated: {}", current.generated_at);
    let _ = writeln!(out, "- revision: {}", current.revision);
    let _ = writeln!(out, "- command: `{}`", current.command);
    let _ = writeln!(out, "- machine: {}", current.machine);
    let _ = writeln!(out, "- settings: {}", current.settings);
    if let Some(p) = previous {
        let _ = writeln!(out, "- previous run: {} ({})", p.generated_at, p.revision);
    }
    let mut stores: Vec<&str> = current.figures.iter().map(|f| f.store.as_str()).collect();
    stores.dedup();
    for store in stores {
        let _ = writeln!(out, "\n## {store}\n");
        let _ = writeln!(
            out,
            "| group | figure | value | ceiling | ratio | target | met | previous |"
        );
        let _ = writeln!(out, "|---|---|---:|---|---:|---|:-:|---:|");
        for f in current.figures.iter().filter(|f| f.store == store) {
            let value = match f.value {
                Some(v) => format!("{} {}", shown(v, &f.unit), f.unit)
                    .trim_end()
                    .to_owned(),
                None => "not available".into(),
            };
            let ceiling = match f.ceiling {
                Some(c) if f.unit.is_empty() => format!("{} ({})", shown(c, ""), f.ceiling_name),
                Some(c) => format!("{} {} ({})", fmt(c), f.unit, f.ceiling_name),
                None => "–".into(),
            };
            let ratio = f
                .ratio()
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "–".into());
            let targets: Vec<String> = f.targets.iter().map(|t| describe(t, &f.unit)).collect();
            let met = match f.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let prev = before
                .get(&f.key())
                .and_then(|p| p.value)
                .map(|v| {
                    let mark = if flagged
                        .iter()
                        .any(|l| l.starts_with(&format!("{}:", f.key())))
                    {
                        " ⚠"
                    } else {
                        ""
                    };
                    format!("{}{mark}", shown(v, &f.unit))
                })
                .unwrap_or_else(|| "–".into());
            let name = if f.note.is_empty() {
                f.name.clone()
            } else {
                format!("{} ({})", f.name, f.note)
            };
            let _ = writeln!(
                out,
                "| {} | {name} | {value} | {ceiling} | {ratio} | {} | {met} | {prev} |",
                f.group,
                if targets.is_empty() {
                    "–".into()
                } else {
                    targets.join(", ")
                },
            );
        }
    }
    let _ = writeln!(out);
    if flagged.is_empty() {
        if previous.is_some() {
            let _ = writeln!(out, "No figure is worse than half its previous value.");
        }
    } else {
        let _ = writeln!(out, "**Worse than half the previous value:**\n");
        for line in &flagged {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}
