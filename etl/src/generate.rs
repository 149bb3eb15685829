//! The sample input: JSON Lines records, about 1 in 1 000 of them bad.

use std::io::{self, Write};

/// Writes `n` records as JSON Lines into `out`, about 1 in 1 000 of them bad in one of
/// three ways (invalid JSON, a missing field, a wrong type). Returns how many are bad.
///
/// The output depends on `n` only, so a run over the sample can be resumed: the same
/// `n` gives the same bytes, which the loader recognises.
///
/// ```
/// let mut out = Vec::new();
/// let bad = stageflow_etl::generate::sample(&mut out, 5_000)?;
/// let text = String::from_utf8(out)?;
/// assert_eq!(text.lines().count(), 5_000);
/// assert!(bad > 0 && bad < 20, "{bad}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sample(out: &mut impl Write, n: u64) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    let mut bad = 0;
    for id in 0..n {
        // A cheap hash spreads bad lines and values without a random crate.
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        match (h % 1000, h % 3) {
            (0, 0) => writeln!(out, "{{\"id\": {id}, \"name\": \"broken")?,
            (0, 1) => writeln!(out, "{{\"id\": {id}, \"name\": \"user{id}\", \"amount\": 1.5, \"tags\": [], \"ts\": \"2024-01-01T00:00:00Z\"}}")?,
            (0, _) => writeln!(out, "{{\"id\": \"{id}\", \"name\": \"user{id}\", \"email\": \"u{id}@example.com\", \"amount\": 1.5, \"tags\": [], \"ts\": \"2024-01-01T00:00:00Z\"}}")?,
            _ => writeln!(
                out,
                "{{\"id\": {id}, \"name\": \"user{id}\", \"email\": \"u{id}@example.com\", \"amount\": {}.{:02}, \"tags\": [\"t{}\", \"t{}\"], \"ts\": \"2024-{:02}-{:02}T{:02}:{:02}:00Z\"}}",
                h % 10_000,
                h % 100,
                h % 7,
                h % 13,
                1 + h % 12,
                1 + h % 28,
                h % 24,
                h % 60
            )?,
        }
        if h % 1000 == 0 {
            bad += 1;
        }
    }
    out.flush()?;
    Ok(bad)
}
