//! The consumer side of the loop: subscribing to producers, splitting their events
//! into batches by the demand rule, and reacting to their cancels.

use std::sync::Arc;

use crate::error::SubscribeError;

use super::super::handle::SourceRef;
use super::super::log::Level;
use super::super::mailbox::{DownGuard, Mailbox, SubscribeMsg};
use super::super::reason::{CancelReason, Reason, Tag};
use super::super::subscription::{
    CancelMode, Demand, DemandState, SubscribeOptions, SubscriptionRef,
};
use super::super::{Kind, Peer, Stage};
use super::producer_consumer::Queued;
use super::{OnDeadProducer, Runtime};

pub(super) struct ProducerEntry {
    pub(super) from: SubscriptionRef,
    pub(super) cancel: CancelMode,
    /// `None`: manual demand.
    pub(super) demand: Option<DemandState>,
    /// A cancel is queued behind unprocessed input: send no more asks.
    pub(super) cancelled: bool,
}

impl<S: Stage> Runtime<S> {
    /// Subscribes to `producer` (GenStage's `consumer_subscribe`): register, send the
    /// subscribe message, `handle_subscribe(Producer)`, then the initial ask.
    pub(crate) fn consumer_subscribe(
        &mut self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
        on_dead: OnDeadProducer,
    ) -> Result<Tag, SubscribeError> {
        self.subscribe_inner(producer, opts, current, on_dead)
    }

    pub(super) fn subscribe_inner(
        &mut self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
        on_dead: OnDeadProducer,
    ) -> Result<Tag, SubscribeError> {
        if self.kind == Kind::Producer {
            return Err(SubscribeError::NotAConsumer);
        }
        let tag = Tag::new();
        let info = opts.info(tag)?;
        let from = SubscriptionRef {
            tag,
            producer: producer.upstream.clone().control(),
        };
        let me: Arc<Mailbox<S>> = Arc::new(self.me.mailbox.clone());
        let msg = Box::new(SubscribeMsg {
            tag,
            consumer_id: self.me.shared.id,
            consumer: me.clone(),
            opts,
            current,
            guard: DownGuard::new(tag, me, producer.shared.clone()),
        });
        self.producers.insert(
            tag,
            ProducerEntry {
                from: from.clone(),
                cancel: info.cancel,
                demand: None,
                cancelled: false,
            },
        );
        // Known to snapshots of the topology from now on, before the producer could
        // end it (it ends it in its log): a topology is drawn whole once wired.
        let log = &producer.shared.subscriptions;
        log.subscribed(producer.id, self.me.shared.id, &info);
        if let Err(mut msg) = producer.upstream.subscribe(msg) {
            log.forget(tag);
            if let OnDeadProducer::Error(operation) = on_dead {
                msg.guard.defuse();
                self.producers.remove(&tag);
                return Err(SubscribeError::NoProc(producer.shared.not_alive(operation)));
            }
            // Dropping the message tells us, through our own mailbox, that the
            // producer is gone: the subscription then ends by its cancel mode, as
            // a monitor of a dead process does in GenStage.
            msg.guard.never_delivered();
            drop(msg);
        }
        match self.invoke(|s, ctx| s.handle_subscribe(Peer::Producer, &info, &from, ctx)) {
            None => {
                return Err(SubscribeError::Stopped(
                    self.stop.clone().unwrap_or(Reason::Normal),
                ))
            }
            Some(Err(reason)) => {
                self.stop = Some(reason.clone());
                return Err(SubscribeError::Stopped(reason));
            }
            Some(Ok(Demand::Automatic)) => {
                if let Some(entry) = self.producers.get_mut(&tag) {
                    entry.demand = Some(DemandState::new(info.max_demand, info.min_demand));
                }
                self.me.shared.metrics.demand_requested(info.max_demand);
                from.producer.ask(tag, info.max_demand);
            }
            Some(Ok(Demand::Manual)) => {}
        }
        super::super::trace::subscribed("producer", tag.id(), info.max_demand, info.min_demand);
        self.dispatch_out();
        Ok(tag)
    }

    pub(super) fn consumer_events(&mut self, tag: Tag, events: Vec<S::In>) {
        if events.is_empty() {
            return;
        }
        self.me.shared.metrics.events_in(events.len());
        match self.kind {
            Kind::Consumer => self.consume(tag, events),
            Kind::ProducerConsumer => {
                self.queue.push_back(Queued::Events(tag, events));
                self.process_queue();
            }
            Kind::Producer => {}
        }
    }

    /// Splits one message into batches by the demand rule and calls `handle_events`
    /// for each, asking upstream after each batch as the rule says.
    pub(super) fn consume(&mut self, tag: Tag, mut events: Vec<S::In>) {
        let Some(entry) = self.producers.get(&tag) else {
            self.log.log(
                Level::Error,
                format!(
                    "received {} events for unknown subscription {tag}",
                    events.len()
                ),
            );
            return;
        };
        let from = entry.from.clone();
        let cancelled = entry.cancelled;
        let handle_events = self.cb.handle_events;
        let Some(mut state) = entry.demand.clone() else {
            // Manual demand: one batch per message, no accounting.
            self.me.shared.metrics.batch();
            let _span = super::super::trace::batch("handle_events", events.len());
            self.invoke(|s, ctx| handle_events(s, events, &from, ctx));
            self.dispatch_out();
            return;
        };
        loop {
            let (plan, excess) = state.next_batch(events.len());
            if excess > 0 {
                self.log.log(
                    Level::Error,
                    format!(
                        "consumer has received {excess} events in excess from subscription {tag}"
                    ),
                );
            }
            let batch = if plan.len == events.len() {
                std::mem::take(&mut events)
            } else {
                let rest = events.split_off(plan.len);
                std::mem::replace(&mut events, rest)
            };
            self.me.shared.metrics.batch();
            {
                let _span = super::super::trace::batch("handle_events", batch.len());
                self.invoke(|s, ctx| handle_events(s, batch, &from, ctx));
                self.dispatch_out();
            }
            if plan.ask > 0 && !cancelled && !self.stopped() {
                self.me.shared.metrics.demand_requested(plan.ask);
                from.producer.ask(tag, plan.ask);
            }
            if self.stopped() || events.is_empty() {
                break;
            }
        }
        if let Some(entry) = self.producers.get_mut(&tag) {
            entry.demand = Some(state);
        }
    }

    pub(super) fn consumer_cancel(&mut self, tag: Tag, reason: CancelReason) {
        let Some(entry) = self.producers.get_mut(&tag) else {
            return;
        };
        if entry.cancelled {
            return;
        }
        if self.kind == Kind::ProducerConsumer && !self.queue.is_empty() {
            // Behind the queued input: the events before it are handled first.
            entry.cancelled = true;
            self.queue.push_back(Queued::Cancel(tag, reason));
            return;
        }
        let entry = self.producers.remove(&tag).expect("entry was just found");
        self.invoke_cancel(entry, reason);
    }

    pub(super) fn invoke_cancel(&mut self, entry: ProducerEntry, reason: CancelReason) {
        let r = reason.reason().clone();
        super::super::trace::cancelled("producer", entry.from.tag.id(), &r);
        self.invoke(|s, ctx| s.handle_cancel(reason, &entry.from, ctx));
        self.dispatch_out();
        if !self.stopped() && entry.cancel.stops_on(&r) {
            self.log.log(
                Level::Info,
                format!(
                    "stopping after receiving cancel from producer (subscription {}) with reason: {r}",
                    entry.from.tag
                ),
            );
            if r.is_normal()
                && self.kind == Kind::ProducerConsumer
                && !self.buffer.is_empty()
                && !self.consumers.is_empty()
            {
                // A normal end travels behind the last events (invariant 3): output
                // still buffered for lack of downstream demand is delivered first. The
                // stop rides on an info marker after the last buffered event; should
                // every consumer leave before that, the stop happens then.
                self.deferred_stop = Some(r.clone());
                self.queue_info(Box::new(move |_, ctx| ctx.stop(r)));
            } else {
                self.stop = Some(r);
            }
        }
    }
}
