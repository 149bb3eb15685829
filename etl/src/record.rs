//! One input line → a record to write, or a reject with its reason.

use std::borrow::Cow;

use serde::Deserialize;

/// One record of the input: every field required, with its type, nothing else.
/// Strings borrow from the line unless they hold escapes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record<'a> {
    id: u64,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    amount: f64,
    #[serde(borrow)]
    tags: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
}

/// A record ready for its row. The text fields live in one buffer (`name`, `email`,
/// `ts`, then `tags` as the JSON text of the array, which is lossless): one
/// allocation per row instead of four, which the writer's thread frees.
#[derive(Debug)]
pub(crate) struct Row {
    pub id: u64,
    pub amount: f64,
    fields: String,
    /// Where `email`, `ts` and `tags` start in `fields`.
    ends: [usize; 3],
}

impl Row {
    pub fn name(&self) -> &str {
        &self.fields[..self.ends[0]]
    }
    pub fn email(&self) -> &str {
        &self.fields[self.ends[0]..self.ends[1]]
    }
    pub fn ts(&self) -> &str {
        &self.fields[self.ends[1]..self.ends[2]]
    }
    pub fn tags(&self) -> &str {
        &self.fields[self.ends[2]..]
    }
}

/// A line read from an input: its place and its bytes (without the line ending).
#[derive(Debug)]
pub(crate) struct RawLine {
    pub input: usize,
    pub line: u64,
    pub bytes: Vec<u8>,
    /// For piped inputs: a hash of the input's bytes up to and including this line,
    /// which a later run checks to recognise the same stream.
    pub hash: Option<u128>,
}

/// A parsed line: a row to write, or a line to reject, with where it came from.
#[derive(Debug)]
pub(crate) enum Parsed {
    Row {
        input: usize,
        line: u64,
        hash: Option<u128>,
        row: Row,
        /// The original line, kept in case the database refuses the row.
        text: String,
    },
    Reject {
        input: usize,
        line: u64,
        hash: Option<u128>,
        error: String,
        raw: Vec<u8>,
    },
}

impl Parsed {
    pub fn place(&self) -> (usize, u64, Option<u128>) {
        match self {
            Parsed::Row {
                input, line, hash, ..
            }
            | Parsed::Reject {
                input, line, hash, ..
            } => (*input, *line, *hash),
        }
    }
}

/// Parses one line. Only a JSON object is a record (serde would also accept an array
/// of the fields in order); a line that is not UTF-8 is rejected with its bytes.
pub(crate) fn parse(raw: RawLine) -> Parsed {
    let RawLine {
        input,
        line,
        bytes,
        hash,
    } = raw;
    let reject = |error: String, raw: Vec<u8>| Parsed::Reject {
        input,
        line,
        hash,
        error,
        raw,
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return reject(format!("invalid UTF-8 at byte {at}"), e.into_bytes());
        }
    };
    if !text.trim_start().starts_with('{') {
        return reject("not a JSON object".into(), text.into_bytes());
    }
    let row = match serde_json::from_str::<Record>(&text) {
        Ok(r) => {
            let tags = serde_json::to_string(&r.tags).expect("a list of strings serializes");
            let mut fields =
                String::with_capacity(r.name.len() + r.email.len() + r.ts.len() + tags.len());
            fields.push_str(&r.name);
            let e = fields.len();
            fields.push_str(&r.email);
            let t = fields.len();
            fields.push_str(&r.ts);
            let g = fields.len();
            fields.push_str(&tags);
            Ok(Row {
                id: r.id,
                amount: r.amount,
                fields,
                ends: [e, t, g],
            })
        }
        Err(e) => Err(e.to_string()),
    };
    match row {
        Ok(row) => Parsed::Row {
            input,
            line,
            hash,
            row,
            text,
        },
        Err(e) => reject(e, text.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &[u8]) -> Parsed {
        parse(RawLine {
            input: 0,
            line: 1,
            bytes: text.to_vec(),
            hash: None,
        })
    }

    fn error(p: Parsed) -> String {
        match p {
            Parsed::Reject { error, .. } => error,
            Parsed::Row { .. } => panic!("accepted"),
        }
    }

    #[test]
    fn arrays_are_not_records() {
        let p = one(br#"[1, "n", "e", 1.5, [], "t"]"#);
        assert_eq!(error(p), "not a JSON object");
    }

    #[test]
    fn floats_round_trip_and_tags_stay_apart() {
        let p = one(
            br#"{"id": 1, "name": "n", "email": "e", "amount": 0.30000000000000004, "tags": ["x,y", "z"], "ts": "t"}"#,
        );
        let Parsed::Row { row, .. } = p else {
            panic!("rejected")
        };
        assert_eq!(row.amount.to_bits(), 0.30000000000000004f64.to_bits());
        assert_eq!(row.tags(), r#"["x,y","z"]"#);
        assert_eq!((row.name(), row.email(), row.ts()), ("n", "e", "t"));
    }

    #[test]
    fn invalid_utf8_keeps_its_bytes() {
        let Parsed::Reject { error, raw, .. } = one(b"{\"id\": \xff}") else {
            panic!("accepted")
        };
        assert_eq!(error, "invalid UTF-8 at byte 7");
        assert_eq!(raw, b"{\"id\": \xff}");
    }
}
