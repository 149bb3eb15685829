//! A panic outside user callbacks (here: in a custom dispatcher) must still end the
//! stage with a reason, run the exit protocol and wake everyone who waits.

use std::time::Duration;

use stageflow::dispatcher::{Dispatcher, Subscriber};
use stageflow::prelude::*;

struct Exploding;

impl Dispatcher<u32> for Exploding {
    fn subscribe(
        &mut self,
        _: Subscriber<u32>,
        _: &SubscribeOptions<u32>,
    ) -> Result<usize, Reason> {
        Ok(0)
    }
    fn cancel(&mut self, _: Tag) -> usize {
        0
    }
    fn ask(&mut self, _: Tag, n: usize) -> usize {
        n
    }
    fn dispatch(&mut self, _: Vec<u32>) -> Vec<u32> {
        panic!("dispatcher bug")
    }
}

struct Ones;

impl Stage for Ones {
    type In = Never;
    type Out = u32;
}

impl Producer for Ones {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(std::iter::repeat(1).take(demand));
    }
}

#[test]
fn a_panicking_dispatcher_stops_the_stage_with_a_reason_and_its_consumers_learn_it() {
    let producer = start_producer(Ones, ProducerOptions::new().dispatcher(Exploding)).unwrap();
    let mut s = stream(&producer);
    let first = s.next().expect("the stream reports the producer's end");
    let err = first.expect_err("no event can be delivered");
    assert_eq!(
        err.reason,
        Reason::Panic("stageflow engine: dispatcher bug".into()),
        "the exit reason names the engine and the panic"
    );
    let reason = producer
        .join_timeout(Duration::from_secs(10))
        .expect("the producer has exited");
    assert_eq!(
        reason,
        Reason::Panic("stageflow engine: dispatcher bug".into())
    );
}
