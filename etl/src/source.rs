//! The source stage: lines of the inputs as bytes, read by demand, skipping the lines
//! an earlier run committed.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use stageflow::pipeline::Halt;
use stageflow::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::record::RawLine;
use crate::Counters;

/// One committed range of lines, `first..=last`, with the stream hash at `last`
/// (piped inputs only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Done {
    pub first: u64,
    pub last: u64,
    pub hash: Option<u128>,
}

/// An input as the source reads it.
pub(crate) struct SourceInput {
    pub index: usize,
    pub name: String,
    pub reader: BufReader<Box<dyn Read + Send>>,
    /// Committed ranges, sorted: their lines are not emitted again.
    pub done: Vec<Done>,
    /// Hash every line (a stream known only by its head).
    pub hash_lines: bool,
    /// The input's length in lines when an earlier run loaded it whole: a longer
    /// input is a different one.
    pub limit: Option<u64>,
}

/// What the source saw at the end of an input: its length in lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Eof {
    pub lines: u64,
}

struct Current {
    input: SourceInput,
    number: u64,
    next_done: usize,
    hasher: Option<Xxh3>,
}

pub(crate) struct EtlSource {
    inputs: VecDeque<SourceInput>,
    current: Option<Current>,
    ended: bool,
    /// Demand not served yet.
    pending: usize,
    /// A `Continue` is on its way to this stage.
    continuing: bool,
    counters: Arc<Counters>,
    eof: Arc<Mutex<Vec<Option<Eof>>>>,
}

#[derive(Debug)]
pub(crate) struct Exhausted;

/// Serve the rest of the demand: sent to itself before a read that may block.
#[derive(Debug)]
pub(crate) struct Continue;

impl EtlSource {
    pub fn new(
        inputs: Vec<SourceInput>,
        counters: Arc<Counters>,
        eof: Arc<Mutex<Vec<Option<Eof>>>>,
    ) -> Self {
        EtlSource {
            inputs: inputs.into(),
            current: None,
            ended: false,
            pending: 0,
            continuing: false,
            counters,
            eof,
        }
    }

    fn end(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.ended {
            self.ended = true;
            self.inputs.clear();
            self.current = None;
            // Behind the buffered events: they are dispatched before the stop.
            let _ = ctx.myself().async_info(Exhausted);
        }
    }

    /// The next line to emit; `Ok(None)` at the end of the current input.
    fn next_line(&mut self) -> Result<Option<RawLine>, String> {
        let cur = self.current.as_mut().expect("an input is open");
        loop {
            let mut bytes = Vec::with_capacity(160);
            let n = loop {
                match cur.input.reader.read_until(b'\n', &mut bytes) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(format!(
                            "input {}: read error after line {}: {e}",
                            cur.input.name, cur.number
                        ))
                    }
                }
            };
            let name = &cur.input.name;
            self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                if cur.input.limit.is_some_and(|limit| cur.number != limit) {
                    return Err(format!(
                        "input {name} differs from the one loaded before: it has {} lines, the earlier load had {}",
                        cur.number,
                        cur.input.limit.unwrap_or(0)
                    ));
                }
                self.eof.lock()[cur.input.index] = Some(Eof { lines: cur.number });
                return Ok(None);
            }
            cur.number += 1;
            let number = cur.number;
            if cur.input.limit.is_some_and(|limit| number > limit) {
                return Err(format!(
                    "input {name} differs from the one loaded before: it has more than the {} lines loaded",
                    cur.input.limit.unwrap_or(0)
                ));
            }
            let hash = cur.hasher.as_mut().map(|h| {
                h.update(&bytes);
                h.digest128()
            });
            let done = &cur.input.done;
            while cur.next_done < done.len() && done[cur.next_done].last < number {
                cur.next_done += 1;
            }
            if let Some(d) = done.get(cur.next_done).filter(|d| d.first <= number) {
                if number == d.last && d.hash.is_some() && d.hash != hash {
                    return Err(format!(
                        "input {name} differs from the one partially loaded before (at line {number}); \
                         load it with --replace, or into another database"
                    ));
                }
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            self.counters.read.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(RawLine {
                input: cur.input.index,
                line: number,
                bytes,
                hash,
            }));
        }
    }
}

impl Stage for EtlSource {
    type In = Never;
    type Out = RawLine;
}

impl EtlSource {
    /// Emits lines while there is demand. Events go out when the callback returns,
    /// so before a read that may block (a pipe with nothing buffered) the lines read
    /// so far are sent on first: the stage returns and continues on a message to
    /// itself. Otherwise a slow pipe would hold back lines it already delivered.
    fn serve(&mut self, ctx: &mut Context<'_, Self>) {
        let mut emitted = 0;
        while self.pending > 0 && !self.ended {
            let Some(cur) = &self.current else {
                match self.inputs.pop_front() {
                    None => self.end(ctx),
                    Some(input) => {
                        self.current = Some(Current {
                            hasher: input.hash_lines.then(Xxh3::new),
                            input,
                            number: 0,
                            next_done: 0,
                        })
                    }
                }
                continue;
            };
            if emitted > 0 && cur.input.reader.buffer().is_empty() {
                if !self.continuing {
                    self.continuing = true;
                    let _ = ctx.myself().async_info(Continue);
                }
                return;
            }
            match self.next_line() {
                Ok(Some(line)) => {
                    ctx.emit(line);
                    emitted += 1;
                    self.pending -= 1;
                }
                Ok(None) => self.current = None,
                Err(message) => {
                    ctx.stop(Reason::custom(message));
                    return;
                }
            }
        }
    }
}

impl Producer for EtlSource {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        self.pending += demand;
        self.serve(ctx);
    }
}

impl HandleInfo<Continue> for EtlSource {
    fn handle_info(&mut self, _: Continue, ctx: &mut Context<'_, Self>) {
        self.continuing = false;
        self.serve(ctx);
    }
}

impl HandleInfo<Exhausted> for EtlSource {
    fn handle_info(&mut self, _: Exhausted, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// A drain stops reading: lines already read are delivered, then the source stops.
impl HandleInfo<Halt> for EtlSource {
    fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
        self.end(ctx);
    }
}
