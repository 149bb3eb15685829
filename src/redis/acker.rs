//! The source's acknowledger: what the end of the pipeline calls after its commit.
//!
//! [`Acknowledger::ack`] runs on the caller's thread (the sink's) and must not wait
//! on Redis, so it only queues the batch; a thread with its own connection does the
//! work, merging the batches queued meanwhile into one pipelined `XACK`. Failed
//! entries are delivered again (`XCLAIM` to this consumer, which counts a delivery)
//! or, after their last delivery, moved to the dead-letter stream.
//!
//! The thread lives as long as anything can still acknowledge: it ends when the
//! last [`AckRef`](crate::pipeline::AckRef) of this source is gone (the queue's
//! senders are held by the acknowledger, which every message refers to), so
//! acknowledgements made after the source stage stopped (a drain) still reach
//! Redis.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, RedisError};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::pipeline::{AckId, Acknowledger, Failure, InFlight};
use crate::stage::StageRef;

use super::conn::{self, DeadLetter, Trouble};
use super::entry::{StreamEntry, StreamId};
use super::reader::show_ids;
use super::shared::Inner;
use super::{Mail, RedisSourceMail, RedisStreamSource};

/// Batches merged into one round of `XACK` at most (a bound on one pipeline).
const MERGE: usize = 100_000;

pub(crate) enum Work {
    Done {
        ok: Vec<StreamId>,
        failed: Vec<Failure>,
    },
    /// Wake the reader from its blocking read (the source halts or stops).
    Unblock,
}

/// The [`Acknowledger`] of a [`RedisStreamSource`]'s messages.
pub(crate) struct RedisAcker {
    // The queue is unbounded, and bounded all the same: each message is
    // acknowledged once, so it never holds more ids than are in flight.
    tx: Sender<Work>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAcker")
            .field("stream", &self.inner.options.stream)
            .field("group", &self.inner.options.group)
            .field("consumer", &self.inner.options.consumer)
            .finish()
    }
}

impl RedisAcker {
    pub(crate) fn new(inner: Arc<Inner>) -> (Self, Receiver<Work>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (RedisAcker { tx, inner }, rx)
    }

    pub(crate) fn unblock_reader(&self) {
        let _ = self.tx.send(Work::Unblock);
    }
}

impl Acknowledger for RedisAcker {
    fn ack(&self, successful: &[AckId], failed: &[Failure]) {
        let ok: Vec<StreamId> = successful.iter().map(|&id| StreamId::from(id)).collect();
        let work = Work::Done {
            ok,
            failed: failed.to_vec(),
        };
        if self.tx.send(work).is_err() {
            // Only if the thread died (a panic): the entries stay pending.
            log::error!(
                "redis stream {}: the acknowledger's thread is gone; {} acknowledgements \
                 not sent (the entries stay pending and will be delivered again)",
                self.inner.options.stream,
                successful.len() + failed.len()
            );
        }
    }

    fn in_flight(&self) -> Option<&InFlight> {
        Some(&self.inner.counters.in_flight)
    }
}

pub(crate) struct AckerThread {
    inner: Arc<Inner>,
    stage: StageRef<RedisStreamSource>,
    rx: Receiver<Work>,
    con: Option<Connection>,
    backoff: Duration,
    dropped: bool,
}

impl AckerThread {
    pub(crate) fn new(
        inner: Arc<Inner>,
        stage: StageRef<RedisStreamSource>,
        rx: Receiver<Work>,
        con: Connection,
    ) -> Self {
        AckerThread {
            backoff: inner.options.backoff_initial,
            inner,
            stage,
            rx,
            con: Some(con),
            dropped: false,
        }
    }

    pub(crate) fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            let mut unblock = false;
            let mut next = Some(first);
            while let Some(work) = next.take() {
                match work {
                    Work::Done { ok: o, failed: f } => {
                        ok.extend(o);
                        failed.extend(f);
                    }
                    Work::Unblock => unblock = true,
                }
                if ok.len() + failed.len() < MERGE {
                    next = self.rx.try_recv().ok();
                }
            }
            if unblock {
                self.unblock();
            }
            if !ok.is_empty() {
                self.ack(ok);
            }
            if !failed.is_empty() {
                self.failed(failed);
            }
        }
    }

    /// Runs `f` on a connection until it succeeds, reconnecting with backoff after
    /// a dropped connection; `None` on an error retrying cannot fix (logged).
    fn retry<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Connection, &Inner) -> Result<T, RedisError>,
    ) -> Option<T> {
        let inner = self.inner.clone();
        let stream = &inner.options.stream;
        loop {
            if self.con.is_none() {
                let name = conn::client_name("acker", &inner.options.consumer);
                let timeout = inner.options.connect_timeout * 6;
                match conn::connect(&inner.options, &name, Some(timeout)) {
                    Ok(con) => {
                        self.con = Some(con);
                        self.backoff = inner.options.backoff_initial;
                        if self.dropped {
                            self.dropped = false;
                            inner.counters.reconnects.add(1);
                            log::info!("redis stream {stream}: acknowledger reconnected");
                        }
                    }
                    Err(e) => {
                        log::warn!(
                            "redis stream {stream}: acknowledger cannot connect ({e}); \
                             retrying in {:?}",
                            self.backoff
                        );
                        self.wait_backoff();
                        continue;
                    }
                }
            }
            let con = self.con.as_mut().expect("connected above");
            match f(con, &inner) {
                Ok(v) => return Some(v),
                Err(e) => {
                    match conn::classify(&e) {
                        Trouble::Reconnect => {
                            log::warn!("redis stream {stream}: {what}: connection lost ({e}); reconnecting");
                            self.con = None;
                            self.dropped = true;
                            self.wait_backoff();
                        }
                        Trouble::Busy => {
                            log::warn!("redis stream {stream}: {what}: Redis is busy ({e})");
                            self.wait_backoff();
                        }
                        Trouble::NoGroup | Trouble::Fatal => {
                            log::error!(
                            "redis stream {stream}: {what} failed: {e} (the entries stay pending)"
                        );
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn wait_backoff(&mut self) {
        // This thread's own pause between attempts: nothing waits on it but the
        // acknowledgements, which cannot go anywhere until Redis answers.
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(self.inner.options.backoff_max);
    }

    fn unblock(&mut self) {
        let id = self
            .inner
            .reader_id
            .load(std::sync::atomic::Ordering::Relaxed);
        if id == 0 {
            return;
        }
        // Once: the reader also stops by itself when its read times out.
        if let Some(con) = self.con.as_mut() {
            let _ = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query::<redis::Value>(con);
        }
    }

    fn ack(&mut self, ids: Vec<StreamId>) {
        // Counted by what was asked, not by XACK's reply: when a reply is lost with
        // its connection, the second XACK finds the entries acknowledged already.
        if self
            .retry("XACK", |con, inner| conn::ack(con, &inner.options, &ids))
            .is_some()
        {
            self.inner.counters.acked.add(ids.len());
        }
        // Acknowledged, or left pending after an error retrying cannot fix: either
        // way no longer this process's to wait for.
        self.inner.release(ids);
    }

    fn failed(&mut self, failed: Vec<Failure>) {
        let max = u64::from(self.inner.options.max_deliveries);
        let mut again = Vec::new();
        let mut dead = Vec::new();
        {
            let held = self.inner.held.lock();
            for f in failed {
                let id = StreamId::from(f.id);
                let deliveries = held.get(&id).copied().unwrap_or(1);
                if deliveries >= max {
                    dead.push((id, deliveries, f.error));
                } else {
                    again.push((id, deliveries));
                }
            }
        }
        if !dead.is_empty() {
            self.dead_letter(dead);
        }
        if !again.is_empty() {
            self.redeliver(again);
        }
    }

    /// Moves entries that failed their last delivery to the dead-letter stream.
    fn dead_letter(&mut self, dead: Vec<(StreamId, u64, String)>) {
        let ids: Vec<StreamId> = dead.iter().map(|d| d.0).collect();
        let moved = self.retry("dead-lettering", |con, inner| {
            let o = &inner.options;
            // Only those still pending: after a reply lost with the connection,
            // the retry must not add a letter twice.
            let pending = still_pending(con, o, &ids)?;
            let fields: FxHashMap<StreamId, Vec<(String, Vec<u8>)>> =
                conn::fetch(con, o, &pending)?
                    .into_iter()
                    .filter_map(|(id, fields)| Some((id, fields?)))
                    .collect();
            let letters: Vec<DeadLetter> = dead
                .iter()
                .filter(|(id, ..)| pending.contains(id))
                .filter_map(|(id, deliveries, error)| {
                    Some(DeadLetter {
                        id: *id,
                        fields: fields.get(id)?.clone(),
                        deliveries: *deliveries,
                        error: error.clone(),
                    })
                })
                .collect();
            let gone: Vec<StreamId> = pending
                .iter()
                .copied()
                .filter(|id| !fields.contains_key(id))
                .collect();
            conn::dead_letter(con, o, &inner.dead_key, &letters)?;
            conn::forget(con, o, &gone)?;
            Ok((letters.len(), gone))
        });
        if let Some((n, gone)) = moved {
            self.inner.counters.dead_lettered.add(n);
            if n > 0 {
                log::warn!(
                    "redis stream {}: {n} entries moved to {} after failing {} deliveries",
                    self.inner.options.stream,
                    self.inner.dead_key,
                    self.inner.options.max_deliveries
                );
            }
            self.count_lost(&gone);
        }
        self.inner.release(ids);
    }

    /// Delivers failed entries again, to this consumer.
    fn redeliver(&mut self, again: Vec<(StreamId, u64)>) {
        let ids: Vec<StreamId> = again.iter().map(|a| a.0).collect();
        if !self.inner.is_taking() {
            // Halted: they stay pending, for a later run or another consumer.
            self.inner.release(ids);
            return;
        }
        let claimed = self.retry("redelivery (XCLAIM)", |con, inner| {
            let entries = conn::claim(con, &inner.options, &ids)?;
            let got: FxHashSet<StreamId> = entries.iter().map(|(id, _)| *id).collect();
            let missing: Vec<StreamId> =
                ids.iter().copied().filter(|id| !got.contains(id)).collect();
            let exist: FxHashSet<StreamId> = conn::fetch(con, &inner.options, &missing)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let gone: Vec<StreamId> = missing
                .into_iter()
                .filter(|id| !exist.contains(id))
                .collect();
            conn::forget(con, &inner.options, &gone)?;
            Ok((entries, gone))
        });
        let Some((raw, gone)) = claimed else {
            self.inner.release(ids);
            return;
        };
        self.count_lost(&gone);
        let counts: FxHashMap<StreamId, u64> = again.into_iter().collect();
        let entries: Vec<StreamEntry> = raw
            .into_iter()
            .filter_map(|(id, fields)| {
                Some(StreamEntry {
                    id,
                    fields: fields?,
                    deliveries: counts.get(&id).copied().unwrap_or(1) + 1,
                })
            })
            .collect();
        let back: FxHashSet<StreamId> = entries.iter().map(|e| e.id).collect();
        {
            let mut held = self.inner.held.lock();
            for e in &entries {
                if let Some(n) = held.get_mut(&e.id) {
                    *n = e.deliveries;
                }
            }
        }
        // Entries neither delivered again nor lost (acknowledged meanwhile by a
        // consumer that took them over) are no longer this process's.
        self.inner
            .release(ids.into_iter().filter(|id| !back.contains(id)));
        if entries.is_empty() {
            return;
        }
        self.inner.counters.redelivered.add(entries.len());
        self.inner.counters.delivered.add(entries.len());
        if let Err(e) = self
            .stage
            .send_info(RedisSourceMail(Mail::Redelivered(entries)))
        {
            if let RedisSourceMail(Mail::Redelivered(entries)) = e.into_inner() {
                self.inner.release(entries.iter().map(|e| e.id));
            }
        }
    }

    fn count_lost(&self, gone: &[StreamId]) {
        if gone.is_empty() {
            return;
        }
        self.inner.counters.lost.add(gone.len());
        log::warn!(
            "redis stream {}: {} failed entries no longer exist in the stream (trimmed or \
             deleted) and are lost: {}",
            self.inner.options.stream,
            gone.len(),
            show_ids(gone)
        );
    }
}

/// Which of `ids` are still pending in the group (one pipelined `XPENDING` each).
fn still_pending(
    con: &mut Connection,
    o: &super::RedisStreamOptions,
    ids: &[StreamId],
) -> Result<Vec<StreamId>, RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        let id = id.to_string();
        pipe.cmd("XPENDING")
            .arg(&o.stream)
            .arg(&o.group)
            .arg(&id)
            .arg(&id)
            .arg(1);
    }
    let replies: Vec<redis::Value> = pipe.query(con)?;
    let mut out = Vec::new();
    for reply in replies {
        out.extend(
            super::entry::parse_pending(reply)?
                .into_iter()
                .map(|(id, _)| id),
        );
    }
    Ok(out)
}
