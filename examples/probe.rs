use stageflow::flow::{Flow, FxBuildHasher, Options, Unit, Window};
use std::collections::HashMap;
type Event = (u64, u64, u64);
fn main() {
    let which = std::env::args().nth(1).unwrap();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        if which == "w6" {
            let n = 5_000_000u64;
            let window = Window::fixed(1, Unit::Second, |e: &Event| e.0 as i64);
            let rows: Vec<(i64, u64, u64)> = Flow::from_iter((0..n).map(|i| (i, i % 8, i % 1000)))
                .partition_by(Options::new().window(window), |e: &Event| e.1)
                .reduce(
                    HashMap::<u64, u64, FxBuildHasher>::default,
                    |mut m, e: Event| {
                        *m.entry(e.1).or_insert(0) += e.2;
                        m
                    },
                )
                .on_trigger(|m, info| {
                    (
                        m.into_iter().map(|(k, s)| (info.window, k, s)).collect(),
                        HashMap::default(),
                    )
                })
                .collect();
            assert_eq!(rows.len(), 40000);
        } else {
            let text = std::fs::read_to_string("target/words.txt").unwrap();
            let counts: Vec<(&str, u64)> = Flow::from_iter(text.lines())
                .flat_map(|line: &str| line.split(' '))
                .partition(Options::new())
                .reduce(HashMap::<&str, u64, FxBuildHasher>::default, |mut m, w| {
                    *m.entry(w).or_insert(0) += 1;
                    m
                })
                .emit_events()
                .collect();
            assert_eq!(counts.len(), 10000);
        }
        println!("{:?}", t.elapsed());
    }
}
