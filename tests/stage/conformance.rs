//! Runs the conformance suite (`conformance/rules.rs`, rules of the Reactive
//! Streams TCK) against every built-in producer and dispatcher: `from_iter` with the
//! demand, broadcast, partition and fair dispatchers, and a producer-consumer with
//! the demand, broadcast and partition dispatchers.

#[macro_use]
mod rules;

use std::sync::Arc;

use rules::{Events, Factory, Fixture};
use stageflow::dispatcher::{
    BroadcastDispatcher, DemandDispatcher, Dispatcher, FairDispatcher, PartitionDispatcher,
};
use stageflow::prelude::*;
use stageflow::{PartitionKey, Source};

fn from_iter_with(events: Events, d: impl Dispatcher<u64>, all: bool, partition: bool) -> Fixture {
    let p = from_iter(events, FromIterOptions::new().dispatcher(d)).expect("producer starts");
    Fixture {
        source: p.source(),
        opts: Arc::new(move |k| {
            let o = SubscribeOptions::new();
            if partition {
                o.partition(k)
            } else {
                o
            }
        }),
        every_subscriber_gets_all: all,
        stop: Box::new(move || {
            p.kill();
        }),
        started: Arc::new(|| {}),
    }
}

/// An identity producer-consumer.
struct Identity;

impl Stage for Identity {
    type In = u64;
    type Out = u64;
}

impl ProducerConsumer for Identity {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_batch(events);
    }
}

fn through_identity(events: Events, d: impl Dispatcher<u64>, all: bool) -> Fixture {
    // The source waits (accumulate) until the first probe subscribed to the
    // producer-consumer, so that a short source cannot end the chain before.
    let p = from_iter(
        events,
        FromIterOptions::new().demand(DemandMode::Accumulate),
    )
    .expect("producer starts");
    let upstream = p.source();
    let pc = start_producer_consumer(
        Identity,
        ProducerConsumerOptions::new()
            .dispatcher(d)
            .subscribe_to(&p, SubscribeOptions::new().max_demand(10)),
    )
    .expect("producer-consumer starts");
    Fixture {
        source: pc.source(),
        opts: Arc::new(|_| SubscribeOptions::new()),
        every_subscriber_gets_all: all,
        stop: Box::new(move || {
            pc.kill();
            p.kill();
        }),
        started: Arc::new(move || upstream.forward()),
    }
}

fn one_partition() -> impl Dispatcher<u64> {
    PartitionDispatcher::with_hash(1, |x: u64| Some((x, PartitionKey::Index(0)))).unwrap()
}

const FROM_ITER_DEMAND: Factory = Factory {
    name: "from_iter / DemandDispatcher",
    start: |e| from_iter_with(e, DemandDispatcher::new(), true, false),
};

const FROM_ITER_BROADCAST: Factory = Factory {
    name: "from_iter / BroadcastDispatcher",
    start: |e| from_iter_with(e, BroadcastDispatcher::new(), true, false),
};

const FROM_ITER_PARTITION: Factory = Factory {
    name: "from_iter / PartitionDispatcher (1 partition)",
    start: |e| from_iter_with(e, one_partition(), true, true),
};

const FROM_ITER_PARTITION_DEFAULT_HASH: Factory = Factory {
    name: "from_iter / PartitionDispatcher (default hash, 1 partition)",
    start: |e| from_iter_with(e, PartitionDispatcher::new(1).unwrap(), true, true),
};

const FROM_ITER_FAIR: Factory = Factory {
    name: "from_iter / FairDispatcher",
    start: |e| from_iter_with(e, FairDispatcher::new(), true, false),
};

const PRODUCER_CONSUMER_DEMAND: Factory = Factory {
    name: "from_iter -> producer-consumer / DemandDispatcher",
    start: |e| through_identity(e, DemandDispatcher::new(), true),
};

const PRODUCER_CONSUMER_BROADCAST: Factory = Factory {
    name: "from_iter -> producer-consumer / BroadcastDispatcher",
    start: |e| through_identity(e, BroadcastDispatcher::new(), true),
};

const PRODUCER_CONSUMER_PARTITION: Factory = Factory {
    name: "from_iter -> producer-consumer / PartitionDispatcher (1 partition)",
    start: |e| {
        let mut f = through_identity(e, one_partition(), true);
        f.opts = Arc::new(|k| SubscribeOptions::new().partition(k));
        f
    },
};

conformance_suite!(from_iter_demand, FROM_ITER_DEMAND);
conformance_suite!(from_iter_broadcast, FROM_ITER_BROADCAST);
conformance_suite!(from_iter_partition, FROM_ITER_PARTITION);
conformance_suite!(
    from_iter_partition_default_hash,
    FROM_ITER_PARTITION_DEFAULT_HASH
);
conformance_suite!(from_iter_fair, FROM_ITER_FAIR);
conformance_suite!(producer_consumer_demand, PRODUCER_CONSUMER_DEMAND);
conformance_suite!(producer_consumer_broadcast, PRODUCER_CONSUMER_BROADCAST);
conformance_suite!(producer_consumer_partition, PRODUCER_CONSUMER_PARTITION);
