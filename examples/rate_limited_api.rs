//! Consume an HTTP API politely: a fixed request rate, retries with backoff, dead
//! letters for what still fails, and backpressure from slow processing.
//!
//! ```text
//! cargo run --release --example rate_limited_api
//! cargo run --release --example rate_limited_api -- --items 500 --rate 50 --process-ms 30
//! ```
//!
//! The program starts a small HTTP server on 127.0.0.1 (tiny_http, on a real socket)
//! that serves `/items/{id}`. It misbehaves on purpose: some answers are 500s (retried),
//! some are slow, a few items always fail (dead-lettered after the last attempt) and a
//! few do not exist (404: not retryable, dead-lettered at once). It counts the
//! requests it sees per calendar second and, what the limit promises, in the busiest
//! 1-second window wherever it starts.
//!
//! Stages: `items` (a `RetrySource` of item ids: first attempts and retries) →
//! `limit` (a `RateLimiter`: at most `--rate` requests in any 1-second window, plus
//! `--burst` after idling; without a burst evenly spaced) → `fetch-1..n` (ureq, one
//! request at a time each) → `process` (slow work per item). Retries go back through
//! the limiter, so they count against the rate too. Ctrl-C drains.
//!
//! With `--stats-json` the last line of output is `STATS {json}`: the request times
//! the server saw and the ids processed and dead-lettered, for the integration test.

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use serde::Deserialize;
use stageflow::pipeline::{
    Attempt, DeadLetter, DeadLetters, Outcomes, Progress, RateLimit, RateLimiter, RetryPolicy,
    RetrySource,
};
use stageflow::prelude::*;

const USAGE: &str = "usage: rate_limited_api [--items N] [--rate N] [--burst N] [--fetchers N]
           [--attempts N] [--fail-percent P] [--slow-percent P] [--slow-ms N]
           [--process-ms N] [--drain-deadline-s N] [--no-progress] [--stats-json]
Defaults: --items 300 --rate 50 --burst 0 --fetchers 4 --attempts 4 --fail-percent 15
          --slow-percent 5 --slow-ms 300 --process-ms 5 --drain-deadline-s 30
The limiter lets at most rate + burst requests leave in any 1-second window, wherever
it starts; the server may see up to one more per fetcher, as requests take varying
time to reach it.";

#[derive(Debug, Clone)]
struct Args {
    items: u64,
    rate: u64,
    burst: u64,
    fetchers: usize,
    attempts: u32,
    fail_percent: u64,
    slow_percent: u64,
    slow: Duration,
    process: Duration,
    drain_deadline: Duration,
    progress: bool,
    stats_json: bool,
}

fn number(flag: &str, value: std::ffi::OsString, min: i64, max: i64) -> Result<u64, String> {
    let value = value.to_string_lossy();
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n as u64),
        Ok(n) if n < min && min == 1 => Err(format!("{flag} must be greater than 0, got: {n}")),
        Ok(n) if n < min && max == i64::MAX => {
            Err(format!("{flag} must be {min} or more, got: {n}"))
        }
        Ok(n) => Err(format!("{flag} must be between {min} and {max}, got: {n}")),
        Err(_) => Err(format!("{flag} must be a whole number, got: {value:?}")),
    }
}

/// The arguments, or `None` when help was asked for.
fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        items: 300,
        rate: 50,
        burst: 0,
        fetchers: 4,
        attempts: 4,
        fail_percent: 15,
        slow_percent: 5,
        slow: Duration::from_millis(300),
        process: Duration::from_millis(5),
        drain_deadline: Duration::from_secs(30),
        progress: true,
        stats_json: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let big = i64::MAX;
        let value =
            |p: &mut lexopt::Parser, flag: &str| p.value().map_err(|e| format!("{flag}: {e}"));
        match arg {
            Long("items") => {
                a.items = number("--items", value(&mut parser, "--items")?, 1, 1_000_000)?
            }
            Long("rate") => a.rate = number("--rate", value(&mut parser, "--rate")?, 1, big)?,
            Long("burst") => a.burst = number("--burst", value(&mut parser, "--burst")?, 0, big)?,
            Long("fetchers") => {
                a.fetchers =
                    number("--fetchers", value(&mut parser, "--fetchers")?, 1, 256)? as usize
            }
            Long("attempts") => {
                a.attempts = number("--attempts", value(&mut parser, "--attempts")?, 1, 100)? as u32
            }
            Long("fail-percent") => {
                a.fail_percent = number(
                    "--fail-percent",
                    value(&mut parser, "--fail-percent")?,
                    0,
                    100,
                )?
            }
            Long("slow-percent") => {
                a.slow_percent = number(
                    "--slow-percent",
                    value(&mut parser, "--slow-percent")?,
                    0,
                    100,
                )?
            }
            Long("slow-ms") => {
                a.slow = Duration::from_millis(number(
                    "--slow-ms",
                    value(&mut parser, "--slow-ms")?,
                    0,
                    60_000,
                )?)
            }
            Long("process-ms") => {
                a.process = Duration::from_millis(number(
                    "--process-ms",
                    value(&mut parser, "--process-ms")?,
                    0,
                    60_000,
                )?)
            }
            Long("drain-deadline-s") => {
                a.drain_deadline = Duration::from_secs(number(
                    "--drain-deadline-s",
                    value(&mut parser, "--drain-deadline-s")?,
                    1,
                    big,
                )?)
            }
            Long("no-progress") => a.progress = false,
            Long("stats-json") => a.stats_json = true,
            Short('h') | Long("help") => return Ok(None),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some(a))
}

// ----- the server -------------------------------------------------------------------

/// A cheap, deterministic hash: the server's misbehaviour is the same every run.
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// What the server saw.
#[derive(Default)]
struct ServerLog {
    /// Arrival time of every request, since the server started (bounded: the
    /// program makes at most items × attempts requests).
    arrivals: Mutex<Vec<Duration>>,
    /// Requests per id so far (the n-th request of an id decides its answer).
    seen: Mutex<std::collections::HashMap<u64, u32>>,
    stopping: AtomicBool,
}

struct Server {
    addr: String,
    started: Instant,
    log: Arc<ServerLog>,
    server: Arc<tiny_http::Server>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn start_server(args: &Args) -> Result<Server, Box<dyn Error + Send + Sync>> {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0")?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("no IP address")?
        .to_string();
    let log = Arc::new(ServerLog::default());
    let started = Instant::now();
    // Enough workers that slow answers do not hold up the others.
    let workers = (0..args.fetchers + 4)
        .map(|_| {
            let (server, log, args) = (server.clone(), log.clone(), args.clone());
            std::thread::spawn(move || loop {
                match server.recv() {
                    Ok(request) => {
                        // Counted on arrival, before any slow answer.
                        log.arrivals.lock().push(started.elapsed());
                        let response = answer(request.url(), &log, &args);
                        let _ = request.respond(response);
                    }
                    // `stop` unblocks each worker once; an accept error is not fatal.
                    Err(_) if log.stopping.load(Ordering::SeqCst) => return,
                    Err(_) => continue,
                }
            })
        })
        .collect();
    Ok(Server {
        addr,
        started,
        log,
        server,
        workers,
    })
}

fn answer(
    url: &str,
    log: &ServerLog,
    args: &Args,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let respond =
        |code: u16, body: String| tiny_http::Response::from_string(body).with_status_code(code);
    let Some(id) = url
        .strip_prefix("/items/")
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return respond(400, "bad request".into());
    };
    let n = {
        let mut seen = log.seen.lock();
        let n = seen.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let h = mix(id.wrapping_mul(1000).wrapping_add(n as u64));
    if id % 101 == 100 {
        return respond(404, format!("item {id} does not exist"));
    }
    if id % 67 == 66 {
        return respond(500, format!("item {id} is broken"));
    }
    if h % 100 < args.fail_percent {
        return respond(500, "internal error, try again".into());
    }
    if mix(h) % 100 < args.slow_percent {
        std::thread::sleep(args.slow);
    }
    respond(
        200,
        format!("{{\"id\": {id}, \"value\": {}}}", mix(id) % 1000),
    )
}

impl Server {
    fn stop(self) -> Arc<ServerLog> {
        self.log.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
        self.log
    }
}

// ----- the stages -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Item {
    id: u64,
    value: u64,
}

/// Why a fetch failed: an HTTP status, or no answer at all.
#[derive(Debug, Clone)]
struct FetchError {
    status: Option<u16>,
    message: String,
}

impl FetchError {
    fn retryable(&self) -> bool {
        // Server errors and transport failures may pass on retry; 4xx will not.
        self.status.map_or(true, |s| s >= 500)
    }
}

/// Fetches one item at a time (it subscribes with max_demand 1, so it never holds a
/// backlog that it could later send as a burst).
struct Fetch {
    agent: ureq::Agent,
    base: String,
    outcomes: Outcomes<u64, FetchError>,
}

impl Fetch {
    fn get(&self, id: u64) -> Result<Item, FetchError> {
        let url = format!("{}/items/{id}", self.base);
        let mut response = self.agent.get(&url).call().map_err(|e| FetchError {
            status: None,
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| FetchError {
                status: Some(status),
                message: e.to_string(),
            })?;
        if status != 200 {
            return Err(FetchError {
                status: Some(status),
                message: body,
            });
        }
        serde_json::from_str(&body).map_err(|e| FetchError {
            status: Some(status),
            message: format!("bad body: {e}"),
        })
    }
}

impl Stage for Fetch {
    type In = Attempt<u64>;
    type Out = Item;
}

impl ProducerConsumer for Fetch {
    fn handle_events(
        &mut self,
        attempts: Vec<Attempt<u64>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        let mut done = 0;
        for attempt in attempts {
            match self.get(attempt.event) {
                Ok(item) => {
                    ctx.emit(item);
                    done += 1;
                }
                Err(e) => {
                    if let Err((a, e)) = self.outcomes.failed(attempt, e) {
                        ctx.stop(Reason::custom(format!(
                            "item {} failed ({}) and the retry source is gone",
                            a.event, e.message
                        )));
                        return;
                    }
                }
            }
        }
        self.outcomes.done(done);
    }
}

/// The slow part: does some work per item. Several fetchers feed it; it stops when
/// the last of them has ended (its subscriptions are transient for that reason).
struct Process {
    delay: Duration,
    processed: Arc<Mutex<Vec<u64>>>,
    checksum: u64,
    producers: usize,
}

#[derive(Debug)]
struct AllFetchersDone;

impl Stage for Process {
    type In = Item;
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

    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        self.producers = self.producers.saturating_sub(1);
        if self.producers == 0 && reason.reason().is_normal() {
            let _ = ctx.myself().async_info(AllFetchersDone);
        }
    }
}

impl HandleInfo<AllFetchersDone> for Process {
    fn handle_info(&mut self, _: AllFetchersDone, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

impl Consumer for Process {
    fn handle_events(&mut self, items: Vec<Item>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        for item in &items {
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            self.checksum = self.checksum.wrapping_add(item.value);
        }
        self.processed.lock().extend(items.iter().map(|i| i.id));
    }
}

// ----- the program ------------------------------------------------------------------

fn run(args: Args) -> Result<bool, Box<dyn Error + Send + Sync>> {
    let server = start_server(&args)?;
    let base = format!("http://{}", server.addr);
    eprintln!("server listening on {base}");

    let policy = RetryPolicy::new(args.attempts)?
        .backoff(Duration::from_millis(100), Duration::from_secs(2))?
        .jitter(0.3)?
        .retry_if(FetchError::retryable);
    let (dead_tx, dead_rx) = crossbeam_channel::unbounded::<DeadLetter<u64, FetchError>>();
    let source = RetrySource::new(0..args.items, policy, DeadLetters::channel(dead_tx));
    let stats = source.stats();
    // Every stage is started and subscribed before demand reaches `items`.
    let mut topology = Topology::new();
    let items = topology.source(source, ProducerOptions::new().name("items"))?;
    let rate = RateLimit::new(args.rate as usize, Duration::from_secs(1))?
        .with_burst(usize::try_from(args.burst).unwrap_or(usize::MAX));
    let limit = topology.producer_consumer(
        RateLimiter::new(rate),
        ProducerConsumerOptions::new()
            .name("limit")
            .subscribe_to(&items, SubscribeOptions::new()),
    )?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut fetchers = Vec::new();
    for i in 1..=args.fetchers {
        fetchers.push(
            topology.producer_consumer(
                Fetch {
                    agent: agent.clone(),
                    base: base.clone(),
                    outcomes: RetrySource::outcomes(&items),
                },
                ProducerConsumerOptions::new()
                    .name(format!("fetch-{i}"))
                    .subscribe_to(&limit, SubscribeOptions::new().max_demand(1).min_demand(0)),
            )?,
        );
    }
    let processed = Arc::new(Mutex::new(Vec::new()));
    let mut process_opts = ConsumerOptions::new().name("process");
    for f in &fetchers {
        process_opts = process_opts.subscribe_to(
            f,
            SubscribeOptions::new()
                .max_demand(10)
                .cancel(CancelMode::Transient),
        );
    }
    topology.consumer(
        Process {
            delay: args.process,
            processed: processed.clone(),
            checksum: 0,
            producers: 0,
        },
        process_opts,
    )?;
    let pipeline = topology.start()?;
    let handle = pipeline.handle();

    let drain = handle.clone();
    let pressed = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if pressed.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: draining (no new items; items taken are finished)...");
        drain.drain();
    })?;

    let done = Arc::new(AtomicBool::new(false));
    let drawer = args.progress.then(|| {
        let bar =
            ProgressBar::with_draw_target(Some(args.items), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} items {msg}")
                .expect("valid template"),
        );
        let (handle, done, log) = (handle.clone(), done.clone(), server.log.clone());
        let stats = stats.clone();
        std::thread::spawn(move || {
            let mut progress = Progress::new(None).measure_out(1);
            while !done.load(Ordering::Relaxed) {
                let report = progress.update(&handle.status());
                let c = stats.snapshot();
                bar.set_position(c.done + c.dead_lettered);
                bar.set_message(format!(
                    "| {:.0} req/s | {} requests, {} retries, {} dead",
                    report.rate,
                    log.arrivals.lock().len(),
                    c.retries,
                    c.dead_lettered
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        })
    });

    let report = pipeline.wait(args.drain_deadline);
    done.store(true, Ordering::Relaxed);
    if let Some(d) = drawer {
        let _ = d.join();
    }
    let serving = server.started.elapsed();
    let log = server.stop();
    let arrivals = log.arrivals.lock().clone();
    let dead: Vec<DeadLetter<u64, FetchError>> = dead_rx.try_iter().collect();
    let processed = processed.lock().clone();
    let counts = stats.snapshot();

    println!("{report}");
    // Requests per second as the server counted them.
    let secs = serving.as_secs() as usize + 1;
    let mut per_second = vec![0u64; secs];
    for a in &arrivals {
        per_second[a.as_secs() as usize] += 1;
    }
    let first = arrivals.first().copied().unwrap_or_default();
    let last = arrivals.last().copied().unwrap_or_default();
    let span = (last - first).as_secs_f64();
    let busiest = sliding_max(&arrivals, Duration::from_secs(1));
    println!("server: requests per second: {per_second:?}");
    println!(
        "server: {} requests in {span:.1} s: achieved {:.1} req/s (limit {} req/s, burst {})",
        arrivals.len(),
        if span > 0.0 {
            arrivals.len() as f64 / span
        } else {
            0.0
        },
        args.rate,
        args.burst
    );
    println!(
        "server: busiest 1 s window {} requests (sliding, any start), busiest calendar second {}",
        busiest,
        per_second.iter().max().unwrap_or(&0)
    );
    println!(
        "items {}: processed {}, dead-lettered {} | first attempts {}, retries {}",
        args.items,
        processed.len(),
        dead.len(),
        counts.first_attempts,
        counts.retries
    );
    for d in dead.iter().take(5) {
        println!(
            "  dead letter: item {} after {} attempt(s), {} ({}): {}",
            d.event,
            d.attempts,
            d.error
                .status
                .map_or("no answer".to_string(), |s| format!("HTTP {s}")),
            d.reason,
            d.error.message
        );
    }
    if dead.len() > 5 {
        println!("  ... and {} more", dead.len() - 5);
    }
    let accounted = processed.len() as u64 + dead.len() as u64;
    let complete = report.is_complete();
    let balanced = if report.drained {
        accounted == counts.first_attempts
    } else {
        accounted == args.items
    };
    println!(
        "check: processed + dead-lettered = {} of {} taken: {}",
        accounted,
        counts.first_attempts,
        if balanced { "ok" } else { "MISMATCH" }
    );
    let stats_json = serde_json::json!({
        "rate": args.rate,
        "items": args.items,
        "burst": args.burst,
        "sliding_max": busiest,
        "arrivals_us": arrivals.iter().map(|a| a.as_micros() as u64).collect::<Vec<_>>(),
        "processed": processed,
        "dead": dead.iter().map(|d| d.event).collect::<Vec<_>>(),
        "retries": counts.retries,
        "complete": complete,
    });
    if args.stats_json {
        println!("STATS {stats_json}");
    }
    Ok(balanced && (complete || report.drained))
}

/// The most arrivals within any window `[t, t + window)`, whatever `t`: the count a
/// limit of "N per window" has to keep, unlike counts per calendar second, which
/// miss a burst that straddles two seconds. `arrivals` need not be sorted.
fn sliding_max(arrivals: &[Duration], window: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    // The busiest window can always be moved to start at an arrival.
    let mut most = 0;
    let mut end = 0;
    for (start, &t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < t + window {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

fn main() -> ExitCode {
    // Stages log through the `log` facade: show their warnings and errors on stderr
    // unless RUST_LOG says otherwise (env_logger alone would show only errors).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rate_limited_api: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rate_limited_api: {e}");
            ExitCode::from(2)
        }
    }
}
