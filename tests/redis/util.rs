//! What the Redis tests share: the server (required: these tests are compiled only
//! with `--features redis`, and then fail loudly when Redis is not there), keys of
//! their own that are deleted at the end, an acking sink, and waiting on observable
//! state with a generous deadline.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use redis::{Connection, Value};
use stageflow::pipeline::{Acks, Message};
use stageflow::prelude::*;
use stageflow::redis::{RedisStreamOptions, RedisStreamSource, StreamEntry, StreamId};

/// How long a test waits for anything that must happen: only a failing test waits
/// this long.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn url() -> String {
    std::env::var("STAGEFLOW_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn connect() -> Connection {
    let url = url();
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!("Redis not reachable at {url}: start it or run without --features redis ({e})")
    };
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| fail(&e));
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| fail(&e));
    redis::cmd("PING")
        .query::<String>(&mut con)
        .unwrap_or_else(|e| fail(&e));
    con
}

/// The test's own connection. Other programs sharing the server may cut
/// connections (`CLIENT KILL TYPE normal`, to test their reconnects): a command
/// that meets a dropped connection is sent once more on a new one.
pub struct Con(Connection);

pub fn redis() -> Con {
    Con(connect())
}

impl Con {
    fn retry<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        match f(&mut self.0) {
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                self.0 = connect();
                f(&mut self.0)
            }
            other => other,
        }
    }
}

impl redis::ConnectionLike for Con {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        self.retry(|c| c.req_packed_command(cmd))
    }
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        self.retry(|c| c.req_packed_commands(cmd, offset, count))
    }
    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }
    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// A stream key of the test's own (unique per test and per process); the stream,
/// its dead-letter stream and anything under its prefix are deleted on drop.
pub struct Key {
    pub stream: String,
}

impl Key {
    pub fn new(test: &str) -> Key {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Key {
            stream: format!("stageflow-test:{test}:{}:{n}", std::process::id()),
        }
    }

    pub fn dead(&self) -> String {
        format!("{}:dead", self.stream)
    }

    /// A consumer name unique to this test (connections are found by it).
    pub fn consumer(&self, name: &str) -> String {
        format!("{name}@{}", self.stream)
    }

    /// Options for consumer `name` (made unique) of group `g`.
    pub fn options(&self, name: &str) -> RedisStreamOptions {
        RedisStreamOptions::new(url(), &self.stream, "g", self.consumer(name))
    }
}

/// Sources started by the tests, by stream: a test that fails leaves its source
/// running, which would make the stream again (`MKSTREAM`) after [`Key`] deleted it.
static SOURCES: parking_lot::Mutex<Vec<(String, StageRef<RedisStreamSource>)>> =
    parking_lot::Mutex::new(Vec::new());

/// Starts `source` as a producer, to be stopped when its test's [`Key`] is dropped.
pub fn start_source(source: RedisStreamSource) -> StageRef<RedisStreamSource> {
    let stream = source.options().stream().to_string();
    let source = start_producer(source, ProducerOptions::new()).expect("source starts");
    SOURCES.lock().push((stream, source.clone()));
    source
}

impl Drop for Key {
    fn drop(&mut self) {
        let mine: Vec<StageRef<RedisStreamSource>> = {
            let mut all = SOURCES.lock();
            let (mine, others) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(s, _)| *s == self.stream);
            *all = others;
            mine.into_iter().map(|(_, source)| source).collect()
        };
        for source in mine {
            let _ = source.stop(Reason::Shutdown);
            let _ = source.join_timeout(TIMEOUT);
        }
        if let Ok(client) = redis::Client::open(url().as_str()) {
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(5)) {
                let _: Result<i64, _> = redis::cmd("DEL")
                    .arg(&self.stream)
                    .arg(self.dead())
                    .query(&mut con);
            }
        }
    }
}

/// Adds `n` entries `{n: i, pad: ...}` to `stream` (pipelined); returns their ids.
pub fn add(con: &mut Con, stream: &str, from: u64, n: u64) -> Vec<StreamId> {
    let mut ids = Vec::new();
    for chunk_start in (from..from + n).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in chunk_start..(chunk_start + 1000).min(from + n) {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("n")
                .arg(i)
                .arg("pad")
                .arg("x".repeat(16));
        }
        let got: Vec<String> = pipe.query(con).expect("XADD");
        ids.extend(
            got.iter()
                .map(|s| s.parse::<StreamId>().expect("an entry id")),
        );
    }
    ids
}

pub fn number(entry: &StreamEntry) -> u64 {
    std::str::from_utf8(entry.field("n").expect("field n"))
        .unwrap()
        .parse()
        .unwrap()
}

/// The group's pending count, all consumers.
pub fn pending(con: &mut Con, stream: &str) -> u64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .query(con)
        .expect("XPENDING");
    match reply {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n as u64,
            other => panic!("XPENDING summary: {other:?}"),
        },
        other => panic!("XPENDING summary: {other:?}"),
    }
}

/// `(id, consumer, deliveries)` of every pending entry.
pub fn pending_entries(con: &mut Con, stream: &str) -> Vec<(StreamId, String, u64)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query(con)
        .expect("XPENDING extended");
    rows.into_iter()
        .map(|(id, consumer, _, n)| (id.parse().unwrap(), consumer, n))
        .collect()
}

/// The entries of a stream, each as its field pairs (as text).
pub fn entries(con: &mut Con, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE")
}

/// Waits until `f` holds (checking every few milliseconds), or fails naming `what`.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a sink does with an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Acknowledge it as done.
    Ack,
    /// Acknowledge it as failed with this error.
    Fail(String),
    /// Do not acknowledge it at all (as if the process died before its commit).
    Keep,
}

/// What a sink saw: the entry, and what it did with it.
#[derive(Clone, Debug)]
pub struct Got {
    pub entry: StreamEntry,
    pub verdict: Verdict,
}

/// What a sink does with each entry.
pub type Decide = Box<dyn FnMut(&StreamEntry) -> Verdict + Send>;

/// A consumer that "commits" each batch (reports it to the test), then acknowledges
/// it, one call per batch. With `manual`, it sends its subscription to the test,
/// which asks for events itself.
pub struct Sink {
    tx: Sender<Got>,
    decide: Decide,
    manual: Option<Sender<SubscriptionRef>>,
}

impl Sink {
    pub fn new(decide: Decide) -> (Sink, Receiver<Got>) {
        let (tx, rx) = unbounded();
        (
            Sink {
                tx,
                decide,
                manual: None,
            },
            rx,
        )
    }

    pub fn acking() -> (Sink, Receiver<Got>) {
        Sink::new(Box::new(|_| Verdict::Ack))
    }

    pub fn manual(mut self) -> (Sink, Receiver<SubscriptionRef>) {
        let (tx, rx) = unbounded();
        self.manual = Some(tx);
        (self, rx)
    }
}

impl Stage for Sink {
    type In = Message<StreamEntry>;
    type Out = Never;

    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        _info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        match &self.manual {
            Some(tx) => {
                let _ = tx.send(from.clone());
                Ok(Demand::Manual)
            }
            None => Ok(Demand::Automatic),
        }
    }
}

impl Consumer for Sink {
    fn handle_events(
        &mut self,
        batch: Vec<Message<StreamEntry>>,
        _from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let mut acks = Acks::new();
        for message in &batch {
            let verdict = (self.decide)(&message.data);
            match &verdict {
                Verdict::Ack => acks.successful(message),
                Verdict::Fail(error) => acks.failed(message, error),
                Verdict::Keep => {}
            }
            let _ = self.tx.send(Got {
                entry: message.data.clone(),
                verdict,
            });
        }
        acks.send();
    }
}

/// The group's `(entries-read, lag)` from `XINFO GROUPS`.
pub fn group_progress(con: &mut Con, stream: &str) -> (u64, Option<u64>) {
    let groups: Vec<Vec<Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .expect("XINFO GROUPS");
    let g = groups.into_iter().next().expect("the group exists");
    let mut read = 0;
    let mut lag = None;
    for pair in g.chunks(2) {
        let name = match &pair[0] {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        let value = match &pair[1] {
            Value::Int(n) => Some(*n as u64),
            _ => None,
        };
        match name.as_str() {
            "entries-read" => read = value.unwrap_or(0),
            "lag" => lag = value,
            _ => {}
        }
    }
    (read, lag)
}

/// Reads up to `count` new entries as `consumer` with a plain client and never
/// acknowledges them: a consumer that died holding them.
pub fn read_as(con: &mut Con, stream: &str, consumer: &str, count: usize) -> Vec<StreamId> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(con)
        .expect("XREADGROUP");
    let text = format!("{reply:?}");
    let mut ids = Vec::new();
    if let Value::Array(streams) = reply {
        for s in streams {
            if let Value::Array(mut pair) = s {
                if let Some(Value::Array(entries)) = pair.pop() {
                    for e in entries {
                        if let Value::Array(parts) = e {
                            if let Some(Value::BulkString(id)) = parts.first() {
                                ids.push(std::str::from_utf8(id).unwrap().parse().unwrap());
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(!ids.is_empty() || count == 0, "nothing read: {text}");
    ids
}

/// Receives `n` reports from a sink, or fails.
pub fn receive(rx: &Receiver<Got>, n: usize) -> Vec<Got> {
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match rx.recv_deadline(deadline) {
            Ok(got) => out.push(got),
            Err(e) => panic!(
                "{} with {} of {n} entries received: {:?}",
                match e {
                    crossbeam_channel::RecvTimeoutError::Timeout =>
                        format!("timed out after {TIMEOUT:?}"),
                    crossbeam_channel::RecvTimeoutError::Disconnected =>
                        "the sink stopped".to_string(),
                },
                out.len(),
                out.iter()
                    .map(|g| g.entry.id.to_string())
                    .collect::<Vec<_>>()
            ),
        }
    }
    out
}

/// The ids of this test's source connections (by their client names).
pub fn client_ids(con: &mut Con, consumer: &str) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(con)
        .expect("CLIENT LIST");
    let names = [
        format!("name=stageflow-reader:{consumer} "),
        format!("name=stageflow-acker:{consumer} "),
    ];
    list.lines()
        .filter(|line| names.iter().any(|n| line.contains(n.as_str())))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .collect()
}

/// Creates group `g` at the start of `stream` (and the stream).
pub fn create_group(con: &mut Con, stream: &str) {
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .exec(con)
        .expect("XGROUP CREATE");
}

/// Stops a stage and waits for it, or fails.
pub fn stop<S: Stage>(stage: &StageRef<S>) {
    let _ = stage.stop(Reason::Shutdown);
    assert!(
        stage.join_timeout(TIMEOUT).is_some(),
        "{stage:?} did not stop"
    );
}
