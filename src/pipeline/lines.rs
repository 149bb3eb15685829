//! A producer of the lines of files (or any `BufRead`), read only as consumers ask.
//!
//! Each event is a [`LineEvent`]: `Ok(Line)` with its input and 1-based line number,
//! or `Err(LineError)` naming the input, the line and the I/O error. Errors are
//! values: a file that cannot be opened, a line that is not UTF-8 or a failing read
//! is reported and reading goes on (with the next line, or the next input when the
//! reader itself failed). When every input is read the source stops with
//! [`Reason::Normal`] after its last events were dispatched.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::StartError;
use crate::stage::{start_producer, Context, HandleInfo, Never, Producer, ProducerOptions};
use crate::stage::{Reason, Stage, StageRef};

use super::drain::Halt;

/// One line of an input, without its line ending (`\n` or `\r\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Index of the input in the order they were added (see [`LineSource::names`]).
    pub input: usize,
    /// 1-based line number within that input.
    pub number: u64,
    /// The text.
    pub text: String,
}

/// A line or an input that could not be read.
///
/// The I/O error is kept as [`source`](std::error::Error::source) (shared, so that
/// the event stays `Clone`); the message repeats its text, so that printing one
/// failed line says everything. Equality compares the I/O errors by kind and text.
#[derive(Clone, Debug)]
pub struct LineError {
    /// Index of the input.
    pub input: usize,
    /// The input's name (its path for files).
    pub name: Arc<str>,
    /// 1-based number of the line that failed; 0 when the input could not be opened.
    pub number: u64,
    /// The I/O error's kind (`InvalidData` for a line that is not UTF-8).
    pub kind: io::ErrorKind,
    /// The I/O error.
    pub source: Arc<io::Error>,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.name, self.number, self.source)
    }
}

impl std::error::Error for LineError {
    // The `io::Error` itself, not the `Arc` around it, so that callers can downcast.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl PartialEq for LineError {
    fn eq(&self, other: &Self) -> bool {
        (self.input, &self.name, self.number, self.kind)
            == (other.input, &other.name, other.number, other.kind)
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for LineError {}

/// What a [`LineSource`] emits.
pub type LineEvent = Result<Line, LineError>;

enum Input {
    Path(PathBuf),
    Reader(Box<dyn BufRead + Send>),
}

struct Current {
    input: usize,
    reader: Box<dyn BufRead + Send>,
    number: u64,
}

/// A producer over the lines of one or more inputs, read in order, lazily: a demand
/// of `n` reads at most `n` lines. Files are opened when reached.
///
/// ```
/// use stageflow::pipeline::LineSource;
/// use stageflow::prelude::*;
/// let source = LineSource::new()
///     .reader("a", std::io::Cursor::new("one\ntwo\r\n"))
///     .reader("b", std::io::Cursor::new(&b"\xff\nthree"[..]))
///     .file("/no/such/file")
///     .start(ProducerOptions::new())?;
/// let events: Vec<_> = stream(&source).collect::<Result<_, _>>()?;
/// let texts: Vec<String> = events.iter().map(|e| match e {
///     Ok(line) => format!("{}:{} {}", line.input, line.number, line.text),
///     Err(e) => format!("error {}:{} {:?}", e.name, e.number, e.kind),
/// }).collect();
/// assert_eq!(texts, [
///     "0:1 one", "0:2 two",
///     "error b:1 InvalidData", "1:2 three",
///     "error /no/such/file:0 NotFound",
/// ]);
/// assert_eq!(source.join(), Reason::Normal);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LineSource {
    names: Vec<Arc<str>>,
    inputs: VecDeque<(usize, Input)>,
    current: Option<Current>,
    ended: bool,
}

impl Default for LineSource {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LineSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSource")
            .field("names", &self.names)
            .field("ended", &self.ended)
            .finish()
    }
}

/// The message a [`LineSource`] sends itself once its inputs are exhausted (or it was
/// halted): it arrives behind the events still buffered, so the source stops only
/// after they were dispatched.
#[derive(Debug)]
pub struct LinesExhausted(());

impl LineSource {
    /// A source with no inputs yet (it ends at once if started so).
    pub fn new() -> Self {
        LineSource {
            names: Vec::new(),
            inputs: VecDeque::new(),
            current: None,
            ended: false,
        }
    }

    /// Adds a file, opened when the source reaches it; its name is the path.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let index = self.names.len();
        self.names
            .push(Arc::from(path.display().to_string().as_str()));
        self.inputs.push_back((index, Input::Path(path)));
        self
    }

    /// Adds every file of `paths`, in order.
    pub fn files<P: Into<PathBuf>>(self, paths: impl IntoIterator<Item = P>) -> Self {
        paths.into_iter().fold(self, |s, p| s.file(p))
    }

    /// Adds a reader under `name`.
    pub fn reader(mut self, name: impl AsRef<str>, reader: impl BufRead + Send + 'static) -> Self {
        let index = self.names.len();
        self.names.push(Arc::from(name.as_ref()));
        self.inputs
            .push_back((index, Input::Reader(Box::new(reader))));
        self
    }

    /// The inputs' names, indexed by [`Line::input`].
    ///
    /// ```
    /// let s = stageflow::pipeline::LineSource::new().file("a.jsonl").file("b.jsonl");
    /// assert_eq!(s.names().len(), 2);
    /// assert_eq!(&*s.names()[1], "b.jsonl");
    /// ```
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names.clone()
    }

    /// Starts the source as a producer with `options`.
    pub fn start(
        self,
        options: ProducerOptions<LineEvent>,
    ) -> Result<StageRef<LineSource>, StartError> {
        start_producer(self, options)
    }

    fn error(&self, input: usize, number: u64, e: io::Error) -> LineError {
        LineError {
            input,
            name: self.names[input].clone(),
            number,
            kind: e.kind(),
            source: Arc::new(e),
        }
    }

    /// Opens the next input; `Err` carries the event reporting an open failure.
    fn open_next(&mut self) -> Option<Result<(), LineError>> {
        let (input, next) = self.inputs.pop_front()?;
        let reader: Box<dyn BufRead + Send> = match next {
            Input::Reader(r) => r,
            Input::Path(path) => match File::open(&path) {
                // Large buffer: reads are the source's whole job.
                Ok(f) => Box::new(BufReader::with_capacity(256 * 1024, f)),
                Err(e) => return Some(Err(self.error(input, 0, e))),
            },
        };
        self.current = Some(Current {
            input,
            reader,
            number: 0,
        });
        Some(Ok(()))
    }

    /// Reads the next event of the current input; `None` at its end.
    fn read_line(&mut self) -> Option<LineEvent> {
        let cur = self.current.as_mut()?;
        let mut bytes = Vec::with_capacity(128);
        loop {
            match cur.reader.read_until(b'\n', &mut bytes) {
                Ok(0) if bytes.is_empty() => {
                    self.current = None;
                    return None;
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The reader failed: its next reads would most likely fail the same
                    // way, so this input ends here and the next one is read.
                    let (input, number) = (cur.input, cur.number + 1);
                    self.current = None;
                    return Some(Err(self.error(input, number, e)));
                }
            }
        }
        cur.number += 1;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let (input, number) = (cur.input, cur.number);
        Some(match String::from_utf8(bytes) {
            Ok(text) => Ok(Line {
                input,
                number,
                text,
            }),
            Err(e) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, e.utf8_error());
                Err(self.error(input, number, e))
            }
        })
    }

    fn end(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.ended {
            self.ended = true;
            self.inputs.clear();
            self.current = None;
            // Behind the buffered events: they are dispatched before the stop.
            let _ = ctx.myself().async_info(LinesExhausted(()));
        }
    }
}

impl Stage for LineSource {
    type In = Never;
    type Out = LineEvent;
}

impl Producer for LineSource {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        let mut emitted = 0;
        while emitted < demand && !self.ended {
            if self.current.is_none() {
                match self.open_next() {
                    None => self.end(ctx),
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        ctx.emit(Err(e));
                        emitted += 1;
                    }
                }
                continue;
            }
            if let Some(event) = self.read_line() {
                ctx.emit(event);
                emitted += 1;
            }
        }
    }
}

impl HandleInfo<LinesExhausted> for LineSource {
    fn handle_info(&mut self, _: LinesExhausted, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Halting stops reading: the lines already read are delivered, then the source
/// stops normally, so its consumers finish too.
impl HandleInfo<Halt> for LineSource {
    fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
        self.end(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{stream, SubscribeOptions};
    use crate::StageStream;
    use std::io::{Cursor, Read};

    fn collect(source: &StageRef<LineSource>) -> Vec<LineEvent> {
        stream(source)
            .collect::<Result<_, _>>()
            .expect("stream ends normally")
    }

    #[test]
    fn reads_files_in_order_and_ends_normally() {
        let dir = std::env::temp_dir().join(format!("stageflow-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.txt");
        let b = dir.join("b.txt");
        std::fs::write(&a, "1\n2\n").unwrap();
        std::fs::write(&b, "3\n\n4").unwrap();
        let source = LineSource::new()
            .files([&a, &b])
            .start(ProducerOptions::new())
            .unwrap();
        let lines: Vec<(usize, u64, String)> = collect(&source)
            .into_iter()
            .map(|e| e.map(|l| (l.input, l.number, l.text)).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                (0, 1, "1".into()),
                (0, 2, "2".into()),
                (1, 1, "3".into()),
                (1, 2, "".into()),
                (1, 3, "4".into()),
            ]
        );
        assert_eq!(source.join(), Reason::Normal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    struct FailAfter {
        data: Cursor<Vec<u8>>,
    }
    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            Ok(n)
        }
    }

    #[test]
    fn a_failing_reader_is_reported_with_its_line_and_the_next_input_is_read() {
        let failing = BufReader::new(FailAfter {
            data: Cursor::new(b"ok\n".to_vec()),
        });
        let source = LineSource::new()
            .reader("bad", failing)
            .reader("good", Cursor::new("fine\n"))
            .start(ProducerOptions::new())
            .unwrap();
        let events = collect(&source);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].as_ref().unwrap().text, "ok");
        let err = events[1].as_ref().unwrap_err();
        assert_eq!((&*err.name, err.number), ("bad", 2));
        assert_eq!(err.kind, io::ErrorKind::Other);
        assert_eq!(err.to_string(), "bad:2: disk on fire");
        // The I/O error itself is kept as the source, not flattened to text.
        let source = std::error::Error::source(err).expect("the I/O error is the source");
        let io = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), io::ErrorKind::Other);
        assert_eq!(events[2].as_ref().unwrap().text, "fine");
    }

    #[test]
    fn reads_only_what_is_demanded() {
        let numbers = LineSource::new()
            .reader("n", Cursor::new("a\nb\nc\nd\ne\n"))
            .start(ProducerOptions::new())
            .unwrap();
        let first: Vec<LineEvent> = StageStream::new()
            .subscribe(&numbers, SubscribeOptions::new().max_demand(2))
            .unwrap()
            .take(2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(first.len(), 2);
        // The first ask was 2, the stream re-asks 1 after its first batch of 1:
        // at most 3 lines read, so at most 3 events out.
        let out = numbers.metrics().events_out;
        assert!(out <= 3, "read {out} lines for a demand of 3");
    }

    #[test]
    fn no_inputs_ends_at_once() {
        let source = LineSource::new().start(ProducerOptions::new()).unwrap();
        assert!(collect(&source).is_empty());
        assert_eq!(source.join(), Reason::Normal);
    }

    #[test]
    fn halt_stops_reading_and_ends_normally() {
        let endless = BufReader::new(io::repeat(b'\n').take(u64::MAX));
        let source = LineSource::new()
            .reader("endless", endless)
            .start(ProducerOptions::new())
            .unwrap();
        let mut s = stream(&source);
        assert!(s.next().unwrap().is_ok());
        source.send_info(Halt).unwrap();
        // The rest of the stream is finite: what was read before the halt.
        let rest = s.count();
        assert!(rest < 10_000, "read {rest} lines after halt");
        assert_eq!(source.join(), Reason::Normal);
    }
}
