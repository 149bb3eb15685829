//! Port of dashbitco/flow v1.2.4 `test/flow_test.exs`, describe "run/1": "does not
//! leave lingering messages nor monitors" [BEAM]. For threads: no thread outlives a
//! run, also when a closure panics. It counts the process's threads, so it is the only
//! test of this binary (other tests would run concurrently on harness threads).

use stageflow::flow::{Flow, Options};

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line in /proc/self/status")
}

#[test]
fn run_does_not_leave_threads_behind() {
    // rayon's global pool starts once, before the measurement.
    let _: u64 = Flow::from_iter(1..=100u64).sum();
    let before = thread_count();
    for _ in 0..20 {
        let v: Vec<u64> = Flow::from_iter_with(1..=100u64, Options::new().stages(4))
            .reduce(|| 0, |a, x| a + x)
            .on_trigger(|a, _| (vec![a], a))
            .collect();
        assert_eq!(v.iter().sum::<u64>(), 5050);
        let _ = Flow::from_iter(vec![1u64])
            .map(|_: u64| -> u64 { panic!("x") })
            .try_run();
        let mut it = Flow::from_iter(0u64..).map(|x| x + 1).into_iter();
        assert_eq!(it.next(), Some(1));
        drop(it);
    }
    assert_eq!(thread_count(), before);
}
