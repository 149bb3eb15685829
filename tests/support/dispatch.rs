//! Helper stages shared by the ported suites: Rust versions of the helper modules of
//! GenStage's `test/gen_stage_test.exs` (`Counter`, `NothingProducer`, `Forwarder`,
//! `Sleeper`) reporting to the test over a channel instead of the test's mailbox.
#![allow(dead_code)]

use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use stageflow::prelude::*;

/// How long an `assert_receive` waits. ExUnit's suites use 500 ms; a loaded 2-core
/// machine needs more, and a passing test never waits this long.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `refute_receive` waits.
pub const REFUTE_TIMEOUT: Duration = Duration::from_millis(100);

/// What helper stages report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `{:consumed, events}` from the consumer named `.0`.
    Consumed(&'static str, Vec<u64>),
    /// `{:demand, n}` from a producer.
    Demand(usize),
    /// A consumer's `handle_cancel`.
    Cancelled(&'static str, CancelReason),
    /// A consumer subscribed (its tag).
    Subscribed(&'static str, Tag),
}

/// A channel standing in for the test process's mailbox.
#[derive(Clone)]
pub struct Inbox {
    pub tx: Sender<Msg>,
    pub rx: Receiver<Msg>,
}

impl Inbox {
    pub fn new() -> Self {
        let (tx, rx) = unbounded();
        Inbox { tx, rx }
    }

    /// `assert_receive pattern`: skips non-matching messages (as a selective receive
    /// does) until one matches or the timeout passes.
    pub fn assert_receive(&self, what: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = std::time::Instant::now() + RECEIVE_TIMEOUT * 4;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if what(&m) => return m,
                Ok(_) => continue,
                Err(_) => panic!("expected message not received"),
            }
        }
    }

    /// `refute_receive pattern` for `REFUTE_TIMEOUT`.
    pub fn refute_receive(&self, what: impl Fn(&Msg) -> bool) {
        let deadline = std::time::Instant::now() + REFUTE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if what(&m) => panic!("unexpected message {m:?}"),
                Ok(_) => continue,
                Err(_) => return,
            }
        }
    }
}

/// `Counter`: emits `counter..counter+demand` from `handle_demand`, or queued events
/// from a cast.
pub struct Counter(pub u64);

impl Stage for Counter {
    type In = Never;
    type Out = u64;
}

impl Producer for Counter {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(self.0..self.0 + demand as u64);
        self.0 += demand as u64;
    }
}

/// `Counter.async_queue` / `sync_queue`: emit these events now.
pub struct Queue(pub Vec<u64>);

impl HandleCast<Queue> for Counter {
    fn handle_cast(&mut self, q: Queue, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(q.0);
    }
}

/// A producer that emits only what it is told to (`Counter` started with a pid).
pub struct Queued;

impl Stage for Queued {
    type In = Never;
    type Out = u64;
}

impl Producer for Queued {
    fn handle_demand(&mut self, _demand: usize, _ctx: &mut Context<'_, Self>) {}
}

impl HandleCast<Queue> for Queued {
    fn handle_cast(&mut self, q: Queue, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(q.0);
    }
}

impl HandleCall<Queue> for Queued {
    type Reply = ();
    fn handle_call(
        &mut self,
        q: Queue,
        _from: &ReplyTo<()>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<()> {
        ctx.emit_all(q.0);
        Some(())
    }
}

/// `NothingProducer`: never emits; reports every `handle_demand`.
pub struct NothingProducer(pub Sender<Msg>);

impl Stage for NothingProducer {
    type In = Never;
    type Out = u64;
}

impl Producer for NothingProducer {
    fn handle_demand(&mut self, demand: usize, _ctx: &mut Context<'_, Self>) {
        let _ = self.0.send(Msg::Demand(demand));
    }
}

/// `Forwarder`: reports what it consumes; `manual` subscriptions never ask by
/// themselves.
pub struct Forwarder {
    pub name: &'static str,
    pub to: Sender<Msg>,
    pub manual: bool,
    /// Every subscription it has seen, newest last.
    pub refs: Vec<SubscriptionRef>,
}

impl Forwarder {
    pub fn new(name: &'static str, inbox: &Inbox) -> Self {
        Forwarder {
            name,
            to: inbox.tx.clone(),
            manual: false,
            refs: Vec::new(),
        }
    }
    pub fn manual(name: &'static str, inbox: &Inbox) -> Self {
        Forwarder {
            name,
            to: inbox.tx.clone(),
            manual: true,
            refs: Vec::new(),
        }
    }
}

impl Stage for Forwarder {
    type In = u64;
    type Out = Never;
    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        self.refs.push(from.clone());
        let _ = self.to.send(Msg::Subscribed(self.name, info.tag));
        Ok(if self.manual {
            Demand::Manual
        } else {
            Demand::Automatic
        })
    }
    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        _from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.to.send(Msg::Cancelled(self.name, reason));
    }
}

impl Consumer for Forwarder {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.to.send(Msg::Consumed(self.name, events));
    }
}

/// `Sleeper`: blocks inside its first `handle_events` until the test drops the
/// returned sender.
pub struct Sleeper(pub Receiver<()>);

impl Stage for Sleeper {
    type In = u64;
    type Out = Never;
}

impl Consumer for Sleeper {
    fn handle_events(&mut self, _: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        let _ = self.0.recv();
    }
}

/// Waits until `f` holds (polling), or panics after a few seconds.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `Doubler`: a producer-consumer emitting every event twice.
pub struct Doubler;

impl Stage for Doubler {
    type In = u64;
    type Out = u64;
}

impl ProducerConsumer for Doubler {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_all(events.into_iter().flat_map(|e| [e, e]));
    }
}
