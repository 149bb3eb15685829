//! The producer side of the loop: consumers subscribe, ask and cancel; events go
//! through the dispatcher, or into the buffer when nobody asked for them.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::super::dispatcher::{PendingInfo, Subscriber};
use super::super::log::Level;
use super::super::mailbox::{Downstream, SubscribeMsg};
use super::super::reason::{CancelReason, Reason, Tag};
use super::super::subscription::{Demand, SubscriptionRef};
use super::super::{DemandMode, Kind, Peer, Stage};
use super::Runtime;

/// What a producer stored while in accumulate mode, replayed on forward.
pub(super) enum Accumulated<T> {
    Demand(usize),
    Dispatch(Vec<T>),
    /// An info queued behind stored events (it must not overtake them).
    Info(u64),
}

pub(super) struct ConsumerEntry<T> {
    pub(super) consumer: Arc<dyn Downstream<T>>,
    pub(super) from: SubscriptionRef,
}

impl<S: Stage> Runtime<S> {
    /// Releases info `id` behind the events buffered now (at once if there are none).
    pub(super) fn info_behind_buffer(&mut self, id: u64) {
        if !self.buffer.attach_info(id) {
            self.dispatcher.info(PendingInfo {
                id,
                owner: self.owner.clone(),
            });
        }
    }

    pub(crate) fn demand_mode(&self) -> DemandMode {
        if self.accumulate.is_some() {
            DemandMode::Accumulate
        } else {
            DemandMode::Forward
        }
    }

    pub(crate) fn set_demand_mode(&mut self, mode: DemandMode) {
        match (self.kind, mode) {
            (Kind::Producer, DemandMode::Accumulate) => {
                if self.accumulate.is_none() {
                    self.accumulate = Some(VecDeque::new());
                }
            }
            (Kind::Producer, DemandMode::Forward) => {
                if let Some(entries) = self.accumulate.take() {
                    self.replay(entries);
                    self.offer_buffer();
                }
            }
            (Kind::ProducerConsumer, DemandMode::Forward) => {}
            _ => self
                .log
                .log(Level::Error, "demand mode can only be set for producers"),
        }
    }

    /// Leaves accumulate mode: serves each stored demand in turn, never combined
    /// (GenStage's replay), from the buffer first, then from the events emitted while
    /// accumulating, then with `handle_demand`; what is left of the stored events and
    /// infos is then dispatched in order (leftovers are buffered).
    ///
    /// GenStage replays demands and events in arrival order, so that `handle_demand`
    /// called for an early demand emits events ahead of older stored ones; serving the
    /// demands from the older events first keeps every producer's events in order.
    pub(super) fn replay(&mut self, entries: VecDeque<Accumulated<S::Out>>) {
        let mut demands = Vec::new();
        let mut stored = VecDeque::new();
        for entry in entries {
            match entry {
                Accumulated::Demand(k) => demands.push(k),
                other => stored.push_back(other),
            }
        }
        for k in demands {
            let mut k = self.buffer_first(k);
            while k > 0 && !self.stopped() {
                match stored.pop_front() {
                    None => break,
                    Some(Accumulated::Dispatch(mut events)) => {
                        if events.len() > k {
                            let rest = events.split_off(k);
                            stored.push_front(Accumulated::Dispatch(rest));
                        }
                        k -= events.len();
                        self.dispatch_events(events);
                    }
                    Some(Accumulated::Info(id)) => self.info_behind_buffer(id),
                    Some(Accumulated::Demand(_)) => unreachable!("demands were set apart"),
                }
            }
            if k > 0 && !self.stopped() {
                self.demand_callback(k);
            }
            if self.stopped() {
                return;
            }
        }
        for entry in stored {
            match entry {
                Accumulated::Dispatch(events) => self.dispatch_events(events),
                Accumulated::Info(id) => self.info_behind_buffer(id),
                Accumulated::Demand(_) => unreachable!("demands were set apart"),
            }
            if self.stopped() {
                return;
            }
        }
    }

    pub(crate) fn buffered_count(&self) -> usize {
        self.buffer.len()
    }

    pub(super) fn producer_subscribe(&mut self, mut msg: SubscribeMsg<S::Out>) {
        msg.guard.defuse();
        let tag = msg.tag;
        if self.kind == Kind::Consumer {
            self.log.log(
                Level::Error,
                format!("consumer cannot be subscribed to (subscription {tag})"),
            );
            msg.consumer
                .cancelled(tag, CancelReason::Cancel(Reason::custom("not a producer")));
            self.me.shared.subscriptions.ended(tag);
            return;
        }
        if self.consumers.contains_key(&tag) {
            self.log.log(
                Level::Error,
                format!("received duplicated subscription {tag}"),
            );
            msg.consumer
                .cancelled(tag, CancelReason::Cancel(Reason::DuplicatedSubscription));
            // The first subscription of this tag goes on: its entry stays active.
            return;
        }
        if let Some((old, reason)) = msg.current.take() {
            self.producer_cancel(old, CancelReason::Cancel(reason));
            if self.stopped() {
                return;
            }
        }
        let from = SubscriptionRef {
            tag,
            producer: Arc::new(self.me.mailbox.clone()),
        };
        let info = match msg.opts.info(tag) {
            Ok(info) => info,
            Err(e) => {
                msg.consumer
                    .cancelled(tag, CancelReason::Cancel(Reason::custom(e.message())));
                self.me.shared.subscriptions.ended(tag);
                return;
            }
        };
        self.consumers.insert(
            tag,
            ConsumerEntry {
                consumer: msg.consumer.clone(),
                from: from.clone(),
            },
        );
        match self.invoke(|s, ctx| s.handle_subscribe(Peer::Consumer, &info, &from, ctx)) {
            None => return,
            Some(Ok(Demand::Automatic)) => {}
            Some(Ok(Demand::Manual)) => {
                self.stop = Some(Reason::BadReturn(Arc::from(
                    "handle_subscribe returned Demand::Manual for a consumer; producers only accept Automatic",
                )));
                return;
            }
            Some(Err(reason)) => {
                self.stop = Some(reason);
                return;
            }
        }
        self.dispatch_out();
        if self.stopped() {
            return;
        }
        let subscriber = Subscriber {
            tag,
            consumer_id: msg.consumer_id,
            consumer: msg.consumer.clone(),
            owner: self.owner.clone(),
        };
        match self.dispatcher.subscribe(subscriber, &msg.opts) {
            Ok(k) => {
                super::super::trace::subscribed(
                    "consumer",
                    tag.id(),
                    info.max_demand,
                    info.min_demand,
                );
                self.serve_demand(k)
            }
            Err(reason) => {
                // Rejected by the dispatcher: the consumer learns why; the producer
                // goes on (GenStage would also call the dispatcher's cancel here).
                self.consumers.remove(&tag);
                self.me.shared.subscriptions.ended(tag);
                msg.consumer
                    .cancelled(tag, CancelReason::Cancel(reason.clone()));
                self.invoke(|s, ctx| s.handle_cancel(CancelReason::Cancel(reason), &from, ctx));
                self.dispatch_out();
            }
        }
    }

    pub(super) fn producer_ask(&mut self, tag: Tag, n: usize) {
        if !self.consumers.contains_key(&tag) {
            // GenStage answers `{:cancel, :unknown_subscription}`, silently; we have no
            // address for an unknown tag, so it is logged instead, at info level: the
            // usual cause is benign, a consumer that cancelled and still re-asked for
            // events that were on their way before our confirmation reached it.
            self.log.log(
                Level::Info,
                format!("received ask for unknown subscription {tag}"),
            );
            return;
        }
        self.me.shared.metrics.demand_received(n);
        let k = self.dispatcher.ask(tag, n);
        self.serve_demand(k);
    }

    pub(super) fn producer_cancel(&mut self, tag: Tag, reason: CancelReason) {
        let Some(entry) = self.consumers.remove(&tag) else {
            return;
        };
        self.me.shared.subscriptions.ended(tag);
        super::super::trace::cancelled("consumer", tag.id(), reason.reason());
        if let CancelReason::Cancel(r) = &reason {
            entry
                .consumer
                .cancelled(tag, CancelReason::Cancel(r.clone()));
        }
        self.invoke(|s, ctx| s.handle_cancel(reason, &entry.from, ctx));
        self.dispatch_out();
        if self.stopped() {
            return;
        }
        if self.consumers.is_empty() {
            if let Some(r) = self.deferred_stop.take() {
                // Nobody is left to take the buffered output the stop waited for.
                self.stop = Some(r);
                return;
            }
        }
        let k = self.dispatcher.cancel(tag);
        self.serve_demand(k);
    }

    /// Demand reported by the dispatcher.
    pub(super) fn serve_demand(&mut self, k: usize) {
        if self.stopped() {
            return;
        }
        match self.kind {
            Kind::Producer => {
                if k > 0 {
                    self.producer_demand(k);
                }
                self.offer_buffer();
            }
            Kind::ProducerConsumer => {
                // As GenStage does after every dispatcher callback, even one reporting
                // no new demand: serve the whole outstanding demand from the buffer
                // first. A consumer whose ask is covered by a departed consumer's
                // pending demand is then served the buffered events, in order.
                self.counter = self.counter.saturating_add(k);
                let outstanding = self.counter;
                self.take_from_buffer(outstanding);
                self.process_queue();
            }
            Kind::Consumer => {}
        }
    }

    /// Offers buffered events that the dispatcher would deliver beyond the demand it
    /// reported ([`Dispatcher::buffered_demand`]). Costs one check of the buffer when
    /// it is empty, the usual case.
    pub(super) fn offer_buffer(&mut self) {
        if self.buffer.is_empty() || self.accumulate.is_some() || self.stopped() {
            return;
        }
        let owed = self.dispatcher.buffered_demand();
        if owed > 0 {
            self.take_from_buffer(owed);
        }
    }

    /// A producer's demand: buffer first, then `handle_demand` (or store it while
    /// accumulating: all of it, the buffer is served at replay so that its events keep
    /// their place ahead of those emitted meanwhile).
    pub(super) fn producer_demand(&mut self, k: usize) {
        if let Some(acc) = &mut self.accumulate {
            acc.push_back(Accumulated::Demand(k));
            return;
        }
        let k = self.buffer_first(k);
        if k == 0 || self.stopped() {
            return;
        }
        self.demand_callback(k);
    }

    /// Serves what the buffer can of new demand `k` and returns the demand left for
    /// `handle_demand`. GenStage's rule is buffer first: buffered events meet new
    /// demand. A dispatcher whose forwarded demand already counts the buffered events
    /// ([`Dispatcher::buffer_in_forwarded_demand`]: they were produced for it) returns
    /// new demand `k` beyond them: the buffer is offered to the demand it reports
    /// ([`Dispatcher::buffered_demand`]), and all of `k` goes to `handle_demand`.
    /// Serving `k` from that buffer would count those events twice and leave the
    /// producer owing nothing while the dispatcher waits for them.
    fn buffer_first(&mut self, k: usize) -> usize {
        if self.dispatcher.buffer_in_forwarded_demand() {
            self.offer_buffer();
            k
        } else {
            self.take_from_buffer(k)
        }
    }

    /// Calls `handle_demand(k)` and dispatches what it emitted.
    pub(super) fn demand_callback(&mut self, k: usize) {
        let handle_demand = self.cb.handle_demand;
        self.me.shared.metrics.batch();
        let _span = super::super::trace::batch("handle_demand", k);
        self.invoke(|s, ctx| handle_demand(s, k, ctx));
        self.dispatch_out();
    }

    /// Serves up to `k` demand from the buffer; returns what is left.
    pub(super) fn take_from_buffer(&mut self, mut k: usize) -> usize {
        while k > 0 && !self.buffer.is_empty() && !self.stopped() {
            let taken = self.buffer.take(k);
            if taken.events.is_empty() && taken.infos.is_empty() {
                break;
            }
            let n = taken.events.len();
            // Events that the dispatcher cannot take now go back to the front of the
            // buffer, with the infos behind them: appending them (as GenStage does)
            // would put them behind newer events. It happens when the demand being
            // served was already met by events emitted beyond demand (an accumulated
            // demand replayed late, a departed consumer's pending demand).
            let left = self.dispatch_buffered(taken.events);
            k -= n - left.len();
            if !left.is_empty() {
                self.buffer.unshift(left, taken.infos);
                break;
            }
            for id in taken.infos {
                self.dispatcher.info(PendingInfo {
                    id,
                    owner: self.owner.clone(),
                });
            }
        }
        self.me.shared.metrics.buffered(self.buffer.len());
        k
    }

    /// Dispatches events taken from the buffer; returns what the dispatcher left.
    /// Hands `events` to the dispatcher now and returns what it could not deliver.
    /// Shared by fresh events and events taken from the buffer, so both get the same
    /// accounting and the dispatcher's errors and released demand are always seen.
    pub(super) fn dispatch_buffered(&mut self, events: Vec<S::Out>) -> Vec<S::Out> {
        if events.is_empty() {
            return events;
        }
        let n = events.len();
        let left = self.dispatcher.dispatch(events);
        if let Some(reason) = self.dispatcher.take_error() {
            self.request_stop(reason);
        }
        let released = self.dispatcher.take_demand();
        if released > 0 {
            let _ = self.me.exec(move |rt| rt.serve_demand(released));
        }
        let delivered = n - left.len();
        self.me.shared.metrics.events_out(delivered);
        #[cfg(feature = "metrics")]
        self.me.shared.metrics.sync_stalls();
        if self.kind == Kind::ProducerConsumer {
            self.counter = self.counter.saturating_sub(delivered);
        }
        left
    }

    pub(super) fn dispatch_events(&mut self, events: Vec<S::Out>) {
        if events.is_empty() {
            return;
        }
        if let Some(acc) = &mut self.accumulate {
            acc.push_back(Accumulated::Dispatch(events));
            return;
        }
        let left = self.dispatch_buffered(events);
        if !left.is_empty() {
            self.buffer_events(left);
        }
    }

    pub(super) fn buffer_events(&mut self, events: Vec<S::Out>) {
        let stored = self.buffer.store(events);
        let metrics = &self.me.shared.metrics;
        metrics.buffered(self.buffer.len());
        if stored.discarded > 0 {
            metrics.discarded(stored.discarded);
            super::super::trace::discarded(stored.discarded);
            let d = stored.discarded;
            let stage = &mut self.stage;
            let print =
                catch_unwind(AssertUnwindSafe(|| stage.format_discarded(d))).unwrap_or(true);
            if print {
                self.log.log(
                    Level::Warning,
                    format!(
                        "producer {} has discarded {d} events from buffer",
                        self.me.shared.name
                    ),
                );
            }
        }
        for id in stored.released {
            self.owner.release_info(id);
        }
    }
}
