//! The sinks a lane's chain is made of: fused mappers, reducers, routers, terminals.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::flow::exec::{BoxSink, Envelope, Inbox, LaneCtx, Msg, Run, Sink, Stats, Tag};
use crate::flow::window::{TriggerInfo, TriggerName, WindowKind};

/// A fused mapper: transforms whole batches (`map`, `filter`, `flat_map`, `uniq`, ...).
pub(crate) struct Xform<'a, T, U, F> {
    pub f: F,
    /// Set for `map_batch`, whose function sees batch boundaries.
    pub exact: bool,
    pub next: BoxSink<'a, U>,
    pub _t: PhantomData<fn(T)>,
}

impl<'a, T, U, F> Sink<T> for Xform<'a, T, U, F>
where
    F: FnMut(Vec<T>) -> Vec<U> + Send,
    U: Send,
{
    #[inline]
    fn events(&mut self, w: i64, batch: Vec<T>) {
        let out = (self.f)(batch);
        if !out.is_empty() {
            self.next.events(w, out);
        }
    }
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        self.next.trigger(w, name, complete)
    }
    fn producer_done(&mut self, from: usize) {
        self.next.producer_done(from)
    }
    fn finish(&mut self) {
        self.next.finish()
    }
    fn exact_batches(&self) -> bool {
        self.exact || self.next.exact_batches()
    }
}

/// What fires a reducer's trigger: the user's `on_trigger` (or a default emission)
/// followed by the rest of the lane. Type-erases the output event type.
pub(crate) trait Fire<A>: Send {
    /// Runs `on_trigger` over `acc`; returns the accumulator to keep (None if the
    /// window completed).
    fn fire(&mut self, w: i64, acc: A, info: &TriggerInfo, complete: bool) -> Option<A>;
    fn finish(&mut self);
}

/// [`Fire`] for `emit_and_reduce`, which also emits while reducing.
pub(crate) trait FireEmit<A, O>: Fire<A> {
    fn direct(&mut self, w: i64, events: Vec<O>);
}

/// Makes each lane's `F` (here, what fires a reducer's triggers) from its context.
pub(crate) type PerLane<'a, F> = Arc<dyn Fn(&LaneCtx) -> Box<F> + Send + Sync + 'a>;
pub(crate) type FireFactory<'a, A> = PerLane<'a, dyn Fire<A> + 'a>;
pub(crate) type FireEmitFactory<'a, A, O> = PerLane<'a, dyn FireEmit<A, O> + 'a>;

/// The internal form of `on_trigger`: `complete` lets default emissions move the
/// accumulator instead of cloning it.
pub(crate) type TriggerFn<'a, A, O> =
    Arc<dyn Fn(A, &TriggerInfo, bool) -> (Vec<O>, Option<A>) + Send + Sync + 'a>;

pub(crate) struct FireImpl<'a, A, O> {
    pub f: TriggerFn<'a, A, O>,
    pub next: BoxSink<'a, O>,
}

impl<'a, A: Send, O: Send> Fire<A> for FireImpl<'a, A, O> {
    fn fire(&mut self, w: i64, acc: A, info: &TriggerInfo, complete: bool) -> Option<A> {
        let (events, acc) = (self.f)(acc, info, complete);
        self.next.emitted(w, &info.trigger, events);
        self.next.trigger(w, &info.trigger, complete);
        if complete {
            None
        } else {
            acc
        }
    }
    fn finish(&mut self) {
        self.next.finish()
    }
}

impl<'a, A: Send, O: Send> FireEmit<A, O> for FireImpl<'a, A, O> {
    fn direct(&mut self, w: i64, events: Vec<O>) {
        if !events.is_empty() {
            self.next.events(w, events)
        }
    }
}

/// A reducer's accumulators, one per window, and what fires its triggers: the part
/// [`ReduceSink`] and [`EmitReduceSink`] share. `F` is the kind of firing
/// ([`Fire`], or [`FireEmit`] for `emit_and_reduce`).
pub(crate) struct Accs<'a, A, F: ?Sized> {
    /// By window id; almost always one or two, so a small vector.
    accs: Vec<(i64, A)>,
    /// Makes the accumulator of a window that has none yet.
    init: Arc<dyn Fn() -> A + Send + Sync + 'a>,
    pub fire: Box<F>,
    cx: LaneCtx,
}

impl<'a, A, F: Fire<A> + ?Sized> Accs<'a, A, F> {
    pub fn new(init: Arc<dyn Fn() -> A + Send + Sync + 'a>, fire: Box<F>, cx: &LaneCtx) -> Self {
        Accs {
            accs: Vec::new(),
            init,
            fire,
            cx: cx.clone(),
        }
    }
    /// Window `w`'s accumulator, taken out (a new one if it has none).
    #[inline]
    pub fn take(&mut self, w: i64) -> A {
        match self.accs.iter().position(|(id, _)| *id == w) {
            Some(p) => self.accs.swap_remove(p).1,
            None => (self.init)(),
        }
    }
    #[inline]
    pub fn put(&mut self, w: i64, a: A) {
        self.accs.push((w, a));
    }
    /// Fires trigger `name` of window `w` over its accumulator, and keeps the
    /// accumulator that `on_trigger` returns unless the window completed.
    pub fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        let acc = self.take(w);
        let info = info(&self.cx, w, name);
        if let Some(a) = self.fire.fire(w, acc, &info, complete) {
            self.put(w, a);
        }
    }
    pub fn finish(&mut self) {
        self.fire.finish()
    }
}

/// How a reducer folds a run of events into its accumulator: by value (`reduce`) or
/// in place (`reduce_mut`, `group_by`).
pub(crate) trait Fold<A, U>: Send + Sync {
    fn fold(&self, acc: A, events: &mut Run<'_, '_, U>) -> A;
}

/// `reduce`'s fold: `acc = f(acc, event)`.
pub(crate) struct ByValue<F>(pub F);

impl<A, U, F> Fold<A, U> for ByValue<F>
where
    F: Fn(A, U) -> A + Send + Sync,
{
    #[inline]
    fn fold(&self, mut acc: A, events: &mut Run<'_, '_, U>) -> A {
        for x in events {
            acc = (self.0)(acc, x);
        }
        acc
    }
}

/// `reduce_mut`'s fold: `f(&mut acc, event)`. The accumulator stays in one place for
/// the whole run; passed by value, a hash map is copied through the stack at every
/// event, and its next lookup waits for that copy.
pub(crate) struct InPlace<F>(pub F);

impl<A, U, F> Fold<A, U> for InPlace<F>
where
    F: Fn(&mut A, U) + Send + Sync,
{
    #[inline]
    fn fold(&self, mut acc: A, events: &mut Run<'_, '_, U>) -> A {
        for x in events {
            (self.0)(&mut acc, x);
        }
        acc
    }
}

/// `reduce` and `reduce_mut`: fold every event of a window into that window's
/// accumulator.
pub(crate) struct ReduceSink<'a, U, A, F> {
    pub accs: Accs<'a, A, dyn Fire<A> + 'a>,
    pub f: Arc<F>,
    pub _u: PhantomData<fn(U)>,
}

pub(crate) fn info(cx: &LaneCtx, w: i64, name: &TriggerName) -> TriggerInfo {
    TriggerInfo {
        index: cx.index,
        total: cx.total,
        kind: cx.kind,
        window: if cx.kind == WindowKind::Global { 0 } else { w },
        trigger: name.clone(),
    }
}

impl<'a, U, A, F> Sink<U> for ReduceSink<'a, U, A, F>
where
    F: Fold<A, U>,
    A: Send,
    U: Send,
{
    #[inline]
    fn events(&mut self, w: i64, mut batch: Vec<U>) {
        let mut all = batch.drain(..);
        let n = all.len();
        self.events_from(w, &mut all.by_ref().take(n))
    }
    fn events_from(&mut self, w: i64, events: &mut Run<'_, '_, U>) {
        let acc = self.accs.take(w);
        let acc = self.f.fold(acc, events);
        self.accs.put(w, acc);
    }
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        self.accs.trigger(w, name, complete)
    }
    fn finish(&mut self) {
        self.accs.finish()
    }
}

/// `emit_and_reduce`: like [`ReduceSink`], and emits what the function returns.
pub(crate) struct EmitReduceSink<'a, U, A, O, G> {
    pub accs: Accs<'a, A, dyn FireEmit<A, O> + 'a>,
    pub g: Arc<G>,
    pub _u: PhantomData<fn(U)>,
}

impl<'a, U, A, O, G> Sink<U> for EmitReduceSink<'a, U, A, O, G>
where
    G: Fn(A, U) -> (Vec<O>, A) + Send + Sync,
    A: Send,
    U: Send,
    O: Send,
{
    fn events(&mut self, w: i64, batch: Vec<U>) {
        let mut acc = self.accs.take(w);
        let mut out = Vec::new();
        for x in batch {
            let (evs, a) = (self.g)(acc, x);
            out.extend(evs);
            acc = a;
        }
        self.accs.put(w, acc);
        self.accs.fire.direct(w, out);
    }
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        self.accs.trigger(w, name, complete)
    }
    fn finish(&mut self) {
        self.accs.finish()
    }
}

/// Who a router says its batches come from, and in which order they go.
///
/// A lane of a source layer whose chain only maps passes on the events of the chunks
/// it pulled, in their order; the next layer then sees the source's *iterators* as its
/// producers (one per iterator, as Elixir's `from_enumerables`, whose streamers are
/// the producers when the source has no stage of its own), not the lanes, whose number
/// follows the thread count. Each iterator's end is announced after its last chunk.
/// Otherwise (a reducer in the layer, any later layer) each lane is a producer, ending
/// with its `finish`. Either way, batches carry the order of the source chunk they
/// descend from ([`Tag`]), by which the next layer takes them.
pub(crate) struct Speaker {
    tag: Arc<Tag>,
    /// The id of the first producer this router's layer contributes downstream.
    offset: usize,
    lane: usize,
    for_iters: bool,
}

impl Speaker {
    /// `for_iters`: the lane's chain has no reducer; the router speaks for the
    /// iterators if the lane is a source lane.
    pub fn new(lcx: &LaneCtx, offset: usize, for_iters: bool) -> Self {
        Speaker {
            tag: lcx.tag.clone(),
            offset,
            lane: lcx.index,
            for_iters: for_iters && lcx.iters.is_some(),
        }
    }
    fn envelope<T>(&self, seq: u64, msg: Msg<T>) -> Envelope<T> {
        let from = if self.for_iters {
            self.tag.from()
        } else {
            self.lane
        };
        Envelope {
            from: self.offset + from,
            order: self.tag.order(),
            seq,
            msg,
        }
    }
    /// Whose turn it is, for routers that hand batches to the lanes in turn: by the
    /// source chunk's order when speaking for the iterators (the same lanes get the
    /// same chunks, however many source lanes pulled them), else by the lane's `seq`
    /// (its batches so far); each from a start of its own, so that the flows merged
    /// into a layer do not all begin with its first lane.
    fn turn(&self, seq: u64) -> usize {
        if self.for_iters {
            self.offset + self.tag.order() as usize
        } else {
            self.offset + self.lane + seq as usize
        }
    }
    /// The end of iterator `from`, if this router speaks for the iterators.
    fn ended<T>(&self, from: usize) -> Option<Envelope<T>> {
        self.for_iters.then(|| Envelope {
            from: self.offset + from,
            order: self.tag.order(),
            seq: u64::MAX,
            msg: Msg::Done,
        })
    }
    /// The lane's end, if it is a producer.
    fn finished<T>(&self) -> Option<Envelope<T>> {
        (!self.for_iters).then(|| Envelope {
            from: self.offset + self.lane,
            order: u64::MAX,
            seq: u64::MAX,
            msg: Msg::Done,
        })
    }
}

/// Routes a lane's output to the next layer's lanes by partition: one bucket per lane
/// and input batch.
pub(crate) struct PartitionRouter<T, H> {
    pub inbox: Arc<Inbox<T>>,
    pub hash: Arc<H>,
    pub speaker: Speaker,
    pub seq: u64,
    pub stats: Arc<Stats>,
}

/// Routes `batch` into `n` buckets held in local variables (`b0 0, b1 1, ...`: a name
/// and the partition it takes) made from the vectors `bufs`; counts discarded events
/// in `discarded`; returns the buckets in partition order.
macro_rules! scatter_locals {
    ($batch:expr, $hash:expr, $bufs:expr, $discarded:ident, $n:literal; $($b:ident $i:literal),+) => {{
        let mut bufs = $bufs.into_iter();
        $(let mut $b = bufs.next().unwrap_or_default();)+
        for x in $batch {
            match $hash(&x, $n) {
                $(Some($i) => $b.push(x),)+
                Some(p) => out_of_range(p, $n),
                None => $discarded += 1,
            }
        }
        vec![$($b),+]
    }};
}

impl<T: Send, H> Sink<T> for PartitionRouter<T, H>
where
    H: Fn(&T, usize) -> Option<usize> + Send + Sync,
{
    fn events(&mut self, _w: i64, mut batch: Vec<T>) {
        let n = self.inbox.lanes();
        let len = batch.len();
        // Room for an even share and a quarter more: most buckets never grow.
        let per = len / n + len / (4 * n) + 1;
        let mut discarded = 0u64;
        let hash = &*self.hash;
        let buckets = match n {
            1 => {
                // One stage: the batch goes as it is, less what the hash discards.
                batch.retain(|x| match hash(x, 1) {
                    Some(0) => true,
                    Some(p) => out_of_range(p, 1),
                    None => {
                        discarded += 1;
                        false
                    }
                });
                vec![batch]
            }
            // Two to four stages (the default on machines of that many cores): the
            // buckets are locals, so their lengths stay in registers. Pushing through
            // the vector of buckets stored and reloaded a length at every event, and
            // the next push to that bucket waited for it (measurements:
            // docs/BENCHMARKS.md).
            2 => scatter_locals!(batch, hash, self.inbox.buffers(2, per), discarded, 2; b0 0, b1 1),
            3 => {
                scatter_locals!(batch, hash, self.inbox.buffers(3, per), discarded, 3; b0 0, b1 1, b2 2)
            }
            4 => {
                scatter_locals!(batch, hash, self.inbox.buffers(4, per), discarded, 4; b0 0, b1 1, b2 2, b3 3)
            }
            _ => {
                let mut buckets = self.inbox.buffers(n, per);
                for x in batch {
                    match hash(&x, n) {
                        Some(p) if p < n => buckets[p].push(x),
                        Some(p) => out_of_range(p, n),
                        None => discarded += 1,
                    }
                }
                buckets
            }
        };
        if discarded > 0 {
            self.stats.discarded.fetch_add(discarded, Ordering::Relaxed);
        }
        self.seq += 1;
        for (p, b) in buckets.into_iter().enumerate() {
            if b.is_empty() {
                self.inbox.recycle(b);
            } else {
                self.inbox
                    .push(p, self.speaker.envelope(self.seq, Msg::Batch(b)));
            }
        }
    }
    fn trigger(&mut self, _w: i64, _name: &TriggerName, _complete: bool) {}
    fn producer_done(&mut self, from: usize) {
        announce(&self.inbox, || self.speaker.ended(from));
    }
    fn finish(&mut self) {
        announce(&self.inbox, || self.speaker.finished());
    }
}

/// Pushes the end of a producer made by `end` (if any) to every lane of `inbox`.
fn announce<T>(inbox: &Inbox<T>, end: impl Fn() -> Option<Envelope<T>>) {
    for p in 0..inbox.lanes() {
        if let Some(e) = end() {
            inbox.push(p, e);
        }
    }
}

/// A custom partition hash returned a partition the layer does not have: the lane's
/// task ends with this panic, reported as the flow's error.
fn out_of_range(p: usize, n: usize) -> ! {
    panic!("the partition hash returned partition {p}, but the layer has {n} stages (0..{n})")
}

/// Hands whole batches to the next layer's lanes in turn (GenStage's DemandDispatcher
/// has no routing either; a rotating start spreads small inputs over the stages).
pub(crate) struct RoundRobinRouter<T> {
    pub inbox: Arc<Inbox<T>>,
    pub speaker: Speaker,
    pub seq: u64,
}

impl<T: Send> Sink<T> for RoundRobinRouter<T> {
    fn events(&mut self, _w: i64, batch: Vec<T>) {
        let lane = self.speaker.turn(self.seq) % self.inbox.lanes();
        self.seq += 1;
        self.inbox
            .push(lane, self.speaker.envelope(self.seq, Msg::Batch(batch)));
    }
    fn trigger(&mut self, _w: i64, _name: &TriggerName, _complete: bool) {}
    fn producer_done(&mut self, from: usize) {
        announce(&self.inbox, || self.speaker.ended(from));
    }
    fn finish(&mut self) {
        announce(&self.inbox, || self.speaker.finished());
    }
}

/// One upstream emission as seen by `departition`.
pub(crate) struct Tagged<S> {
    pub part: usize,
    pub window: i64,
    pub kind: WindowKind,
    /// None marks the completion of the window on this partition.
    pub item: Option<S>,
}

/// Feeds a departition: tags each triggered event with its partition and window, and
/// marks window completions.
pub(crate) struct TagRouter<S> {
    pub inbox: Arc<Inbox<Tagged<S>>>,
    pub cx: LaneCtx,
    pub seq: u64,
}

impl<S: Send> Sink<S> for TagRouter<S> {
    fn events(&mut self, w: i64, batch: Vec<S>) {
        let (part, kind) = (self.cx.index, self.cx.kind);
        let window = if kind == WindowKind::Global { 0 } else { w };
        let items: Vec<Tagged<S>> = batch
            .into_iter()
            .map(|x| Tagged {
                part,
                window,
                kind,
                item: Some(x),
            })
            .collect();
        if !items.is_empty() {
            self.seq += 1;
            self.inbox.push(
                0,
                Envelope {
                    from: self.cx.index,
                    order: self.cx.tag.order(),
                    seq: self.seq,
                    msg: Msg::Batch(items),
                },
            );
        }
    }
    fn trigger(&mut self, w: i64, _name: &TriggerName, complete: bool) {
        if complete {
            let window = if self.cx.kind == WindowKind::Global {
                0
            } else {
                w
            };
            self.seq += 1;
            let t = Tagged {
                part: self.cx.index,
                window,
                kind: self.cx.kind,
                item: None,
            };
            self.inbox.push(
                0,
                Envelope {
                    from: self.cx.index,
                    order: self.cx.tag.order(),
                    seq: self.seq,
                    msg: Msg::Batch(vec![t]),
                },
            );
        }
    }
    fn finish(&mut self) {
        self.inbox.push(
            0,
            Envelope {
                from: self.cx.index,
                order: u64::MAX,
                seq: u64::MAX,
                msg: Msg::Done,
            },
        );
    }
}

/// Every stage's partial results, tagged with the stage's index.
pub(crate) type Partials<R> = Arc<Mutex<Vec<(usize, Vec<R>)>>>;

/// A terminal fold run inside the lanes (`sum`, `count`, `for_each`, `run`, and
/// `collect`, whose partial results are the batches themselves): per-batch partial
/// results, handed to a shared list once per lane at the end.
pub(crate) struct FoldSink<T, R, F> {
    pub f: Arc<F>,
    /// The stage's index, so that partial results can be put in stage order.
    pub lane: usize,
    pub partials: Vec<R>,
    pub out: Partials<R>,
    pub _t: PhantomData<fn(T)>,
}

impl<T, R, F> Sink<T> for FoldSink<T, R, F>
where
    F: Fn(Vec<T>) -> Option<R> + Send + Sync,
    R: Send,
{
    fn events(&mut self, _w: i64, batch: Vec<T>) {
        if let Some(r) = (self.f)(batch) {
            self.partials.push(r);
        }
    }
    fn trigger(&mut self, _w: i64, _name: &TriggerName, _complete: bool) {}
    fn finish(&mut self) {
        let partials = std::mem::take(&mut self.partials);
        self.out.lock().push((self.lane, partials));
    }
}
