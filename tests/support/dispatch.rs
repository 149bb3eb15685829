//! The dispatcher suites' helper stages (broadcast, fair, partition, consumer
//! supervisor): versions of GenStage's `Counter`, `NothingProducer`, `Forwarder` and
//! `Sleeper` whose events are plain `u64` (what the dispatchers' hash and key
//! functions take) and whose consumers carry a name, so that a test can say which
//! consumer got which events. They report to the same [`Mailbox`] as every suite.

use crossbeam_channel::{Receiver, Sender};
use stageflow::prelude::*;

use super::Mailbox;
pub use super::{eventually, Queue};

/// What these helper stages report.
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

/// The test's mailbox for these helpers.
pub type Inbox = Mailbox<Msg>;

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

impl HandleCast<Queue<u64>> for Counter {
    fn handle_cast(&mut self, q: Queue<u64>, ctx: &mut Context<'_, Self>) {
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

impl HandleCast<Queue<u64>> for Queued {
    fn handle_cast(&mut self, q: Queue<u64>, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(q.0);
    }
}

impl HandleCall<Queue<u64>> for Queued {
    type Reply = ();
    fn handle_call(
        &mut self,
        q: Queue<u64>,
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
