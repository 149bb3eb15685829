//! Runs flow tests on rayon pools of 1, 2, 4 and 8 threads (each built for the test,
//! never the global pool), so that window tests pin results that must not depend on
//! the thread count: a layer fed by one iterator sees that iterator's events in its
//! order, however many source stages the threads give it.
#![allow(dead_code)]

use std::fmt::Debug;

/// The pool sizes every window test runs on.
pub const THREADS: [usize; 4] = [1, 2, 4, 8];

/// Runs `f(threads)` inside a fresh pool of each size of [`THREADS`]; the checks are
/// `f`'s. The size is printed first, so a failure's output says which pool failed.
pub fn each_pool(f: impl Fn(usize) + Sync) {
    for n in THREADS {
        eprintln!("-- on a pool of {n} threads");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("build a rayon pool");
        pool.install(|| f(n));
    }
}

/// Runs `f` inside a fresh pool of each size of [`THREADS`], checks that every pool
/// gives the result of the first (one thread), and returns it.
pub fn on_pools<R, F>(f: F) -> R
where
    R: PartialEq + Debug + Send,
    F: Fn() -> R + Sync,
{
    let mut first: Option<R> = None;
    for n in THREADS {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("build a rayon pool");
        let r = pool.install(&f);
        match &first {
            None => first = Some(r),
            Some(one) => assert!(
                &r == one,
                "{n} threads differ from 1 thread:\n{}\nvs\n{}",
                short(&r),
                short(one)
            ),
        }
    }
    first.expect("THREADS is not empty")
}

/// `x`'s debug form, cut to a readable length.
fn short(x: &impl Debug) -> String {
    let s = format!("{x:?}");
    match s.char_indices().nth(600) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// A fresh pool of `n` threads, for tests that check inside (`proptest`'s
/// `prop_assert!` returns from the test, so it cannot run inside [`each_pool`]).
pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("build a rayon pool")
}
