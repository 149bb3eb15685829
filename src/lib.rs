//! stageflow: Elixir's GenStage and Flow for synchronous Rust.
#![deny(missing_docs)]

pub mod error;
pub mod flow;
pub mod pipeline;
pub mod stage;

pub use error::{CallError, OptionsError, StartError, SubscribeError};
pub use stage::dispatcher;
pub use stage::log;
pub use stage::{
    from_iter, start_consumer, start_producer, start_producer_consumer, stream, BufferKeep,
    BufferSize, CancelMode, CancelReason, Consumer, ConsumerOptions, Context, Demand, DemandMode,
    FromIterOptions, HandleCall, HandleCast, HandleInfo, Init, Kind, Never, OnCancel, PartitionKey,
    Peer, Producer, ProducerConsumer, ProducerConsumerOptions, ProducerOptions, Reason, ReplyTo,
    Source, SourceRef, Stage, StageMetrics, StageRef, StageStream, StreamError, SubscribeOptions,
    SubscriptionInfo, SubscriptionRef, Tag,
};

/// Everything a stage program usually needs, in one `use`.
pub mod prelude {
    pub use crate::stage::{
        from_iter, start_consumer, start_producer, start_producer_consumer, stream, BufferKeep,
        BufferSize, CancelMode, CancelReason, Consumer, ConsumerOptions, Context, Demand,
        DemandMode, FromIterOptions, HandleCall, HandleCast, HandleInfo, Init, Never, Peer,
        Producer, ProducerConsumer, ProducerConsumerOptions, ProducerOptions, Reason, ReplyTo,
        Source, Stage, StageRef, SubscribeOptions, SubscriptionInfo, SubscriptionRef, Tag,
    };
}
