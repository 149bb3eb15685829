//! The Redis Streams source against a real Redis (compiled only with
//! `--features redis`; Redis at 127.0.0.1:6379, or `STAGEFLOW_REDIS_URL`). Each test
//! uses a stream key of its own and deletes it at the end.

mod reconnect;
mod source;
mod util;
