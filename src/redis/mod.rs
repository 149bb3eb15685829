//! A source that shares one stream's entries among many processes through a Redis
//! consumer group, and acknowledges each entry only once the end of the pipeline
//! has committed it (feature `redis`).
//!
//! [`RedisStreamSource`] is a producer of [`Message`]`<`[`StreamEntry`]`>`. Every
//! process (on any machine) runs the same pipeline with the same group and its own
//! consumer name; Redis hands each entry to one of them. The sink acknowledges
//! after its commit ([`Acks`](crate::pipeline::Acks)), one `XACK` per batch.
//! Nothing is acknowledged before it is durable, and whatever a process does not
//! acknowledge is delivered again: to the same consumer when it failed, to another
//! one when its process died (`XAUTOCLAIM` after [`claim_idle`]), to the same name
//! when it comes back. An entry that keeps failing goes to a dead-letter stream
//! with its error after [`max_deliveries`]. So delivery is *at least once*: a sink
//! that writes idempotently (keyed by the entry, `ON CONFLICT DO NOTHING`) stores
//! each entry exactly once.
//!
//! How it runs: reading is demand-driven. The consumers' unmet demand becomes the
//! `COUNT` of each `XREADGROUP` (capped by [`max_count`]), so a pipeline never reads
//! more than it asked for and the rest of the stream stays in Redis for the other
//! processes. The blocking reads happen on a reader thread of the source, which
//! hands each read's entries to the stage as an info message: the stage itself
//! never waits on Redis and answers calls, cancels and a drain at once.
//! Acknowledgements are queued by the sink's thread and sent by a thread with its
//! own connection. Both threads reconnect with backoff when a connection drops,
//! and after a reconnect take up the entries whose reply the old connection lost.
//!
//! docs/REDIS.md in the repository describes the semantics in full: delivery
//! counts, dead letters, lost entries, reconnects, and what the counters mean.
//!
//! ```no_run
//! use std::time::Duration;
//! use stageflow::pipeline::{Acks, Message};
//! use stageflow::prelude::*;
//! use stageflow::redis::{RedisStreamOptions, RedisStreamSource, StreamEntry};
//!
//! /// Stores entries (here: counts them) and acknowledges each batch after that.
//! struct Sink(u64);
//! impl Stage for Sink {
//!     type In = Message<StreamEntry>;
//!     type Out = Never;
//! }
//! impl Consumer for Sink {
//!     fn handle_events(&mut self, batch: Vec<Message<StreamEntry>>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
//!         self.0 += batch.len() as u64; // commit the batch here, then:
//!         Acks::all_successful(&batch);
//!     }
//! }
//!
//! let options = RedisStreamOptions::new("redis://127.0.0.1:6379/", "jobs", "workers", "worker-1")
//!     .stop_when_idle(true); // end once every entry of the stream is acknowledged
//! let source = RedisStreamSource::new(options)?;
//! let stats = source.stats();
//!
//! let mut topology = Topology::new();
//! let jobs = topology.source(source, ProducerOptions::new().name("jobs"))?;
//! topology.consumer(
//!     Sink(0),
//!     ConsumerOptions::new().name("sink").subscribe_to(&jobs, SubscribeOptions::new().max_demand(1000)),
//! )?;
//! let pipeline = topology.start()?;
//! assert!(pipeline.wait(Duration::from_secs(3600)).is_complete());
//! println!("{:?}", stats.snapshot());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`claim_idle`]: RedisStreamOptions::claim_idle
//! [`max_deliveries`]: RedisStreamOptions::max_deliveries
//! [`max_count`]: RedisStreamOptions::max_count

mod acker;
mod conn;
mod entry;
mod options;
mod reader;
mod shared;
mod stats;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::error::OptionsError;
use crate::pipeline::{AckRef, Acknowledger, Halt, Message};
use crate::stage::{Context, HandleInfo, Init, Never, Producer, Reason, Stage};

pub use entry::{ParseStreamIdError, StreamEntry, StreamId};
pub use options::RedisStreamOptions;
pub use stats::{RedisStreamCounts, RedisStreamStats};

use acker::{AckerThread, RedisAcker};
use reader::Reader;
use shared::Inner;

/// Why a [`RedisStreamSource`] could not be made.
///
/// ```
/// use stageflow::redis::{RedisSourceError, RedisStreamOptions, RedisStreamSource};
/// let bad = RedisStreamOptions::new("redis://127.0.0.1:6379/", "jobs", "workers", "w").max_count(0);
/// let err = RedisStreamSource::new(bad).unwrap_err();
/// assert!(matches!(err, RedisSourceError::Options(_)));
/// assert_eq!(err.to_string(), "bad options: expected max_count to be equal to or greater than 1, got: 0");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSourceError {
    /// An option was invalid.
    #[error("bad options: {0}")]
    Options(#[from] OptionsError),
    /// The server could not be reached.
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What the client said.
        #[source]
        source: redis::RedisError,
    },
    /// The consumer group could not be created (the key holds something that is
    /// not a stream, say).
    #[error("cannot create consumer group {group} on stream {stream}: {source}")]
    Group {
        /// The stream's key.
        stream: String,
        /// The group.
        group: String,
        /// What Redis said.
        #[source]
        source: redis::RedisError,
    },
}

/// What the source's own threads tell it. Only the source makes these.
pub struct RedisSourceMail(Mail);

impl fmt::Debug for RedisSourceMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Mail::Read(e) => write!(f, "RedisSourceMail(Read({} entries))", e.len()),
            Mail::Redelivered(e) => write!(f, "RedisSourceMail(Redelivered({} entries))", e.len()),
            Mail::Idle => f.write_str("RedisSourceMail(Idle)"),
            Mail::Failed(e) => write!(f, "RedisSourceMail(Failed({e:?}))"),
            Mail::Ended => f.write_str("RedisSourceMail(Ended)"),
        }
    }
}

enum Mail {
    /// The reader's entries, read against the credit it was given.
    Read(Vec<StreamEntry>),
    /// Failed entries, claimed again by the acknowledger.
    Redelivered(Vec<StreamEntry>),
    /// `stop_when_idle`: the group has nothing left.
    Idle,
    /// The reader met an error retrying cannot fix.
    Failed(String),
    /// Sent to itself behind the last events: stop now.
    Ended,
}

/// A producer of a Redis stream's entries, read through a consumer group as its
/// consumers ask, each handed out as a [`Message`] to acknowledge after commit.
///
/// Made with [`new`](Self::new) (which connects and creates the group, with
/// `MKSTREAM`, if it does not exist), started like any producer (a
/// [`Topology`](crate::Topology) source, or [`start_producer`](crate::start_producer)).
/// Sending it [`Halt`] (a pipeline's drain does) stops reading: the entries already
/// handed out go on to the end of the pipeline and are acknowledged there, the
/// source stops normally, and whatever it read but did not hand out stays pending
/// in Redis, for a later run under the same consumer name or for another consumer.
///
/// A worker that drains on Ctrl-C, say: halting ends the pipeline after the entries
/// already taken, and the rest stays for the other workers.
///
/// ```no_run
/// use std::time::Duration;
/// use stageflow::pipeline::{Acks, Message};
/// use stageflow::prelude::*;
/// use stageflow::redis::{RedisStreamOptions, RedisStreamSource, StreamEntry};
///
/// struct Store;
/// impl Stage for Store { type In = Message<StreamEntry>; type Out = Never; }
/// impl Consumer for Store {
///     fn handle_events(&mut self, batch: Vec<Message<StreamEntry>>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         let mut acks = Acks::new();
///         for message in &batch {
///             match message.data.field("data") {
///                 Some(_) => acks.successful(message), // stored
///                 None => acks.failed(message, "no `data` field"), // retried, then dead-lettered
///             }
///         }
///         acks.send();
///     }
/// }
///
/// let source = RedisStreamSource::new(RedisStreamOptions::new(
///     "redis://127.0.0.1:6379/", "jobs", "workers", "worker-2",
/// ))?;
/// let stats = source.stats();
/// let mut topology = Topology::new();
/// let jobs = topology.source(source, ProducerOptions::new())?;
/// topology.consumer(Store, ConsumerOptions::new().subscribe_to(&jobs, SubscribeOptions::new()))?;
/// let pipeline = topology.start()?;
/// // ... later, on a signal:
/// let report = pipeline.drain(Duration::from_secs(30));
/// println!("{report}\n{:?}", stats.snapshot());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// See the [module docs](self) for the delivery semantics.
pub struct RedisStreamSource {
    inner: Arc<Inner>,
    cons: Option<(redis::Connection, redis::Connection)>,
    acker: Option<Arc<RedisAcker>>,
    /// Demand not met yet.
    demand: usize,
    /// Credit given to the reader and not yet used.
    asked: usize,
    /// Entries received beyond demand (a redelivery took the demand they were read
    /// for), handed out first. At most what the reader was asked for plus the
    /// redeliveries in flight.
    ready: VecDeque<StreamEntry>,
    halted: bool,
}

impl fmt::Debug for RedisStreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSource")
            .field("stream", &self.inner.options.stream)
            .field("group", &self.inner.options.group)
            .field("consumer", &self.inner.options.consumer)
            .field("demand", &self.demand)
            .field("ready", &self.ready.len())
            .field("halted", &self.halted)
            .finish()
    }
}

impl RedisStreamSource {
    /// Checks the options, connects (the reader's and the acknowledger's
    /// connections) and creates the group at the start of the stream if it does
    /// not exist (the stream too). Nothing is read before the source is started.
    pub fn new(options: RedisStreamOptions) -> Result<Self, RedisSourceError> {
        options.validate()?;
        let inner = Arc::new(Inner::new(options));
        let o = &inner.options;
        let connect = |role: &str, timeout| {
            conn::connect(o, &conn::client_name(role, &o.consumer), Some(timeout)).map_err(
                |source| RedisSourceError::Connect {
                    url: o.url.clone(),
                    source,
                },
            )
        };
        let mut reader = connect("reader", reader::read_timeout(&inner))?;
        let acker = connect("acker", o.connect_timeout * 6)?;
        conn::create_group(&mut reader, o).map_err(|source| RedisSourceError::Group {
            stream: o.stream.clone(),
            group: o.group.clone(),
            source,
        })?;
        Ok(RedisStreamSource {
            inner,
            cons: Some((reader, acker)),
            acker: None,
            demand: 0,
            asked: 0,
            ready: VecDeque::new(),
            halted: false,
        })
    }

    /// The source's counters, readable from any thread while it runs and after.
    pub fn stats(&self) -> RedisStreamStats {
        RedisStreamStats {
            counters: self.inner.counters.clone(),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &RedisStreamOptions {
        &self.inner.options
    }

    fn wrap(&self, entry: StreamEntry) -> Message<StreamEntry> {
        let acker = self
            .acker
            .clone()
            .expect("the acknowledger exists once started");
        let id = entry.id.into();
        Message::new(entry, AckRef::new(acker as Arc<dyn Acknowledger>, id))
    }

    /// Hands out up to the unmet demand, keeps the rest.
    fn offer(&mut self, entries: Vec<StreamEntry>, ctx: &mut Context<'_, Self>) {
        if self.halted {
            self.inner.release(entries.iter().map(|e| e.id));
            return;
        }
        let now = entries.len().min(self.demand);
        self.demand -= now;
        let mut entries = entries.into_iter();
        let out: Vec<Message<StreamEntry>> =
            entries.by_ref().take(now).map(|e| self.wrap(e)).collect();
        ctx.emit_batch(out);
        self.ready.extend(entries);
    }

    /// Stops taking: the reader stops (woken from its read), entries not handed
    /// out stay pending, and the stage stops behind the events already emitted.
    fn end(&mut self, ctx: &mut Context<'_, Self>) {
        if self.halted {
            return;
        }
        self.halted = true;
        self.stop_threads();
        let _ = ctx.myself().async_info(RedisSourceMail(Mail::Ended));
    }

    fn stop_threads(&mut self) {
        self.inner.stop_reader();
        if let Some(acker) = &self.acker {
            acker.unblock_reader();
        }
        let ready: Vec<StreamId> = self.ready.drain(..).map(|e| e.id).collect();
        self.inner.release(ready);
    }
}

impl Stage for RedisStreamSource {
    type In = Never;
    type Out = Message<StreamEntry>;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        let Some((reader_con, acker_con)) = self.cons.take() else {
            return Init::Stop(Reason::custom("a RedisStreamSource can be started once"));
        };
        if let Err(e) = self.inner.counters.publish(ctx) {
            return Init::Stop(Reason::custom(format!("cannot publish the counters: {e}")));
        }
        let (acker, rx) = RedisAcker::new(self.inner.clone());
        self.acker = Some(Arc::new(acker));
        let name = &self.inner.options.consumer;
        let acker_thread =
            AckerThread::new(self.inner.clone(), ctx.myself().clone(), rx, acker_con);
        if let Err(e) = std::thread::Builder::new()
            .name(format!("redis-acker-{name}"))
            .spawn(move || acker_thread.run())
        {
            return Init::Stop(Reason::custom(format!(
                "cannot start the acknowledger's thread: {e}"
            )));
        }
        let reader = Reader::new(self.inner.clone(), ctx.myself().clone(), reader_con);
        if let Err(e) = std::thread::Builder::new()
            .name(format!("redis-reader-{name}"))
            .spawn(move || reader.run())
        {
            return Init::Stop(Reason::custom(format!(
                "cannot start the reader's thread: {e}"
            )));
        }
        Init::Ok
    }

    fn terminate(&mut self, _reason: &Reason) {
        self.halted = true;
        self.stop_threads();
    }
}

impl Producer for RedisStreamSource {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        let now = demand.min(self.ready.len());
        if now > 0 {
            let taken: Vec<StreamEntry> = self.ready.drain(..now).collect();
            let out: Vec<Message<StreamEntry>> = taken.into_iter().map(|e| self.wrap(e)).collect();
            ctx.emit_batch(out);
        }
        self.demand += demand - now;
        if self.halted {
            return;
        }
        if self.demand > self.asked {
            self.inner.add_credit(self.demand - self.asked);
            self.asked = self.demand;
        }
    }
}

impl HandleInfo<RedisSourceMail> for RedisStreamSource {
    fn handle_info(&mut self, RedisSourceMail(mail): RedisSourceMail, ctx: &mut Context<'_, Self>) {
        match mail {
            Mail::Read(entries) => {
                self.asked = self.asked.saturating_sub(entries.len());
                self.offer(entries, ctx);
            }
            Mail::Redelivered(entries) => self.offer(entries, ctx),
            Mail::Idle => self.end(ctx),
            Mail::Failed(error) => {
                self.stop_threads();
                ctx.stop(Reason::custom(error));
            }
            Mail::Ended => ctx.stop(Reason::Normal),
        }
    }
}

/// Halting stops reading: the entries already handed out are delivered (and
/// acknowledged by the end of the pipeline), what was read and not handed out stays
/// pending in Redis, and the source stops normally.
impl HandleInfo<Halt> for RedisStreamSource {
    fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
        self.end(ctx);
    }
}
