//! Observability: the runtime's counters (exact, where demand makes them
//! deterministic), what pipeline parts publish, the topology snapshot and its
//! drawings, and, with the cargo features, the `metrics` facade, `tracing` and serde.

use std::time::Duration;

use stageflow::dispatcher::{BroadcastDispatcher, PartitionDispatcher};
use stageflow::observe::{DiagramOptions, MetricValue, TopologySnapshot};
use stageflow::pipeline::{Batch, Batcher, BatcherOptions, DeadLetters, RetryPolicy, RetrySource};
use stageflow::prelude::*;

const WAIT: Duration = Duration::from_secs(30);

/// Sums what it receives.
struct Sum(u64);
impl Stage for Sum {
    type In = u64;
    type Out = Never;
}
impl Consumer for Sum {
    fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.0 += e.iter().sum::<u64>();
    }
}

/// Passes events on.
struct Pass;
impl Stage for Pass {
    type In = u64;
    type Out = u64;
}
impl ProducerConsumer for Pass {
    fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        ctx.emit_batch(e);
    }
}

#[test]
fn counters_follow_the_demand_rule_exactly() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..1_000u64, FromIterOptions::new().name("numbers"))
        .unwrap();
    let pass = topology
        .producer_consumer(
            Pass,
            ProducerConsumerOptions::new()
                .name("pass")
                .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100)),
        )
        .unwrap();
    topology
        .consumer(
            Sum(0),
            ConsumerOptions::new()
                .name("sum")
                .subscribe_to(&pass, SubscribeOptions::new().max_demand(10).min_demand(0)),
        )
        .unwrap();
    let handle = topology.handle();
    // A consumer counts its subscription when it makes it; its producer when the
    // subscription reaches it.
    let running = handle.snapshot();
    assert_eq!(running.stage("pass").unwrap().metrics.producers, 1);
    crate::support::eventually("the subscription to reach its producer", || {
        handle.snapshot().stage("pass").unwrap().metrics.consumers == 1
    });
    let report = topology.start().unwrap().wait(WAIT);
    assert!(report.is_complete(), "{report}");
    let snapshot = handle.snapshot();
    let numbers = snapshot.stage("numbers").unwrap().metrics;
    let pass = snapshot.stage("pass").unwrap().metrics;
    let sum = snapshot.stage("sum").unwrap().metrics;
    assert_eq!(numbers.events_out, 1_000);
    assert_eq!((pass.events_in, pass.events_out), (1_000, 1_000));
    assert_eq!(sum.events_in, 1_000);
    // max 10 / min 0: batches of 10, each followed by an ask of 10 (a consumer
    // handles its producer's cancel after the events before it).
    assert_eq!(sum.batches, 100);
    assert_eq!(sum.demand_requested, 10 + 100 * 10);
    // What reaches a producer that already stopped is not received.
    assert!(pass.demand_received <= sum.demand_requested);
    assert!(pass.demand_received >= sum.events_in);
    // max 100 / min 50: batches of at most 50, an ask of 50 after each, except
    // after those handled behind the source's end (the end is then known).
    assert!(pass.batches >= 20, "{pass:?}");
    assert!((1_000..=1_100).contains(&pass.demand_requested), "{pass:?}");
    assert!(numbers.demand_received <= pass.demand_requested);
    assert!(numbers.demand_received >= numbers.events_out);
    assert!(numbers.batches >= 1);
    assert!(sum.busy > Duration::ZERO && sum.busy < WAIT);
    // Every stage exited: no subscriptions left, and the drawing dashes them.
    assert_eq!((sum.producers, pass.consumers), (0, 0));
    assert!(snapshot.subscriptions.iter().all(|s| !s.active));
    assert_eq!(snapshot.subscriptions.len(), 2);
}

#[test]
fn snapshot_knows_dispatchers_partitions_and_cancel_modes() {
    let mut topology = Topology::new();
    let numbers = topology
        .producer(
            Counting(0),
            ProducerOptions::new()
                .name("numbers")
                .dispatcher(PartitionDispatcher::new(2).unwrap()),
        )
        .unwrap();
    let mut evens_opts = ProducerConsumerOptions::new()
        .name("fan")
        .dispatcher(BroadcastDispatcher::new());
    evens_opts = evens_opts.subscribe_to(
        &numbers,
        SubscribeOptions::new()
            .partition(0)
            .max_demand(8)
            .cancel(CancelMode::Transient),
    );
    let fan = topology.producer_consumer(Pass, evens_opts).unwrap();
    let odds = topology
        .stream(
            &numbers,
            SubscribeOptions::new()
                .partition(1)
                .max_demand(6)
                .min_demand(1),
        )
        .unwrap();
    let a = topology
        .consumer(
            Sum(0),
            ConsumerOptions::new()
                .name("a")
                .subscribe_to(&fan, SubscribeOptions::new().cancel(CancelMode::Temporary)),
        )
        .unwrap();
    let snapshot = topology.handle().snapshot();
    let names: Vec<&str> = snapshot.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["numbers", "fan", "a"]);
    let dispatchers: Vec<Option<&str>> = snapshot
        .stages
        .iter()
        .map(|s| s.dispatcher.as_deref())
        .collect();
    assert_eq!(
        dispatchers,
        [
            Some("PartitionDispatcher"),
            Some("BroadcastDispatcher"),
            None
        ]
    );
    let to_fan = snapshot.subscriptions_between("numbers", "fan");
    assert_eq!(to_fan.len(), 1);
    assert_eq!(
        (
            to_fan[0].partition.as_deref(),
            to_fan[0].max_demand,
            to_fan[0].min_demand
        ),
        (Some("0"), 8, 4)
    );
    assert_eq!(to_fan[0].cancel, CancelMode::Transient);
    let to_a = snapshot.subscriptions_between("fan", "a");
    assert_eq!(to_a[0].cancel, CancelMode::Temporary);
    // The stream is a consumer outside the pipeline: drawn by its id.
    let outside: Vec<_> = snapshot
        .subscriptions
        .iter()
        .filter(|s| !snapshot.stages.iter().any(|st| st.id == s.consumer))
        .collect();
    assert_eq!(outside.len(), 1);
    assert_eq!(outside[0].partition.as_deref(), Some("1"));
    let dot = snapshot.to_dot();
    let mermaid = snapshot.to_mermaid();
    for (label, text) in [
        ("partition", "max 8 / min 4, transient, partition 0"),
        ("stream", "max 6 / min 1, partition 1"),
        ("temporary", "max 1000 / min 500, temporary"),
    ] {
        assert!(dot.contains(text), "{label}: {dot}");
        assert!(mermaid.contains(text), "{label}: {mermaid}");
    }
    assert!(dot.contains(&format!("label=\"consumer #{}\"", outside[0].consumer)));
    assert_eq!(dot.matches(" -> ").count(), 3, "{dot}");
    assert_eq!(mermaid.matches("-->").count(), 3, "{mermaid}");
    drop(odds);
    a.stop(Reason::Shutdown).unwrap();
    drop(topology);
}

/// Counts up forever.
struct Counting(u64);
impl Stage for Counting {
    type In = Never;
    type Out = u64;
}
impl Producer for Counting {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(self.0..self.0 + demand as u64);
        self.0 += demand as u64;
    }
}

#[test]
fn drawings_carry_counters_and_rates_when_asked() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..100u64, FromIterOptions::new().name("numbers"))
        .unwrap();
    topology
        .consumer(
            Sum(0),
            ConsumerOptions::new()
                .name("sum \"quoted\"")
                .subscribe_to(&numbers, SubscribeOptions::new()),
        )
        .unwrap();
    let handle = topology.handle();
    let before = handle.snapshot();
    assert!(topology.start().unwrap().wait(WAIT).is_complete());
    let after = handle.snapshot();
    assert!(after.at > before.at);
    let plain = after.to_dot();
    assert!(!plain.contains("in 100"), "{plain}");
    // Quotes in names are escaped.
    assert!(plain.contains("sum \\\"quoted\\\""), "{plain}");
    let dot = after.to_dot_with(&DiagramOptions::new().rates_since(&before));
    assert!(dot.contains("in 100"), "{dot}");
    assert!(dot.contains("out 100, buffered 0"), "{dot}");
    assert!(dot.contains("/s"), "{dot}");
    assert!(dot.contains("exited: normal"), "{dot}");
    let mermaid = after.to_mermaid_with(&DiagramOptions::new().metrics(true));
    assert!(
        mermaid.contains("sum #quot;quoted#quot;<br/>consumer"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("-.->"),
        "ended subscriptions are dotted: {mermaid}"
    );
}

/// Collects batch sizes.
struct Sizes(crossbeam_channel::Sender<usize>);
impl Stage for Sizes {
    type In = Batch<u64>;
    type Out = Never;
}
impl Consumer for Sizes {
    fn handle_events(
        &mut self,
        b: Vec<Batch<u64>>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        for batch in b {
            let _ = self.0.send(batch.events.len());
        }
    }
}

fn published(snapshot: &TopologySnapshot, stage: &str, name: &str) -> Option<MetricValue> {
    snapshot
        .stage(stage)?
        .published
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

#[test]
fn pipeline_parts_publish_their_counts() {
    // A batcher: 25 events in batches of 10, no timeout: two full, one at the end.
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..25u64, FromIterOptions::new().name("numbers"))
        .unwrap();
    let batcher = Batcher::new(
        BatcherOptions::new()
            .batch_size(10)
            .batch_timeout(Duration::from_secs(3600)),
    )
    .unwrap();
    let batcher = topology
        .producer_consumer(
            batcher,
            ProducerConsumerOptions::new()
                .name("batch")
                .subscribe_to(&numbers, SubscribeOptions::new()),
        )
        .unwrap();
    let (tx, sizes) = crossbeam_channel::unbounded();
    topology
        .consumer(
            Sizes(tx),
            ConsumerOptions::new()
                .name("sizes")
                .subscribe_to(&batcher, SubscribeOptions::new()),
        )
        .unwrap();
    let handle = topology.handle();
    assert!(topology.start().unwrap().wait(WAIT).is_complete());
    assert_eq!(sizes.try_iter().collect::<Vec<_>>(), [10, 10, 5]);
    let s = handle.snapshot();
    assert_eq!(
        published(&s, "batch", "batches_by_size"),
        Some(MetricValue::Counter(2))
    );
    assert_eq!(
        published(&s, "batch", "batches_by_timeout"),
        Some(MetricValue::Counter(0))
    );
    assert_eq!(
        published(&s, "batch", "batches_flushed"),
        Some(MetricValue::Counter(1))
    );

    // A retry source: event 3 fails every time (2 retries, then a dead letter).
    let policy = RetryPolicy::new(3)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .unwrap();
    let (dead_tx, dead) = crossbeam_channel::unbounded();
    let source = RetrySource::new(0..5u32, policy, DeadLetters::channel(dead_tx))
        .start(ProducerOptions::new().name("retry"))
        .unwrap();
    let outcomes = RetrySource::outcomes(&source);
    for attempt in stream(&source) {
        let attempt = attempt.unwrap();
        if attempt.event == 3 {
            assert!(outcomes.failed(attempt, "no").is_ok());
        } else {
            assert!(outcomes.done(1));
        }
    }
    assert_eq!(dead.try_iter().count(), 1);
    let s = stageflow::pipeline::Pipeline::new()
        .source(&source)
        .handle()
        .snapshot();
    assert_eq!(
        published(&s, "retry", "retries"),
        Some(MetricValue::Counter(2))
    );
    assert_eq!(
        published(&s, "retry", "dead_letters"),
        Some(MetricValue::Counter(1))
    );
}

#[test]
fn a_stage_publishes_counters_and_gauges_by_name() {
    let source = start_producer(Counting(0), ProducerOptions::new().name("broker")).unwrap();
    let acked = source.counter("acked", "Entries acknowledged").unwrap();
    let lag = source.gauge("lag", "Entries not yet read").unwrap();
    acked.add(4);
    lag.set(12);
    // The same name again is the same counter; a gauge of that name is refused.
    source.counter("acked", "").unwrap().add(1);
    let err = source.gauge("acked", "").unwrap_err().to_string();
    assert!(
        err.contains("\"acked\"") && err.contains("counter"),
        "{err}"
    );
    let snapshot = stageflow::pipeline::Pipeline::new()
        .stage(&source)
        .handle()
        .snapshot();
    let broker = snapshot.stage("broker").unwrap();
    assert_eq!(broker.published("acked"), Some(5.0));
    assert_eq!(broker.published("lag"), Some(12.0));
    let dot = snapshot.to_dot_with(&DiagramOptions::new().metrics(true));
    assert!(dot.contains("acked 5\\nlag 12"), "{dot}");
    source.stop(Reason::Normal).unwrap();
}

#[cfg(feature = "serde")]
#[test]
fn snapshots_serialize_and_read_back() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..10u64, FromIterOptions::new().name("numbers"))
        .unwrap();
    topology
        .consumer(
            Sum(0),
            ConsumerOptions::new()
                .name("sum")
                .subscribe_to(&numbers, SubscribeOptions::new().partition(0)),
        )
        .unwrap();
    let handle = topology.handle();
    assert!(topology.start().unwrap().wait(WAIT).is_complete());
    let snapshot = handle.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(json.contains("\"name\":\"sum\""), "{json}");
    assert!(json.contains("\"kind\":\"Consumer\""), "{json}");
    let back: TopologySnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
}

#[cfg(feature = "metrics")]
mod facade {
    //! A recorder of this test's own, installed for the starting thread only
    //! (`metrics::with_local_recorder`): stages register their handles when they
    //! start, so what they record later from their threads reaches it.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Value(AtomicU64);
    impl CounterFn for Value {
        fn increment(&self, n: u64) {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        fn absolute(&self, n: u64) {
            self.0.fetch_max(n, Ordering::Relaxed);
        }
    }
    impl GaugeFn for Value {
        fn increment(&self, v: f64) {
            self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + v);
        }
        fn decrement(&self, v: f64) {
            GaugeFn::increment(self, -v);
        }
        fn set(&self, v: f64) {
            self.0.store(v.to_bits(), Ordering::Relaxed);
        }
    }

    #[derive(Default)]
    struct Record {
        counters: Mutex<BTreeMap<String, Arc<Value>>>,
        gauges: Mutex<BTreeMap<String, Arc<Value>>>,
        help: Mutex<BTreeMap<String, String>>,
    }

    fn key_text(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Record {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, help: SharedString) {
            self.help
                .lock()
                .insert(key.as_str().to_string(), help.to_string());
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, help: SharedString) {
            self.help
                .lock()
                .insert(key.as_str().to_string(), help.to_string());
        }
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let v = self
                .counters
                .lock()
                .entry(key_text(key))
                .or_default()
                .clone();
            Counter::from_arc(v)
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let v = self.gauges.lock().entry(key_text(key)).or_default().clone();
            Gauge::from_arc(v)
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    impl Record {
        fn counter(&self, key: &str) -> u64 {
            let c = self.counters.lock();
            let v = c
                .get(key)
                .unwrap_or_else(|| panic!("no counter {key}: {:?}", c.keys()));
            v.0.load(Ordering::Relaxed)
        }
        fn gauge(&self, key: &str) -> f64 {
            let g = self.gauges.lock();
            let v = g
                .get(key)
                .unwrap_or_else(|| panic!("no gauge {key}: {:?}", g.keys()));
            f64::from_bits(v.0.load(Ordering::Relaxed))
        }
    }

    #[test]
    fn counters_reach_the_metrics_facade_labelled_and_described() {
        let record = Record::default();
        let (handle, report) = metrics::with_local_recorder(&record, || {
            let mut topology = Topology::new();
            let numbers = topology
                .from_iter(0..500u64, FromIterOptions::new().name("facade-numbers"))
                .unwrap();
            let sum = topology
                .consumer(
                    Sum(0),
                    ConsumerOptions::new()
                        .name("facade-sum")
                        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(50)),
                )
                .unwrap();
            sum.counter("checked", "Sums checked").unwrap().add(2);
            sum.gauge("depth", "A level").unwrap().set(-3);
            let handle = topology.handle();
            (handle, topology.start().unwrap().wait(WAIT))
        });
        assert!(report.is_complete(), "{report}");
        let snapshot = handle.snapshot();
        let sum = snapshot.stage("facade-sum").unwrap().metrics;
        let labels = "{stage=facade-sum,kind=consumer}";
        assert_eq!(
            record.counter(&format!("stageflow_events_in_total{labels}")),
            500
        );
        assert_eq!(
            record.counter(&format!("stageflow_batches_total{labels}")),
            sum.batches
        );
        assert_eq!(
            record.counter(&format!("stageflow_demand_requested_total{labels}")),
            sum.demand_requested
        );
        let busy = record.gauge(&format!("stageflow_busy_seconds{labels}"));
        assert!(
            (busy - sum.busy.as_secs_f64()).abs() < 1e-6,
            "{busy} {sum:?}"
        );
        assert_eq!(
            record.counter(&format!("stageflow_checked_total{labels}")),
            2
        );
        assert_eq!(record.gauge(&format!("stageflow_depth{labels}")), -3.0);
        assert_eq!(record.gauge(&format!("stageflow_producers{labels}")), 0.0);
        assert_eq!(
            record.counter("stageflow_events_out_total{stage=facade-numbers,kind=producer}"),
            500
        );
        let help = record.help.lock();
        for name in [
            "stageflow_events_in_total",
            "stageflow_events_out_total",
            "stageflow_events_discarded_total",
            "stageflow_demand_received_total",
            "stageflow_demand_requested_total",
            "stageflow_batches_total",
            "stageflow_busy_seconds",
            "stageflow_stalls_total",
            "stageflow_buffered",
            "stageflow_consumers",
            "stageflow_producers",
            "stageflow_checked_total",
        ] {
            assert!(
                help.get(name).is_some_and(|h| !h.is_empty()),
                "{name} has no help"
            );
        }
    }
}

#[cfg(feature = "tracing")]
mod spans {
    //! A subscriber of this test's own, installed as the global default (stages run on
    //! their own threads); it keeps only what threads named `traced-*` record, so the
    //! other tests of this binary do not fill it.

    use std::fmt::{self, Write as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use parking_lot::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;

    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    #[derive(Default)]
    struct Recorder {
        next: AtomicU64,
        lines: Mutex<Vec<String>>,
    }

    fn traced() -> bool {
        std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("traced-"))
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            if traced() {
                let mut f = Fields(String::new());
                span.record(&mut f);
                self.lines
                    .lock()
                    .push(format!("span {}{}", span.metadata().name(), f.0));
            }
            Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if traced() {
                let mut f = Fields(String::new());
                event.record(&mut f);
                self.lines
                    .lock()
                    .push(format!("event {}{}", event.metadata().level(), f.0));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn recorder() -> &'static Recorder {
        static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();
        RECORDER.get_or_init(|| {
            let r: &'static Recorder = Box::leak(Box::default());
            struct Forward(&'static Recorder);
            impl Subscriber for Forward {
                fn enabled(&self, m: &Metadata<'_>) -> bool {
                    self.0.enabled(m)
                }
                fn new_span(&self, s: &Attributes<'_>) -> Id {
                    self.0.new_span(s)
                }
                fn record(&self, i: &Id, r: &Record<'_>) {
                    self.0.record(i, r)
                }
                fn record_follows_from(&self, a: &Id, b: &Id) {
                    self.0.record_follows_from(a, b)
                }
                fn event(&self, e: &Event<'_>) {
                    self.0.event(e)
                }
                fn enter(&self, i: &Id) {
                    self.0.enter(i)
                }
                fn exit(&self, i: &Id) {
                    self.0.exit(i)
                }
            }
            tracing::subscriber::set_global_default(Forward(r))
                .expect("no other test of this binary installs a global subscriber");
            r
        })
    }

    #[test]
    fn stages_trace_their_thread_batches_and_lifecycle() {
        let recorder = recorder();
        let numbers = from_iter(0..10u64, FromIterOptions::new().name("traced-numbers")).unwrap();
        let sum = start_consumer(
            Sum(0),
            ConsumerOptions::new()
                .name("traced-sum")
                .subscribe_to(&numbers, SubscribeOptions::new().max_demand(4)),
        )
        .unwrap();
        assert_eq!(sum.join(), Reason::Normal);
        numbers.join();
        let lines = recorder.lines.lock().clone();
        let has = |text: &str| lines.iter().any(|l| l.contains(text));
        let sum_id = sum.id();
        assert!(
            has(&format!(
                "span stage name=traced-sum kind=consumer id={sum_id}"
            )),
            "{lines:#?}"
        );
        assert!(
            has("span stage name=traced-numbers kind=producer"),
            "{lines:#?}"
        );
        // max 4 / min 2: batches of two events.
        let batches = lines
            .iter()
            .filter(|l| l.starts_with("span batch callback=handle_events events=2"))
            .count();
        assert_eq!(batches, 5, "{lines:#?}");
        assert!(
            has("span batch callback=handle_demand events=4"),
            "{lines:#?}"
        );
        let line_with = |parts: &[&str]| lines.iter().any(|l| parts.iter().all(|p| l.contains(p)));
        assert!(
            line_with(&["event DEBUG", "subscribed", "side=producer", "max_demand=4"]),
            "{lines:#?}"
        );
        assert!(
            line_with(&["event DEBUG", "subscribed", "side=consumer"]),
            "{lines:#?}"
        );
        assert!(
            line_with(&["subscription cancelled", "side=producer", "reason=normal"]),
            "{lines:#?}"
        );
        assert!(
            line_with(&["event INFO", "stage exited", "reason=normal"]),
            "{lines:#?}"
        );
    }
}
