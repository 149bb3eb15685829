//! Invariant 3 (no loss on normal completion) for producer-consumers whose output
//! waits in their buffer when their producer ends: the normal end must travel behind
//! those events, not ahead of them.

use stageflow::prelude::*;
use stageflow::StageStream;

/// Emits every event twice: its output outgrows the demand it was processed for.
struct Twice;
impl Stage for Twice {
    type In = u32;
    type Out = u32;
}
impl ProducerConsumer for Twice {
    fn handle_events(&mut self, e: Vec<u32>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(e.into_iter().flat_map(|x| [x, x]));
    }
}

#[test]
fn a_producer_consumer_delivers_its_buffer_before_a_normal_end() {
    let source = from_iter(0..1000u32, FromIterOptions::new()).unwrap();
    let twice = start_producer_consumer(
        Twice,
        ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
    )
    .unwrap();
    // One event per ask: most of the output waits in the buffer when the source ends.
    let got: Vec<u32> = StageStream::new()
        .subscribe(&twice, SubscribeOptions::new().max_demand(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 2000);
    assert_eq!(twice.join(), Reason::Normal);
}
