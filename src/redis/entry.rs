//! Stream entries and their ids, and the parsing of Redis replies into them.

use std::fmt;
use std::str::FromStr;

use redis::Value;

use crate::pipeline::AckId;

/// A stream entry id, `milliseconds-sequence` (`1700000000000-3`), ordered as Redis
/// orders them.
///
/// It converts to and from the [`AckId`] its message is acknowledged with
/// (`ms << 64 | seq`), so an acknowledger gets the entry id back without a table.
///
/// ```
/// use stageflow::pipeline::AckId;
/// use stageflow::redis::StreamId;
///
/// let id: StreamId = "1700000000000-3".parse()?;
/// assert_eq!(id, StreamId { ms: 1_700_000_000_000, seq: 3 });
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert_eq!(AckId::from(id), AckId(1_700_000_000_000u128 << 64 | 3));
/// assert_eq!(StreamId::from(AckId::from(id)), id);
/// assert!("12".parse::<StreamId>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The milliseconds part.
    pub ms: u64,
    /// The sequence number within that millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The smallest id after this one (what an exclusive range starts at).
    ///
    /// ```
    /// use stageflow::redis::StreamId;
    /// assert_eq!(StreamId { ms: 5, seq: 1 }.next(), StreamId { ms: 5, seq: 2 });
    /// assert_eq!(StreamId { ms: 5, seq: u64::MAX }.next(), StreamId { ms: 6, seq: 0 });
    /// ```
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a text is not a stream id.
///
/// ```
/// let e = "x-1".parse::<stageflow::redis::StreamId>().unwrap_err();
/// assert_eq!(e.to_string(), "not a stream entry id (ms-seq): \"x-1\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id (ms-seq): {0:?}")]
pub struct ParseStreamIdError(String);

impl FromStr for StreamId {
    type Err = ParseStreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_id(s.as_bytes()).ok_or_else(|| ParseStreamIdError(s.to_string()))
    }
}

impl From<StreamId> for AckId {
    fn from(id: StreamId) -> AckId {
        AckId((id.ms as u128) << 64 | id.seq as u128)
    }
}

impl From<AckId> for StreamId {
    fn from(id: AckId) -> StreamId {
        StreamId {
            ms: (id.0 >> 64) as u64,
            seq: id.0 as u64,
        }
    }
}

/// One entry of a stream as the source hands it out: its id, its fields in the
/// order they were added, and how many times the group has delivered it (1 for a
/// first delivery; more after failures, reclaims or restarts).
///
/// ```
/// use stageflow::redis::{StreamEntry, StreamId};
/// let entry = StreamEntry {
///     id: StreamId { ms: 1, seq: 0 },
///     fields: vec![("name".into(), b"ada".to_vec()), ("line".into(), b"7".to_vec())],
///     deliveries: 1,
/// };
/// assert_eq!(entry.field("line"), Some(&b"7"[..]));
/// assert_eq!(entry.field("none"), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry's id.
    pub id: StreamId,
    /// Field names and values, in order (a stream entry may repeat a name).
    pub fields: Vec<(String, Vec<u8>)>,
    /// Deliveries to the group so far, this one included.
    pub deliveries: u64,
}

impl StreamEntry {
    /// The value of the first field called `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

pub(crate) fn parse_id(bytes: &[u8]) -> Option<StreamId> {
    let dash = bytes.iter().position(|&b| b == b'-')?;
    Some(StreamId {
        ms: parse_u64(&bytes[..dash])?,
        seq: parse_u64(&bytes[dash + 1..])?,
    })
}

/// A reply that does not have the shape the command documents.
pub(crate) fn unexpected(what: &str, value: &Value) -> redis::RedisError {
    let mut shown = format!("{value:?}");
    if shown.len() > 200 {
        let mut cut = 200;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str("...");
    }
    redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected reply",
        format!("{what}: {shown}"),
    ))
}

pub(crate) fn id_of(value: &Value) -> Option<StreamId> {
    match value {
        Value::BulkString(b) => parse_id(b),
        Value::SimpleString(s) => parse_id(s.as_bytes()),
        _ => None,
    }
}

pub(crate) fn int_of(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => parse_u64(b),
        Value::SimpleString(s) => parse_u64(s.as_bytes()),
        _ => None,
    }
}

fn text_of(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// One raw entry of a reply: its id and its fields, or `None` for an entry that
/// is still pending but was deleted from the stream (trimmed, `XDEL`).
pub(crate) type RawEntry = (StreamId, Option<Vec<(String, Vec<u8>)>>);

/// Parses `[id, [field, value, ...]]` (the fields may be nil).
fn parse_entry(value: Value) -> Result<RawEntry, redis::RedisError> {
    let Value::Array(mut parts) = value else {
        return Err(unexpected("a stream entry", &value));
    };
    if parts.len() != 2 {
        return Err(unexpected("a stream entry", &Value::Array(parts)));
    }
    let fields = parts.pop().unwrap_or(Value::Nil);
    let id = match id_of(&parts[0]) {
        Some(id) => id,
        None => return Err(unexpected("a stream entry id", &parts[0])),
    };
    let fields = match fields {
        Value::Nil => None,
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(name), Some(value)) = (it.next(), it.next()) {
                let name = text_of(name)
                    .ok_or_else(|| unexpected("a field name (UTF-8 text)", &Value::Nil))?;
                let value =
                    bytes_of(value).ok_or_else(|| unexpected("a field value", &Value::Nil))?;
                out.push((name, value));
            }
            Some(out)
        }
        Value::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (name, value) in pairs {
                let name = text_of(name)
                    .ok_or_else(|| unexpected("a field name (UTF-8 text)", &Value::Nil))?;
                let value =
                    bytes_of(value).ok_or_else(|| unexpected("a field value", &Value::Nil))?;
                out.push((name, value));
            }
            Some(out)
        }
        other => return Err(unexpected("stream entry fields", &other)),
    };
    Ok((id, fields))
}

/// Parses a list of entries (`XCLAIM`, `XRANGE`, one stream of `XREADGROUP`).
pub(crate) fn parse_entries(value: Value) -> Result<Vec<RawEntry>, redis::RedisError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(unexpected("a list of stream entries", &other)),
    }
}

/// Parses an `XREADGROUP` reply for one stream: nil (nothing new in time) or
/// `[[stream, [entries]]]` (RESP2) / `{stream: [entries]}` (RESP3).
pub(crate) fn parse_read_reply(value: Value) -> Result<Vec<RawEntry>, redis::RedisError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                match stream {
                    Value::Array(mut pair) if pair.len() == 2 => {
                        out.extend(parse_entries(pair.pop().unwrap_or(Value::Nil))?)
                    }
                    other => return Err(unexpected("an XREADGROUP stream", &other)),
                }
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, entries) in streams {
                out.extend(parse_entries(entries)?);
            }
            Ok(out)
        }
        other => Err(unexpected("an XREADGROUP reply", &other)),
    }
}

/// An `XAUTOCLAIM` reply: the next cursor, the claimed entries and the ids that
/// were pending but no longer exist in the stream (Redis removed them from the
/// pending list).
pub(crate) struct AutoClaim {
    pub(crate) cursor: StreamId,
    pub(crate) entries: Vec<RawEntry>,
    pub(crate) deleted: Vec<StreamId>,
}

pub(crate) fn parse_autoclaim(value: Value) -> Result<AutoClaim, redis::RedisError> {
    let Value::Array(parts) = value else {
        return Err(unexpected("an XAUTOCLAIM reply", &value));
    };
    let mut it = parts.into_iter();
    let cursor = it
        .next()
        .as_ref()
        .and_then(id_of)
        .ok_or_else(|| unexpected("an XAUTOCLAIM cursor", &Value::Nil))?;
    let entries = parse_entries(it.next().unwrap_or(Value::Nil))?;
    let deleted = match it.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| id_of(v).ok_or_else(|| unexpected("a deleted id", v)))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(unexpected("XAUTOCLAIM's deleted ids", &other)),
    };
    Ok(AutoClaim {
        cursor,
        entries,
        deleted,
    })
}

/// One line of the extended `XPENDING` form: the id and its delivery count.
pub(crate) fn parse_pending(value: Value) -> Result<Vec<(StreamId, u64)>, redis::RedisError> {
    let Value::Array(rows) = value else {
        return Err(unexpected("an XPENDING reply", &value));
    };
    rows.into_iter()
        .map(|row| match &row {
            Value::Array(cols) if cols.len() == 4 => match (id_of(&cols[0]), int_of(&cols[3])) {
                (Some(id), Some(n)) => Ok((id, n)),
                _ => Err(unexpected("an XPENDING line", &row)),
            },
            _ => Err(unexpected("an XPENDING line", &row)),
        })
        .collect()
}

/// The fields of the group called `group` in an `XINFO GROUPS` reply, as
/// `(name, value)` pairs.
pub(crate) fn find_group(value: Value, group: &str) -> Option<Vec<(String, Value)>> {
    let Value::Array(groups) = value else {
        return None;
    };
    for g in groups {
        let pairs: Vec<(String, Value)> = match g {
            Value::Array(flat) => {
                let mut out = Vec::new();
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((text_of(k)?, v));
                }
                out
            }
            Value::Map(pairs) => pairs
                .into_iter()
                .filter_map(|(k, v)| Some((text_of(k)?, v)))
                .collect(),
            _ => continue,
        };
        let is_it = pairs.iter().any(|(k, v)| {
            k == "name"
                && match v {
                    Value::BulkString(b) => b == group.as_bytes(),
                    Value::SimpleString(s) => s == group,
                    _ => false,
                }
        });
        if is_it {
            return Some(pairs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn ids_parse_and_order() {
        assert_eq!(parse_id(b"0-0"), Some(StreamId { ms: 0, seq: 0 }));
        assert_eq!(parse_id(b"18446744073709551615-1").unwrap().ms, u64::MAX);
        for bad in ["", "-", "1-", "-1", "1-x", "18446744073709551616-0", "1"] {
            assert_eq!(parse_id(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(StreamId { ms: 1, seq: 9 } < StreamId { ms: 2, seq: 0 });
    }

    #[test]
    fn a_read_reply_with_a_deleted_entry() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("a"), bulk("x"), bulk("b"), bulk("")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(
            entries,
            vec![
                (
                    StreamId { ms: 1, seq: 1 },
                    Some(vec![("a".into(), b"x".to_vec()), ("b".into(), vec![])])
                ),
                (StreamId { ms: 2, seq: 0 }, None),
            ]
        );
        assert!(parse_read_reply(Value::Nil).unwrap().is_empty());
        let err = parse_read_reply(Value::Int(3)).unwrap_err();
        assert!(err.to_string().contains("XREADGROUP"), "{err}");
    }

    #[test]
    fn an_autoclaim_reply() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("k"), bulk("v")]),
            ])]),
            Value::Array(vec![bulk("1-0")]),
        ]);
        let claim = parse_autoclaim(reply).unwrap();
        assert_eq!(claim.cursor, StreamId::default());
        assert_eq!(claim.entries.len(), 1);
        assert_eq!(claim.deleted, vec![StreamId { ms: 1, seq: 0 }]);
    }

    #[test]
    fn pending_lines_and_groups() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("5-1"),
            bulk("c"),
            Value::Int(10),
            Value::Int(3),
        ])]);
        assert_eq!(
            parse_pending(reply).unwrap(),
            vec![(StreamId { ms: 5, seq: 1 }, 3)]
        );
        let groups = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("g"),
            bulk("pending"),
            Value::Int(2),
            bulk("lag"),
            Value::Nil,
        ])]);
        let g = find_group(groups.clone(), "g").unwrap();
        assert!(g.iter().any(|(k, v)| k == "pending" && *v == Value::Int(2)));
        assert!(find_group(groups, "other").is_none());
    }
}
