//! One connection of the source (its reader's or its acknowledger's), remade after
//! it drops, and the stream commands both of them send.

use std::time::Duration;

use redis::{Connection, RedisError, Value};

use super::entry::{self, AutoClaim, RawEntry, StreamId};
use super::options::RedisStreamOptions;

/// What to do about a failed command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Trouble {
    /// The connection is gone or out of step (an I/O error, a read that timed out
    /// with its reply still to come): drop it, wait, connect again.
    Reconnect,
    /// The group is gone (the stream was deleted, or Redis restarted without
    /// its data): create it again, then go on.
    NoGroup,
    /// Redis is busy for a while (loading its data, a long script, a replica
    /// being promoted): wait and try again on the same connection.
    Busy,
    /// A mistake retrying cannot fix (the key holds another type, a reply we do
    /// not understand, bad credentials).
    Fatal,
}

pub(crate) fn classify(e: &RedisError) -> Trouble {
    use redis::ErrorKind::*;
    // UNBLOCKED: the stream was deleted while a read waited on it.
    if matches!(e.code(), Some("NOGROUP" | "UNBLOCKED")) {
        return Trouble::NoGroup;
    }
    match e.kind() {
        IoError | ClientError | ParseError => Trouble::Reconnect,
        BusyLoadingError | TryAgain | MasterDown | ReadOnly | ClusterDown => Trouble::Busy,
        _ if e.is_connection_dropped() || e.is_timeout() || e.is_io_error() => Trouble::Reconnect,
        ExtensionError | ResponseError if matches!(e.code(), Some("BUSY" | "LOADING")) => {
            Trouble::Busy
        }
        _ => Trouble::Fatal,
    }
}

/// A connection name Redis accepts (`CLIENT SETNAME` refuses spaces), so that
/// `CLIENT LIST` shows which worker each connection belongs to.
pub(crate) fn client_name(role: &str, consumer: &str) -> String {
    let consumer: String = consumer
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("stageflow-{role}:{consumer}")
}

/// Opens a connection named `name`, with `read_timeout` on its socket.
pub(crate) fn connect(
    options: &RedisStreamOptions,
    name: &str,
    read_timeout: Option<Duration>,
) -> Result<Connection, RedisError> {
    let client = redis::Client::open(options.url.as_str())?;
    let mut con = client.get_connection_with_timeout(options.connect_timeout)?;
    con.set_read_timeout(read_timeout)?;
    // Writes never wait long on a healthy server: a stuck one is a dropped one.
    con.set_write_timeout(Some(options.connect_timeout))?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .exec(&mut con)?;
    Ok(con)
}

/// Writes `ms-seq` into `out` (cleared first).
pub(crate) fn write_id(out: &mut Vec<u8>, id: StreamId) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "{}-{}", id.ms, id.seq);
}

/// `XGROUP CREATE stream group 0 MKSTREAM`, an existing group being fine. From `0`:
/// entries added before the first consumer started are read too.
pub(crate) fn create_group(
    con: &mut Connection,
    options: &RedisStreamOptions,
) -> Result<bool, RedisError> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&options.stream)
        .arg(&options.group)
        .arg("0")
        .arg("MKSTREAM")
        .exec(con);
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `XREADGROUP ... COUNT count BLOCK block STREAMS stream >`: new entries only.
pub(crate) fn read_new(
    con: &mut Connection,
    o: &RedisStreamOptions,
    count: usize,
) -> Result<Vec<RawEntry>, RedisError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&o.group)
        .arg(&o.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(o.block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(&o.stream)
        .arg(">")
        .query(con)?;
    entry::parse_read_reply(reply)
}

/// This consumer's pending entries after `after` (exclusive; from the start when
/// `None`), with their delivery counts; at most `count`.
pub(crate) fn own_pending(
    con: &mut Connection,
    o: &RedisStreamOptions,
    after: Option<StreamId>,
    count: usize,
) -> Result<Vec<(StreamId, u64)>, RedisError> {
    let start = match after {
        None => "-".to_string(),
        Some(id) => format!("({id}"),
    };
    let reply: Value = redis::cmd("XPENDING")
        .arg(&o.stream)
        .arg(&o.group)
        .arg(start)
        .arg("+")
        .arg(count)
        .arg(&o.consumer)
        .query(con)?;
    entry::parse_pending(reply)
}

/// `XCLAIM stream group consumer 0 ids...`: takes the entries for this consumer,
/// counting one delivery each. Entries that no longer exist are left out of the
/// reply (and Redis drops them from the pending list).
pub(crate) fn claim(
    con: &mut Connection,
    o: &RedisStreamOptions,
    ids: &[StreamId],
) -> Result<Vec<RawEntry>, RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(&o.stream).arg(&o.group).arg(&o.consumer).arg(0);
    for id in ids {
        cmd.arg(id.to_string());
    }
    entry::parse_entries(cmd.query(con)?)
}

/// `XAUTOCLAIM stream group consumer claim_idle cursor COUNT count`.
pub(crate) fn autoclaim(
    con: &mut Connection,
    o: &RedisStreamOptions,
    cursor: StreamId,
    count: usize,
) -> Result<AutoClaim, RedisError> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(&o.stream)
        .arg(&o.group)
        .arg(&o.consumer)
        .arg(o.claim_idle.as_millis().max(1) as u64)
        .arg(cursor.to_string())
        .arg("COUNT")
        .arg(count)
        .query(con)?;
    entry::parse_autoclaim(reply)
}

/// Which of `ids` still exist in the stream, with their fields (one pipelined
/// `XRANGE id id` each).
pub(crate) fn fetch(
    con: &mut Connection,
    o: &RedisStreamOptions,
    ids: &[StreamId],
) -> Result<Vec<RawEntry>, RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        let id = id.to_string();
        pipe.cmd("XRANGE").arg(&o.stream).arg(&id).arg(&id);
    }
    let replies: Vec<Value> = pipe.query(con)?;
    let mut out = Vec::new();
    for reply in replies {
        out.extend(entry::parse_entries(reply)?);
    }
    Ok(out)
}

/// `XACK stream group ids...`, in chunks; returns how many Redis acknowledged.
pub(crate) fn ack(
    con: &mut Connection,
    o: &RedisStreamOptions,
    ids: &[StreamId],
) -> Result<u64, RedisError> {
    // Chunks keep one command's size reasonable; they go out in one pipeline.
    const CHUNK: usize = 10_000;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    let mut text = Vec::with_capacity(48);
    for chunk in ids.chunks(CHUNK) {
        let cmd = pipe.cmd("XACK").arg(&o.stream).arg(&o.group);
        for &id in chunk {
            // Formatted into one buffer: no allocation per id on the hot path.
            write_id(&mut text, id);
            cmd.arg(&text[..]);
        }
    }
    let counts: Vec<u64> = pipe.query(con)?;
    Ok(counts.iter().sum())
}

/// An entry on its way to the dead-letter stream.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) id: StreamId,
    pub(crate) fields: Vec<(String, Vec<u8>)>,
    pub(crate) deliveries: u64,
    pub(crate) error: String,
}

/// Adds every letter to the dead-letter stream (its fields, then `error`,
/// `deliveries` and `id`) and acknowledges them, in one `MULTI`/`EXEC`: either an
/// entry is in the dead-letter stream and no longer pending, or neither.
pub(crate) fn dead_letter(
    con: &mut Connection,
    o: &RedisStreamOptions,
    dead_key: &str,
    letters: &[DeadLetter],
) -> Result<(), RedisError> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for letter in letters {
        let cmd = pipe.cmd("XADD").arg(dead_key).arg("*");
        for (name, value) in &letter.fields {
            cmd.arg(name).arg(value.as_slice());
        }
        cmd.arg("error")
            .arg(&letter.error)
            .arg("deliveries")
            .arg(letter.deliveries)
            .arg("id")
            .arg(letter.id.to_string())
            .ignore();
    }
    let xack = pipe.cmd("XACK").arg(&o.stream).arg(&o.group);
    for letter in letters {
        xack.arg(letter.id.to_string());
    }
    xack.ignore();
    pipe.exec(con)
}

/// Pending entries that no longer exist in the stream, acknowledged so that they
/// stop being pending (they were counted as lost).
pub(crate) fn forget(
    con: &mut Connection,
    o: &RedisStreamOptions,
    ids: &[StreamId],
) -> Result<(), RedisError> {
    ack(con, o, ids).map(|_| ())
}

/// The group's `pending` and `lag` from `XINFO GROUPS` (`lag` is `None` when Redis
/// cannot tell); `None` when the group does not exist.
pub(crate) fn group_info(
    con: &mut Connection,
    o: &RedisStreamOptions,
) -> Result<Option<(u64, Option<u64>)>, RedisError> {
    let reply: Value = match redis::cmd("XINFO").arg("GROUPS").arg(&o.stream).query(con) {
        Ok(reply) => reply,
        // The stream is gone (deleted, or Redis restarted without its data): the
        // next read says NOGROUP and the group is made again.
        Err(e)
            if e.kind() == redis::ErrorKind::ResponseError
                && e.to_string().contains("no such key") =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(fields) = entry::find_group(reply, &o.group) else {
        return Ok(None);
    };
    let mut pending = 0;
    let mut lag = None;
    for (name, value) in &fields {
        match name.as_str() {
            "pending" => pending = entry::int_of(value).unwrap_or(0),
            "lag" => lag = entry::int_of(value),
            _ => {}
        }
    }
    Ok(Some((pending, lag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_what_fixes_them() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(classify(&io), Trouble::Reconnect);
        let timeout = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "timed out",
        ));
        assert_eq!(classify(&timeout), Trouble::Reconnect);
        let wrong = RedisError::from((redis::ErrorKind::TypeError, "unexpected reply"));
        assert_eq!(classify(&wrong), Trouble::Fatal);
    }

    #[test]
    fn client_names_have_no_spaces() {
        assert_eq!(client_name("reader", "w 1\n"), "stageflow-reader:w_1_");
    }
}
