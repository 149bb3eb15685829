//! A producer → producer-consumer → consumer pipeline on built-in data.
//!
//! The producer emits the numbers 1..=N on demand; two producer-consumers (sharing the
//! producer's events through its demand dispatcher) keep the numbers that are not
//! multiples of 3 and square them; a consumer sums the squares. Every stage runs on
//! its own thread and the pipeline shuts itself down, in order, when the numbers run
//! out. It prints what each stage did and checks the total against a plain loop.
//!
//! The stages are wired through a `Topology`, which holds the source's demand until
//! every subscription is made: any N works, 0 included.
//!
//! ```text
//! cargo run --release --example pipeline            # N = 10 000 000
//! cargo run --release --example pipeline -- 1000    # N = 1000
//! ```

use std::time::Instant;

use crossbeam_channel::{bounded, Sender};
use stageflow::prelude::*;

/// Emits `next..=last` on demand and stops normally after its last event.
struct Numbers {
    next: u64,
    last: u64,
}

struct Exhausted;

impl Stage for Numbers {
    type In = Never;
    type Out = u64;
}

impl Producer for Numbers {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        let end = (self.next + demand as u64).min(self.last + 1);
        ctx.emit_batch((self.next..end).collect());
        self.next = end;
        if self.next > self.last {
            // Stop only once everything emitted so far has been dispatched.
            let _ = ctx.myself().async_info(Exhausted);
        }
    }
}

impl HandleInfo<Exhausted> for Numbers {
    fn handle_info(&mut self, _: Exhausted, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Drops multiples of 3 and squares the rest.
struct SquareNonTriples;

impl Stage for SquareNonTriples {
    type In = u64;
    type Out = u64;
}

impl ProducerConsumer for SquareNonTriples {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_all(events.into_iter().filter(|x| x % 3 != 0).map(|x| x * x));
    }
}

/// Sums what it receives; reports (count, sum) when it terminates. It counts its
/// producers and stops when the last one is gone (the GenStage idiom for fan-in:
/// with permanent subscriptions the first producer to finish would stop it early).
struct Total {
    producers: usize,
    count: u64,
    sum: u128,
    report: Sender<(u64, u128)>,
}

impl Stage for Total {
    type In = u64;
    type Out = Never;

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _: &SubscriptionInfo,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Producer {
            self.producers += 1;
        }
        Ok(Demand::Automatic)
    }

    fn handle_cancel(&mut self, _: CancelReason, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        self.producers -= 1;
        if self.producers == 0 {
            ctx.stop(Reason::Normal);
        }
    }

    fn terminate(&mut self, _: &Reason) {
        let _ = self.report.send((self.count, self.sum));
    }
}

impl Consumer for Total {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.count += events.len() as u64;
        self.sum += events.iter().map(|&x| x as u128).sum::<u128>();
    }
}

const USAGE: &str = "usage: pipeline [N]

Runs 1..=N (default 10000000) through two squaring stages into a summing consumer
and checks the sum.";

/// N, or `None` when help was asked for.
fn parse_args() -> Result<Option<u64>, String> {
    use lexopt::prelude::*;
    let mut n = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if n.is_none() => {
                let v = v.to_string_lossy().into_owned();
                n =
                    Some(v.parse::<u64>().map_err(|_| {
                        format!("expected N (a whole number of events), got: {v:?}")
                    })?);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some(n.unwrap_or(10_000_000)))
}

fn main() -> std::process::ExitCode {
    // Stages log through the `log` facade: show their warnings and errors on stderr
    // unless RUST_LOG says otherwise (env_logger alone would show only errors).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let n = match parse_args() {
        Ok(Some(n)) => n,
        Ok(None) => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pipeline: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(n) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();

    // A topology starts every stage and makes every subscription before the numbers
    // flow: a short input cannot run out before the second squarer subscribes, and
    // the first batch is shared between both.
    let mut topology = Topology::new();
    let numbers = topology.producer(
        Numbers { next: 1, last: n },
        ProducerOptions::new().name("numbers"),
    )?;
    let squarers: Vec<_> = (0..2)
        .map(|i| {
            topology.producer_consumer(
                SquareNonTriples,
                ProducerConsumerOptions::new()
                    .name(format!("square-{i}"))
                    .subscribe_to(&numbers, SubscribeOptions::new()),
            )
        })
        .collect::<Result<_, _>>()?;
    let (report_tx, report_rx) = bounded(1);
    let mut total_opts = ConsumerOptions::new().name("total");
    for s in &squarers {
        // Transient: a squarer finishing normally must not stop the total while the
        // other one still runs; `Total` stops itself when its last producer is gone.
        total_opts =
            total_opts.subscribe_to(s, SubscribeOptions::new().cancel(CancelMode::Transient));
    }
    let total = topology.consumer(
        Total {
            producers: 0,
            count: 0,
            sum: 0,
            report: report_tx,
        },
        total_opts,
    )?;
    // Now, and only now, demand reaches `numbers`.
    let _pipeline = topology.start()?;

    // The pipeline shuts itself down in order: numbers runs out and stops normally,
    // each squarer follows (permanent subscription), then the total.
    println!("numbers  exited: {}", numbers.join());
    for s in &squarers {
        println!("{:<8} exited: {}", s.name(), s.join());
    }
    println!("total    exited: {}", total.join());
    let (count, sum) = report_rx.recv()?;
    let elapsed = started.elapsed();

    println!();
    println!("{:<10} {:>12} {:>12}", "stage", "events in", "events out");
    println!(
        "{:<10} {:>12} {:>12}",
        "numbers",
        "-",
        numbers.metrics().events_out
    );
    for s in &squarers {
        let m = s.metrics();
        println!("{:<10} {:>12} {:>12}", s.name(), m.events_in, m.events_out);
    }
    println!(
        "{:<10} {:>12} {:>12}",
        "total",
        total.metrics().events_in,
        "-"
    );
    println!();
    let expected_count = n - n / 3;
    let expected_sum: u128 = (1..=n as u128).filter(|x| x % 3 != 0).map(|x| x * x).sum();
    println!("squares of the {count} numbers in 1..={n} that are not multiples of 3 sum to {sum}");
    println!(
        "{:.3} s, {:.1} M source events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64() / 1e6
    );
    if (count, sum) != (expected_count, expected_sum) {
        return Err(format!(
            "wrong result: got ({count}, {sum}), a plain loop gives ({expected_count}, {expected_sum})"
        )
        .into());
    }
    println!("checked against a plain loop: ok");
    Ok(())
}
