//! Drawing a [`TopologySnapshot`]: Graphviz DOT and Mermaid text.
//!
//! A stage is a node (its name, kind and dispatcher; its counters if asked for), a
//! subscription an arrow from producer to consumer labelled with its options. Ended
//! subscriptions and exited stages are dashed.

use std::fmt::Write;

use super::reason::Kind;
use super::snapshot::{StageSnapshot, SubscriptionSnapshot, TopologySnapshot};
use super::CancelMode;

/// What a diagram shows beyond the wiring.
///
/// ```
/// use stageflow::observe::DiagramOptions;
/// let plain = DiagramOptions::new();
/// let annotated = DiagramOptions::new().metrics(true);
/// # let _ = (plain, annotated);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DiagramOptions {
    metrics: bool,
    since: Option<TopologySnapshot>,
}

impl DiagramOptions {
    /// The wiring only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Label every stage with its counters: events in and out, buffered, discarded,
    /// and what it published itself.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Label every stage with its rates of events in and out since `earlier`, a
    /// snapshot of the same pipeline (implies [`metrics`](Self::metrics)).
    pub fn rates_since(mut self, earlier: &TopologySnapshot) -> Self {
        self.metrics = true;
        self.since = Some(earlier.clone());
        self
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Producer => "producer",
        Kind::ProducerConsumer => "producer-consumer",
        Kind::Consumer => "consumer",
    }
}

/// The lines of a stage's label.
fn stage_lines(
    stage: &StageSnapshot,
    options: &DiagramOptions,
    snapshot: &TopologySnapshot,
) -> Vec<String> {
    let mut lines = vec![stage.name.clone()];
    let mut what = kind_name(stage.kind).to_string();
    if let Some(d) = &stage.dispatcher {
        let _ = write!(what, ", {d}");
    }
    lines.push(what);
    if let Some(exit) = &stage.exit {
        lines.push(format!("exited: {exit}"));
    }
    if !options.metrics {
        return lines;
    }
    let m = &stage.metrics;
    let mut counts = Vec::new();
    if stage.kind != Kind::Producer {
        counts.push(format!("in {}", m.events_in));
    }
    if stage.kind != Kind::Consumer {
        counts.push(format!("out {}", m.events_out));
        counts.push(format!("buffered {}", m.buffered));
    }
    lines.push(counts.join(", "));
    if m.discarded > 0 {
        lines.push(format!("discarded {}", m.discarded));
    }
    if let Some(earlier) = options.since.as_ref() {
        let secs = snapshot.at.saturating_sub(earlier.at).as_secs_f64();
        if let (Some(before), true) = (earlier.stages.iter().find(|s| s.id == stage.id), secs > 0.0)
        {
            let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
            let mut rates = Vec::new();
            if stage.kind != Kind::Producer {
                rates.push(format!(
                    "in {:.0}/s",
                    rate(m.events_in, before.metrics.events_in)
                ));
            }
            if stage.kind != Kind::Consumer {
                rates.push(format!(
                    "out {:.0}/s",
                    rate(m.events_out, before.metrics.events_out)
                ));
            }
            lines.push(rates.join(", "));
        }
    }
    for p in &stage.published {
        lines.push(format!("{} {}", p.name, p.value.as_f64()));
    }
    lines
}

/// The label of a subscription: its demand, and its cancel mode and partition when
/// they are not the defaults.
fn subscription_label(s: &SubscriptionSnapshot) -> String {
    let mut label = format!("max {} / min {}", s.max_demand, s.min_demand);
    match s.cancel {
        CancelMode::Permanent => {}
        CancelMode::Transient => label.push_str(", transient"),
        CancelMode::Temporary => label.push_str(", temporary"),
    }
    if let Some(p) = &s.partition {
        let _ = write!(label, ", partition {p}");
    }
    label
}

/// Consumers that are not stages of the snapshot (a [`StageStream`](crate::StageStream),
/// a stage of another pipeline): drawn by id.
fn outside_consumers(snapshot: &TopologySnapshot) -> Vec<u64> {
    let mut ids: Vec<u64> = snapshot
        .subscriptions
        .iter()
        .map(|s| s.consumer)
        .filter(|id| !snapshot.stages.iter().any(|st| st.id == *id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_escape(text: &str) -> String {
    text.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

impl TopologySnapshot {
    /// The wiring as a Graphviz DOT graph (`dot -Tsvg` draws it).
    ///
    /// ```
    /// use stageflow::prelude::*;
    ///
    /// let mut topology = Topology::new();
    /// let numbers = topology.from_iter(0..10u64, FromIterOptions::new().name("numbers"))?;
    /// let out = topology.stream(&numbers, SubscribeOptions::new().max_demand(4))?;
    /// let dot = topology.handle().snapshot().to_dot();
    /// assert!(dot.starts_with("digraph stageflow {"));
    /// assert!(dot.contains("label=\"numbers\\nproducer, DemandDispatcher\""), "{dot}");
    /// assert!(dot.contains("label=\"max 4 / min 2\""), "{dot}");
    /// topology.start()?;
    /// assert_eq!(out.count(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_dot(&self) -> String {
        self.to_dot_with(&DiagramOptions::new())
    }

    /// [`to_dot`](Self::to_dot), with what `options` adds (counters, rates).
    pub fn to_dot_with(&self, options: &DiagramOptions) -> String {
        let mut out = String::from("digraph stageflow {\n");
        out.push_str("  rankdir=LR;\n");
        out.push_str(
            "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11];\n",
        );
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        for stage in &self.stages {
            let label = stage_lines(stage, options, self)
                .iter()
                .map(|l| dot_escape(l))
                .collect::<Vec<_>>()
                .join("\\n");
            let fill = match stage.kind {
                Kind::Producer => "#dbeafe",
                Kind::ProducerConsumer => "#fef3c7",
                Kind::Consumer => "#dcfce7",
            };
            let dashed = if stage.alive {
                ""
            } else {
                ", style=\"rounded,dashed\""
            };
            let _ = writeln!(
                out,
                "  s{} [label=\"{label}\", fillcolor=\"{fill}\"{dashed}];",
                stage.id
            );
        }
        for id in outside_consumers(self) {
            let _ = writeln!(
                out,
                "  s{id} [label=\"consumer #{id}\", shape=ellipse, style=filled, fillcolor=\"#f3f4f6\"];"
            );
        }
        for s in &self.subscriptions {
            let dashed = if s.active { "" } else { ", style=dashed" };
            let _ = writeln!(
                out,
                "  s{} -> s{} [label=\"{}\"{dashed}];",
                s.producer,
                s.consumer,
                dot_escape(&subscription_label(s))
            );
        }
        out.push_str("}\n");
        out
    }

    /// The wiring as a Mermaid flowchart (GitHub renders it in Markdown).
    ///
    /// ```
    /// use stageflow::prelude::*;
    ///
    /// let mut topology = Topology::new();
    /// let numbers = topology.from_iter(0..10u64, FromIterOptions::new().name("numbers"))?;
    /// let out = topology.stream(&numbers, SubscribeOptions::new().max_demand(4))?;
    /// let chart = topology.handle().snapshot().to_mermaid();
    /// assert!(chart.starts_with("flowchart LR\n"));
    /// assert!(chart.contains("([\"numbers<br/>producer, DemandDispatcher\"])"), "{chart}");
    /// assert!(chart.contains("-->|\"max 4 / min 2\"|"), "{chart}");
    /// topology.start()?;
    /// assert_eq!(out.count(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_mermaid(&self) -> String {
        self.to_mermaid_with(&DiagramOptions::new())
    }

    /// [`to_mermaid`](Self::to_mermaid), with what `options` adds (counters, rates).
    pub fn to_mermaid_with(&self, options: &DiagramOptions) -> String {
        let mut out = String::from("flowchart LR\n");
        for stage in &self.stages {
            let label = stage_lines(stage, options, self)
                .iter()
                .map(|l| mermaid_escape(l))
                .collect::<Vec<_>>()
                .join("<br/>");
            let (open, close) = match stage.kind {
                Kind::Producer => ("([", "])"),
                Kind::ProducerConsumer => ("[", "]"),
                Kind::Consumer => ("[[", "]]"),
            };
            let _ = writeln!(out, "  s{}{open}\"{label}\"{close}", stage.id);
        }
        for id in outside_consumers(self) {
            let _ = writeln!(out, "  s{id}((\"consumer #{id}\"))");
        }
        for s in &self.subscriptions {
            let arrow = if s.active { "-->" } else { "-.->" };
            let _ = writeln!(
                out,
                "  s{} {arrow}|\"{}\"| s{}",
                s.producer,
                mermaid_escape(&subscription_label(s)),
                s.consumer
            );
        }
        out
    }
}
