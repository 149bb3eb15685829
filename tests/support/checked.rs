//! Stages that check the demand invariant from the inside, for the property and stress
//! tests: a finite [`Finite`] with a configurable emission pattern, an identity
//! [`Relay`] (producer-consumer) and a [`Sink`] (consumer, automatic or manual demand).
//!
//! Every consumer side re-computes, per subscription, how much it has asked for
//! (GenStage's rule for automatic subscriptions, the asks it made for manual ones) and
//! panics — which stops the stage with `Reason::Panic` and fails the test — if a batch
//! exceeds it, or if events of one producer arrive out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use stageflow::prelude::*;

/// Producer `p` emits `p * SPAN + i` for `i` in `0..len`.
pub const SPAN: u64 = 1 << 32;

/// How a [`Finite`] answers demand: each `handle_demand` (and each retry) takes the next
/// mode, cyclically.
#[derive(Copy, Clone, Debug)]
pub enum Emit {
    /// Half of the unmet demand (rounded up); the rest later, from a self-sent message.
    Fewer,
    /// Exactly the unmet demand.
    Exactly,
    /// The unmet demand plus this many events (they go to the producer's buffer).
    More(usize),
}

/// A finite producer of `base..base + len`, stopping normally once everything it
/// emitted has been dispatched (GenStage's `async_info(self(), :stop)` pattern).
pub struct Finite {
    next: u64,
    end: u64,
    pending: usize,
    modes: Vec<Emit>,
    step: usize,
    done: bool,
}

/// Emit `n` events now, demand or not (a cast).
pub struct Push(pub usize);
struct Tick;
struct Done;

impl Finite {
    pub fn new(index: u64, len: u64, modes: Vec<Emit>) -> Finite {
        assert!(len > 0 && len < SPAN, "a source emits at least one event");
        Finite {
            next: index * SPAN,
            end: index * SPAN + len,
            pending: 0,
            modes: if modes.is_empty() {
                vec![Emit::Exactly]
            } else {
                modes
            },
            step: 0,
            done: false,
        }
    }

    fn emit(&mut self, k: usize, ctx: &mut Context<'_, Self>) {
        let stop = (self.next + k as u64).min(self.end);
        ctx.emit_all(self.next..stop);
        self.next = stop;
        if self.next == self.end && !self.done {
            self.done = true;
            self.pending = 0;
            let _ = ctx.myself().async_info(Done);
        }
    }

    fn serve(&mut self, ctx: &mut Context<'_, Self>) {
        if self.pending == 0 || self.done {
            return;
        }
        let mode = self.modes[self.step % self.modes.len()];
        self.step += 1;
        let k = match mode {
            Emit::Fewer => self.pending.div_ceil(2),
            Emit::Exactly => self.pending,
            Emit::More(extra) => self.pending + extra,
        };
        self.pending -= k.min(self.pending);
        self.emit(k, ctx);
        if self.pending > 0 && !self.done {
            let _ = ctx.myself().send_info(Tick);
        }
    }
}

impl Stage for Finite {
    type In = Never;
    type Out = u64;
}

impl Producer for Finite {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        assert!(demand > 0);
        self.pending += demand;
        self.serve(ctx);
    }
}

impl HandleInfo<Tick> for Finite {
    fn handle_info(&mut self, _: Tick, ctx: &mut Context<'_, Self>) {
        self.serve(ctx);
    }
}

impl HandleInfo<Done> for Finite {
    fn handle_info(&mut self, _: Done, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

impl HandleCast<Push> for Finite {
    fn handle_cast(&mut self, p: Push, ctx: &mut Context<'_, Self>) {
        if !self.done {
            self.emit(p.0, ctx);
        }
    }
}

/// What one subscription has asked for and received.
enum Model {
    /// GenStage's rule: `demand` still owed.
    Auto {
        max: usize,
        min: usize,
        demand: usize,
    },
    /// Manual: asks counted (by whoever asks) in `asked`, before they are sent.
    Manual {
        asked: Arc<AtomicUsize>,
        received: usize,
    },
}

impl Model {
    fn check(&mut self, who: &str, n: usize) {
        match self {
            Model::Auto { max, min, demand } => {
                assert!(
                    n <= *max - *min,
                    "{who}: batch of {n} events exceeds max_demand - min_demand = {}",
                    *max - *min
                );
                assert!(
                    n <= *demand,
                    "{who}: received {n} events but had asked for only {demand} more"
                );
                let d = *demand - n;
                *demand = if d <= *min { *max } else { d };
            }
            Model::Manual { asked, received } => {
                let a = asked.load(Ordering::SeqCst);
                assert!(
                    *received + n <= a,
                    "{who}: received {} events in all but had asked for only {a}",
                    *received + n
                );
                *received += n;
            }
        }
    }
}

/// The consumer side both `Relay` and `Sink` share.
struct Inlet {
    who: String,
    models: HashMap<Tag, Model>,
    open: usize,
    /// Last event per (subscription, producer): order holds per path, not across
    /// paths (a diamond delivers one producer's events through two relays).
    last: HashMap<(Tag, u64), u64>,
    /// Manual subscriptions: the shared ask counter and how much to ask at subscribe
    /// time and after each batch (0: the test asks).
    manual: Option<(Arc<AtomicUsize>, usize)>,
}

impl Inlet {
    fn new(who: String, manual: Option<(Arc<AtomicUsize>, usize)>) -> Inlet {
        Inlet {
            who,
            models: HashMap::new(),
            open: 0,
            last: HashMap::new(),
            manual,
        }
    }

    fn subscribe(&mut self, info: &SubscriptionInfo, from: &SubscriptionRef) -> Demand {
        self.open += 1;
        match &self.manual {
            None => {
                self.models.insert(
                    from.tag(),
                    Model::Auto {
                        max: info.max_demand,
                        min: info.min_demand,
                        demand: info.max_demand,
                    },
                );
                Demand::Automatic
            }
            Some((asked, each)) => {
                assert!(self.models.is_empty(), "manual sinks have one subscription");
                self.models.insert(
                    from.tag(),
                    Model::Manual {
                        asked: asked.clone(),
                        received: 0,
                    },
                );
                if *each > 0 {
                    asked.fetch_add(*each, Ordering::SeqCst);
                    from.ask(*each);
                }
                Demand::Manual
            }
        }
    }

    fn events(&mut self, events: &[u64], from: &SubscriptionRef) {
        let model = self
            .models
            .get_mut(&from.tag())
            .unwrap_or_else(|| panic!("{}: events for unknown subscription", self.who));
        model.check(&self.who, events.len());
        for &e in events {
            let source = e / SPAN;
            if let Some(&prev) = self.last.get(&(from.tag(), source)) {
                assert!(
                    e > prev,
                    "{}: event {e} after {prev} from the same producer",
                    self.who
                );
            }
            self.last.insert((from.tag(), source), e);
        }
        if let Some((asked, each)) = &self.manual {
            if *each > 0 {
                asked.fetch_add(*each, Ordering::SeqCst);
                from.ask(*each);
            }
        }
    }

    /// True when `tag` was our last open subscription (tags of consumers subscribed to
    /// a relay are not ours and are ignored).
    fn cancel(&mut self, tag: Tag) -> bool {
        if self.models.remove(&tag).is_none() {
            return false;
        }
        self.open -= 1;
        self.open == 0
    }
}

/// An identity producer-consumer that checks what it receives. It stops normally, after
/// dispatching what it holds, once all its subscriptions have ended.
pub struct Relay {
    inlet: Inlet,
}

impl Relay {
    pub fn new(who: impl Into<String>) -> Relay {
        Relay {
            inlet: Inlet::new(who.into(), None),
        }
    }
}

impl Stage for Relay {
    type In = u64;
    type Out = u64;

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        Ok(match peer {
            Peer::Producer => self.inlet.subscribe(info, from),
            Peer::Consumer => Demand::Automatic,
        })
    }

    fn handle_cancel(
        &mut self,
        _: CancelReason,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.inlet.cancel(from.tag()) {
            let _ = ctx.myself().async_info(Done);
        }
    }
}

impl ProducerConsumer for Relay {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        self.inlet.events(&events, from);
        ctx.emit_batch(events);
    }
}

impl HandleInfo<Done> for Relay {
    fn handle_info(&mut self, _: Done, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// A consumer that checks what it receives and, when all its subscriptions have ended,
/// stops normally and reports every event it received, in arrival order.
pub struct Sink {
    inlet: Inlet,
    received: Vec<u64>,
    report: Sender<(String, Vec<u64>)>,
    subscriptions: Option<Sender<SubscriptionRef>>,
    /// Cancel every subscription (reason `Normal`) once this many events arrived.
    cancel_after: Option<usize>,
}

impl Sink {
    pub fn new(who: impl Into<String>, report: Sender<(String, Vec<u64>)>) -> Sink {
        Sink {
            inlet: Inlet::new(who.into(), None),
            received: Vec::new(),
            report,
            subscriptions: None,
            cancel_after: None,
        }
    }

    /// A manual sink: asks are counted in `asked` (by the sink and by anyone else who
    /// asks on its subscription); it asks `each` when subscribing and after each batch.
    pub fn manual(
        who: impl Into<String>,
        report: Sender<(String, Vec<u64>)>,
        asked: Arc<AtomicUsize>,
        each: usize,
    ) -> Sink {
        Sink {
            inlet: Inlet::new(who.into(), Some((asked, each))),
            received: Vec::new(),
            report,
            subscriptions: None,
            cancel_after: None,
        }
    }
}

impl Sink {
    /// Also send each subscription's `SubscriptionRef` to `tx` (to ask from outside).
    pub fn report_subscriptions(mut self, tx: Sender<SubscriptionRef>) -> Sink {
        self.subscriptions = Some(tx);
        self
    }

    /// Leave (cancel the subscription it got the events from) after `n` events; the
    /// events already on their way are still handled, then the sink stops.
    pub fn cancel_after(mut self, n: usize) -> Sink {
        self.cancel_after = Some(n);
        self
    }
}

impl Stage for Sink {
    type In = u64;
    type Out = Never;

    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if let Some(tx) = &self.subscriptions {
            let _ = tx.send(from.clone());
        }
        Ok(self.inlet.subscribe(info, from))
    }

    fn handle_cancel(
        &mut self,
        _: CancelReason,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.inlet.cancel(from.tag()) {
            ctx.stop(Reason::Normal);
        }
    }

    fn terminate(&mut self, _reason: &Reason) {
        let _ = self
            .report
            .send((self.inlet.who.clone(), std::mem::take(&mut self.received)));
    }
}

impl Consumer for Sink {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        self.inlet.events(&events, from);
        self.received.extend(events);
        if let Some(n) = self.cancel_after {
            if self.received.len() >= n {
                self.cancel_after = None;
                from.cancel(Reason::Normal);
            }
        }
    }
}

/// Transient: a producer finishing normally ends the subscription without stopping the
/// consumer, which stops by itself when all its producers are done; an abnormal end
/// still propagates (and fails the test).
pub fn transient(max: usize, min: usize) -> SubscribeOptions<u64> {
    SubscribeOptions::new()
        .max_demand(max)
        .min_demand(min)
        .cancel(CancelMode::Transient)
}
