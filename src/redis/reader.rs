//! The source's reader thread: the only place that waits on `XREADGROUP`.
//!
//! It reads as many entries as the stage gave it credit for (the consumers' unmet
//! demand), hands them to the stage as one info message per read, and otherwise
//! waits on its orders. First it takes up this consumer's own pending entries (left
//! by an earlier run under the same name, or by a reply lost with a connection),
//! then it reads new ones, and every so often it takes over entries that other
//! consumers left idle for too long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError};
use rustc_hash::FxHashMap;

use crate::stage::StageRef;

use super::conn::{self, DeadLetter, Trouble};
use super::entry::{RawEntry, StreamEntry, StreamId};
use super::shared::Inner;
use super::{Mail, RedisSourceMail, RedisStreamSource};

/// How often the group's lag is sampled while entries keep coming.
const LAG_SAMPLE: Duration = Duration::from_secs(1);

pub(crate) struct Reader {
    inner: Arc<Inner>,
    stage: StageRef<RedisStreamSource>,
    con: Option<Connection>,
    backoff: Duration,
    /// A connection was lost since the last successful connect.
    dropped: bool,
    /// `Some(after)` while re-reading this consumer's own pending entries (from
    /// the start when `after` is `None`).
    recovering: Option<Option<StreamId>>,
    claim_cursor: StreamId,
    next_claim: Instant,
    last_lag: Option<Instant>,
}

/// The reader's socket timeout: a `BLOCK` read answers within `block`; what does
/// not answer well after that is a dead connection (a server gone without a reset).
pub(crate) fn read_timeout(inner: &Inner) -> Duration {
    inner.options.block + inner.options.connect_timeout
}

fn claim_interval(inner: &Inner) -> Duration {
    (inner.options.claim_idle / 2).clamp(Duration::from_millis(1), Duration::from_secs(10))
}

impl Reader {
    pub(crate) fn new(
        inner: Arc<Inner>,
        stage: StageRef<RedisStreamSource>,
        con: Connection,
    ) -> Self {
        Reader {
            backoff: inner.options.backoff_initial,
            inner,
            stage,
            con: Some(con),
            dropped: false,
            recovering: Some(None),
            claim_cursor: StreamId::default(),
            // Entries a dead consumer left are worth taking at once.
            next_claim: Instant::now(),
            last_lag: None,
        }
    }

    pub(crate) fn run(mut self) {
        if let Some(con) = self.con.as_mut() {
            if let Ok(id) = redis::cmd("CLIENT").arg("ID").query::<u64>(con) {
                self.inner
                    .reader_id
                    .store(id, std::sync::atomic::Ordering::Relaxed);
            }
        }
        while let Some(credit) = self.wait_credit() {
            if self.con.is_none() && !self.connect() {
                break;
            }
            let count = credit.min(self.inner.options.max_count);
            let result = if let Some(after) = self.recovering {
                self.recover(after, count)
            } else if Instant::now() >= self.next_claim {
                self.reclaim(count)
            } else {
                self.read(count)
            };
            let go_on = match result {
                Ok(go_on) => go_on,
                Err(e) => self.trouble(e),
            };
            if !go_on {
                break;
            }
        }
    }

    /// Waits until the stage wants entries; `None` once told to stop, or once
    /// the stage is gone without telling (killed: its `terminate` did not run).
    fn wait_credit(&self) -> Option<usize> {
        let mut control = self.inner.control.lock();
        loop {
            if control.stop {
                return None;
            }
            if control.credit > 0 {
                return Some(control.credit);
            }
            let timeout = self
                .inner
                .wake
                .wait_for(&mut control, Duration::from_secs(1));
            if timeout.timed_out() && !self.stage.is_alive() {
                return None;
            }
        }
    }

    fn con(&mut self) -> &mut Connection {
        self.con.as_mut().expect("connected before every command")
    }

    /// Connects, with backoff between failed attempts; false if told to stop
    /// meanwhile or the failure is fatal (the stage is told).
    fn connect(&mut self) -> bool {
        let name = conn::client_name("reader", &self.inner.options.consumer);
        loop {
            match conn::connect(&self.inner.options, &name, Some(read_timeout(&self.inner))) {
                Ok(mut con) => {
                    if let Ok(id) = redis::cmd("CLIENT").arg("ID").query::<u64>(&mut con) {
                        self.inner
                            .reader_id
                            .store(id, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.con = Some(con);
                    if self.dropped {
                        self.dropped = false;
                        self.inner.counters.reconnects.add(1);
                        log::info!(
                            "redis stream {}: reader reconnected to {}",
                            self.inner.options.stream,
                            self.inner.options.url
                        );
                    }
                    self.backoff = self.inner.options.backoff_initial;
                    // A reply lost with the connection may have delivered entries
                    // to this consumer: they are pending, and taken up first.
                    self.recovering = Some(None);
                    return true;
                }
                Err(e) if conn::classify(&e) == Trouble::Fatal => {
                    self.fail(format!("cannot connect to {}: {e}", self.inner.options.url));
                    return false;
                }
                Err(e) => {
                    log::warn!(
                        "redis stream {}: cannot connect to {} ({e}); retrying in {:?}",
                        self.inner.options.stream,
                        self.inner.options.url,
                        self.backoff
                    );
                    if !self.wait_backoff() {
                        return false;
                    }
                }
            }
        }
    }

    fn wait_backoff(&mut self) -> bool {
        let go_on = self.inner.pause(self.backoff);
        self.backoff = (self.backoff * 2).min(self.inner.options.backoff_max);
        go_on
    }

    /// Handles a failed command; false if the reader must end.
    fn trouble(&mut self, e: RedisError) -> bool {
        if !self.inner.is_taking() {
            // Halted or stopped: nothing to repair (and a group made again now
            // would make again a stream someone just deleted).
            return false;
        }
        let stream = &self.inner.options.stream;
        match conn::classify(&e) {
            Trouble::Reconnect => {
                log::warn!("redis stream {stream}: reader lost its connection ({e}); reconnecting");
                self.con = None;
                self.dropped = true;
                self.wait_backoff()
            }
            Trouble::Busy => {
                log::warn!(
                    "redis stream {stream}: Redis is busy ({e}); retrying in {:?}",
                    self.backoff
                );
                self.wait_backoff()
            }
            Trouble::NoGroup => {
                log::warn!(
                    "redis stream {stream}: group {} is gone (stream deleted or Redis restarted \
                     without its data); creating it again",
                    self.inner.options.group
                );
                let inner = self.inner.clone();
                match conn::create_group(self.con(), &inner.options) {
                    Ok(_) => true,
                    Err(e) if conn::classify(&e) == Trouble::NoGroup => {
                        self.fail(format!("cannot create group: {e}"));
                        false
                    }
                    Err(e) => self.trouble(e),
                }
            }
            Trouble::Fatal => {
                self.fail(e.to_string());
                false
            }
        }
    }

    fn fail(&self, error: String) {
        let message = format!(
            "redis stream {} (group {}, consumer {}): {error}",
            self.inner.options.stream, self.inner.options.group, self.inner.options.consumer
        );
        log::error!("{message}");
        let _ = self.stage.send_info(RedisSourceMail(Mail::Failed(message)));
    }

    /// One page of this consumer's own pending entries (those this process does not
    /// hold), taken again with `XCLAIM` so that their delivery counts go up.
    fn recover(&mut self, after: Option<StreamId>, count: usize) -> Result<bool, RedisError> {
        let inner = self.inner.clone();
        let o = &inner.options;
        let rows = conn::own_pending(self.con(), o, after, count)?;
        let Some(&(last, _)) = rows.last() else {
            self.recovering = None;
            return Ok(true);
        };
        self.recovering = Some(Some(last));
        let counts: FxHashMap<StreamId, u64> = {
            let held = inner.held.lock();
            rows.into_iter()
                .filter(|(id, _)| !held.contains_key(id))
                .collect()
        };
        if counts.is_empty() {
            return Ok(true);
        }
        let mut ids: Vec<StreamId> = counts.keys().copied().collect();
        ids.sort_unstable();
        let entries = conn::claim(self.con(), o, &ids)?;
        self.missing(&ids, &entries)?;
        // XCLAIM counted one more delivery.
        self.hand_over(entries, |id| counts.get(&id).map_or(1, |n| n + 1), true)
    }

    /// Entries of `asked` that a claim did not return: acknowledged by someone in
    /// the meantime, or gone from the stream (trimmed or deleted) and so lost.
    fn missing(&mut self, asked: &[StreamId], got: &[RawEntry]) -> Result<(), RedisError> {
        if asked.len() == got.len() {
            return Ok(());
        }
        let got: rustc_hash::FxHashSet<StreamId> = got.iter().map(|(id, _)| *id).collect();
        let missing: Vec<StreamId> = asked
            .iter()
            .copied()
            .filter(|id| !got.contains(id))
            .collect();
        let inner = self.inner.clone();
        let exist: rustc_hash::FxHashSet<StreamId> =
            conn::fetch(self.con(), &inner.options, &missing)?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
        let lost: Vec<StreamId> = missing
            .into_iter()
            .filter(|id| !exist.contains(id))
            .collect();
        self.lost(&lost)
    }

    /// Counts and reports entries that were pending but are gone from the stream,
    /// and makes sure they stop being pending.
    fn lost(&mut self, ids: &[StreamId]) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        conn::forget(self.con(), &inner.options, ids)?;
        inner.counters.lost.add(ids.len());
        log::warn!(
            "redis stream {}: {} pending entries no longer exist in the stream (trimmed or \
             deleted before they were acknowledged) and are lost: {}",
            inner.options.stream,
            ids.len(),
            show_ids(ids)
        );
        Ok(())
    }

    /// Takes over entries other consumers left idle longer than `claim_idle`.
    fn reclaim(&mut self, count: usize) -> Result<bool, RedisError> {
        let inner = self.inner.clone();
        let o = &inner.options;
        let cursor = self.claim_cursor;
        let claim = conn::autoclaim(self.con(), o, cursor, count)?;
        self.claim_cursor = claim.cursor;
        if claim.cursor == StreamId::default() {
            // A whole pass over the pending list: look again later.
            self.next_claim = Instant::now() + claim_interval(&inner);
        }
        if !claim.deleted.is_empty() {
            // XAUTOCLAIM already removed them from the pending list.
            inner.counters.lost.add(claim.deleted.len());
            log::warn!(
                "redis stream {}: {} pending entries of idle consumers no longer exist in the \
                 stream (trimmed or deleted before they were acknowledged) and are lost: {}",
                o.stream,
                claim.deleted.len(),
                show_ids(&claim.deleted)
            );
        }
        // This consumer's own entries, idle because the pipeline is slow, are in
        // this process's hands already.
        let entries: Vec<RawEntry> = {
            let held = inner.held.lock();
            claim
                .entries
                .into_iter()
                .filter(|(id, _)| !held.contains_key(id))
                .collect()
        };
        if entries.is_empty() {
            return Ok(true);
        }
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            let id = id.to_string();
            pipe.cmd("XPENDING")
                .arg(&o.stream)
                .arg(&o.group)
                .arg(&id)
                .arg(&id)
                .arg(1)
                .arg(&o.consumer);
        }
        let replies: Vec<redis::Value> = pipe.query(self.con())?;
        let mut counts = FxHashMap::default();
        for reply in replies {
            counts.extend(super::entry::parse_pending(reply)?);
        }
        self.hand_over(entries, |id| counts.get(&id).copied().unwrap_or(1), true)
    }

    /// New entries, waiting up to `block` for some.
    fn read(&mut self, count: usize) -> Result<bool, RedisError> {
        let inner = self.inner.clone();
        let raw = conn::read_new(self.con(), &inner.options, count)?;
        let now = Instant::now();
        if raw.is_empty() || self.last_lag.map_or(true, |t| now - t >= LAG_SAMPLE) {
            self.last_lag = Some(now);
            let info = conn::group_info(self.con(), &inner.options)?;
            if let Some((pending, lag)) = info {
                inner.counters.set_lag(lag);
                // Nothing new (the read just said so), nothing added since (lag),
                // nothing pending with anyone: the work is done.
                if raw.is_empty()
                    && inner.options.stop_when_idle
                    && pending == 0
                    && lag.unwrap_or(0) == 0
                {
                    let _ = self.stage.send_info(RedisSourceMail(Mail::Idle));
                    return Ok(false);
                }
            }
        }
        if raw.is_empty() {
            return Ok(true);
        }
        self.hand_over(raw, |_| 1, false)
    }

    /// Hands entries to the stage, after moving those over the delivery limit to
    /// the dead-letter stream and accounting for those gone from the stream.
    /// `deliveries` gives each entry's delivery count, this delivery included.
    fn hand_over(
        &mut self,
        raw: Vec<RawEntry>,
        deliveries: impl Fn(StreamId) -> u64,
        reclaimed: bool,
    ) -> Result<bool, RedisError> {
        let inner = self.inner.clone();
        let max = u64::from(inner.options.max_deliveries);
        let mut entries = Vec::with_capacity(raw.len());
        let mut gone = Vec::new();
        let mut dead = Vec::new();
        for (id, fields) in raw {
            let n = deliveries(id);
            match fields {
                None => gone.push(id),
                Some(fields) if n > max => dead.push(DeadLetter {
                    id,
                    fields,
                    deliveries: n - 1,
                    error: format!(
                        "not acknowledged after {} deliveries (max_deliveries {max})",
                        n - 1
                    ),
                }),
                Some(fields) => entries.push(StreamEntry {
                    id,
                    fields,
                    deliveries: n,
                }),
            }
        }
        self.lost(&gone)?;
        if !dead.is_empty() {
            conn::dead_letter(self.con(), &inner.options, &inner.dead_key, &dead)?;
            inner.counters.dead_lettered.add(dead.len());
            log::warn!(
                "redis stream {}: {} entries moved to {} after {max} deliveries: {}",
                inner.options.stream,
                dead.len(),
                inner.dead_key,
                show_ids(&dead.iter().map(|d| d.id).collect::<Vec<_>>())
            );
        }
        if entries.is_empty() {
            return Ok(true);
        }
        Ok(self.deliver(entries, reclaimed))
    }

    fn deliver(&mut self, entries: Vec<StreamEntry>, reclaimed: bool) -> bool {
        let inner = &self.inner;
        if !inner.is_taking() {
            // Halted: what was just read stays pending, for a later run or another
            // consumer.
            return false;
        }
        let fresh = inner.hold(entries, |e| (e.id, e.deliveries));
        if fresh.is_empty() {
            return true;
        }
        inner.counters.delivered.add(fresh.len());
        if reclaimed {
            inner.counters.reclaimed.add(fresh.len());
        }
        {
            let mut control = inner.control.lock();
            control.credit = control.credit.saturating_sub(fresh.len());
        }
        match self.stage.send_info(RedisSourceMail(Mail::Read(fresh))) {
            Ok(()) => true,
            Err(e) => {
                // The stage is gone: the entries stay pending in Redis.
                if let RedisSourceMail(Mail::Read(entries)) = e.into_inner() {
                    inner.release(entries.iter().map(|e| e.id));
                }
                false
            }
        }
    }
}

/// The first few ids of a list, for a log line.
pub(crate) fn show_ids(ids: &[StreamId]) -> String {
    let mut shown: Vec<String> = ids.iter().take(10).map(|id| id.to_string()).collect();
    if ids.len() > 10 {
        shown.push(format!("... ({} more)", ids.len() - 10));
    }
    shown.join(", ")
}
