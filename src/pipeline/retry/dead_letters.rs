//! Where an event goes once the policy gives up on it.

use std::fmt;

use crossbeam_channel::Sender;

use super::GiveUp;
use crate::pipeline::{Acks, Message};

/// An event that the retry policy gave up on, with its last error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter<T, E> {
    /// The event.
    pub event: T,
    /// The error of its last attempt.
    pub error: E,
    /// How many attempts it had.
    pub attempts: u32,
    /// Why the policy gave up.
    pub reason: GiveUp,
}

type DeadFn<T, E> = Box<dyn FnMut(DeadLetter<T, E>) -> Result<(), DeadLetter<T, E>> + Send>;

/// Where dead letters go: a channel or a function of yours.
///
/// ```
/// use stageflow::pipeline::{DeadLetter, DeadLetters, GiveUp};
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let mut dead = DeadLetters::channel(tx);
/// dead.send(DeadLetter { event: 7, error: "boom", attempts: 3, reason: GiveUp::AttemptsExhausted }).unwrap();
/// assert_eq!(rx.recv().unwrap().event, 7);
/// drop(rx);
/// // A destination that is gone hands the letter back.
/// let back = dead.send(DeadLetter { event: 8, error: "boom", attempts: 1, reason: GiveUp::NotRetryable });
/// assert_eq!(back.unwrap_err().event, 8);
/// ```
pub struct DeadLetters<T, E> {
    send: DeadFn<T, E>,
}

impl<T, E> fmt::Debug for DeadLetters<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeadLetters")
    }
}

impl<T: Send + 'static, E: Send + 'static> DeadLetters<T, E> {
    /// Dead letters are sent on `tx`.
    pub fn channel(tx: Sender<DeadLetter<T, E>>) -> Self {
        DeadLetters {
            send: Box::new(move |letter| tx.send(letter).map_err(|e| e.into_inner())),
        }
    }

    /// Dead letters are passed to `f` (write them to a file, a table, a log).
    pub fn from_fn(mut f: impl FnMut(DeadLetter<T, E>) + Send + 'static) -> Self {
        DeadLetters {
            send: Box::new(move |letter| {
                f(letter);
                Ok(())
            }),
        }
    }

    /// Delivers one letter; hands it back if the destination is gone.
    pub fn send(&mut self, letter: DeadLetter<T, E>) -> Result<(), DeadLetter<T, E>> {
        (self.send)(letter)
    }
}

/// Dead letters of [`Message`]s acknowledge their message as failed, so that its
/// source decides what happens next (a broker redelivers it or moves it to its own
/// dead-letter queue). The failure's text is the last error, with the attempts and
/// why the policy gave up: `"timeout (gave up after 3 attempts: attempts exhausted)"`.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{DeadLetter, DeadLetters, GiveUp, InMemoryAcks, Message};
/// let source = Arc::new(InMemoryAcks::new());
/// let letter = |i| DeadLetter {
///     event: Message::new(i, source.hand_out()),
///     error: "timeout",
///     attempts: 3,
///     reason: GiveUp::AttemptsExhausted,
/// };
/// // Only acknowledge:
/// let mut dead = DeadLetters::ack_failed();
/// dead.send(letter(1)).unwrap();
/// assert_eq!(source.failed()[0].error, "timeout (gave up after 3 attempts: attempts exhausted)");
///
/// // Keep the letter (here in a channel), then acknowledge; a destination that is gone
/// // hands the letter back and acknowledges nothing.
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let mut dead = DeadLetters::channel(tx).then_ack_failed();
/// dead.send(letter(2)).unwrap();
/// assert_eq!((rx.recv().unwrap().event.data, source.failed().len()), (2, 2));
/// drop(rx);
/// assert!(dead.send(letter(3)).is_err());
/// assert_eq!((source.failed().len(), source.in_flight().count()), (2, 1));
/// ```
impl<T: Send + 'static, E: fmt::Display + Send + 'static> DeadLetters<Message<T>, E> {
    /// Acknowledges each letter's message as failed, and keeps nothing else.
    pub fn ack_failed() -> Self {
        DeadLetters::from_fn(|letter| {
            let error = failure_text(&letter);
            let mut acks = Acks::new();
            acks.failed(&letter.event, error);
            acks.send();
        })
    }

    /// Delivers each letter here first, then acknowledges its message as failed; a
    /// letter handed back (the destination is gone) is not acknowledged.
    pub fn then_ack_failed(mut self) -> Self {
        DeadLetters {
            send: Box::new(move |letter| {
                let ack = letter.event.ack_ref().cloned();
                let error = failure_text(&letter);
                (self.send)(letter)?;
                if let Some(ack) = ack {
                    let mut acks = Acks::new();
                    acks.failed_ref(&ack, error);
                    acks.send();
                }
                Ok(())
            }),
        }
    }
}

fn failure_text<T, E: fmt::Display>(letter: &DeadLetter<T, E>) -> String {
    format!(
        "{} (gave up after {} attempt{}: {})",
        letter.error,
        letter.attempts,
        if letter.attempts == 1 { "" } else { "s" },
        letter.reason
    )
}
