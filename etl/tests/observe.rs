//! Observing the ETL: its pipeline's picture (`--dot`, drawn by Graphviz when it is
//! installed) and its Prometheus endpoint (`--metrics-addr`), scraped during a run
//! and checked against the run's final report.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{run, scratch, text};

#[test]
fn the_pipeline_picture_has_every_stage_and_subscription_and_graphviz_draws_it() {
    let dir = scratch("dot");
    let out = run(
        &dir,
        &["--sample", "100", "--parsers", "3", "--dot", "etl.dot"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dot = std::fs::read_to_string(dir.join("etl.dot")).unwrap();
    // Node ids by stage name.
    let mut ids = BTreeMap::new();
    for line in dot.lines() {
        let line = line.trim();
        if let Some((id, rest)) = line.split_once(" [label=\"") {
            if !id.contains("->") {
                let name = rest.split("\\n").next().unwrap().to_string();
                ids.insert(name, id.to_string());
            }
        }
    }
    let names: Vec<&str> = ids.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["batch", "lines", "parse-1", "parse-2", "parse-3", "write"],
        "{dot}"
    );
    let edge = |from: &str, to: &str, label: &str| {
        format!("{} -> {} [label=\"{label}\"];", ids[from], ids[to])
    };
    let mut expected = vec![];
    for p in ["parse-1", "parse-2", "parse-3"] {
        expected.push(edge("lines", p, "max 1000 / min 500"));
        expected.push(edge(p, "batch", "max 2000 / min 1000, transient"));
    }
    expected.push(edge("batch", "write", "max 4 / min 2"));
    let edges: Vec<&str> = dot
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" -> "))
        .collect();
    assert_eq!(edges.len(), expected.len(), "{dot}");
    for e in &expected {
        assert!(edges.contains(&e.as_str()), "missing {e} in {dot}");
    }
    if Command::new("dot").arg("-V").output().is_err() {
        println!(
            "skipping the drawing: Graphviz's `dot` is not installed (apt-get install graphviz)"
        );
        return;
    }
    let svg = Command::new("dot")
        .args(["-Tsvg", "etl.dot"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert_eq!(svg.matches("class=\"node\"").count(), 6, "{svg}");
    assert_eq!(svg.matches("class=\"edge\"").count(), 7, "{svg}");
    for name in ids.keys() {
        // Graphviz writes a dash as an entity.
        let drawn = format!(">{}</text>", name.replace('-', "&#45;"));
        assert!(svg.contains(&drawn), "{name} not drawn");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--metrics-addr` (the `prometheus` feature, on by default).
#[cfg(feature = "prometheus")]
mod prometheus {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::common::{etl, record, run, scratch, text};

    #[test]
    fn a_bad_metrics_address_is_refused_by_name() {
        let dir = scratch("metrics-addr");
        let out = run(&dir, &["--sample", "10", "--metrics-addr", "localhost"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--metrics-addr") && err.contains("\"localhost\""),
            "{}",
            text(&out)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// One sample of a scrape: metric name and labels.
    type Series = (String, BTreeMap<String, String>);

    /// Parses Prometheus' text exposition format (version 0.0.4) strictly: every line is
    /// blank, a `# HELP`/`# TYPE` line or a sample; a family's TYPE comes once and before
    /// its samples; names and label names are valid; label values use only the allowed
    /// escapes; values are floats. Returns the samples, and the families with HELP.
    fn parse_exposition(text: &str) -> Result<(BTreeMap<Series, f64>, Vec<String>), String> {
        fn valid_name(n: &str, colons: bool) -> bool {
            let mut chars = n.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
        }
        let mut samples = BTreeMap::new();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), Some(_)) if valid_name(name, true) => {
                        helped.push(name.to_string())
                    }
                    (Some("TYPE"), Some(name), Some(kind)) if valid_name(name, true) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at("unknown type"));
                        }
                        if samples.keys().any(|(n, _): &Series| n == name) {
                            return Err(at("TYPE after the family's samples"));
                        }
                        if typed.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(at("second TYPE"));
                        }
                    }
                    (Some("HELP" | "TYPE"), _, _) => return Err(at("bad HELP or TYPE")),
                    _ => {} // a plain comment
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
            let name = &line[..name_end];
            if !valid_name(name, true) {
                return Err(at("bad metric name"));
            }
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices().peekable();
                loop {
                    while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                        chars.next();
                    }
                    if let Some((j, '}')) = chars.peek().copied() {
                        rest = &inner[j + 1..];
                        break;
                    }
                    let mut label = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '=')) => break,
                            Some((_, c)) => label.push(c),
                            None => return Err(at("unterminated labels")),
                        }
                    }
                    if !valid_name(&label, false) {
                        return Err(at("bad label name"));
                    }
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err(at("label value without quotes"));
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '"')) => break,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                _ => return Err(at("bad escape in a label value")),
                            },
                            Some((_, c)) => value.push(c),
                            None => return Err(at("unterminated label value")),
                        }
                    }
                    if labels.insert(label, value).is_some() {
                        return Err(at("a label twice"));
                    }
                }
            }
            let mut fields = rest.split_whitespace();
            let value = fields.next().ok_or_else(|| at("no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().map_err(|_| at("value is not a float"))?,
            };
            if let Some(ts) = fields.next() {
                ts.parse::<i64>().map_err(|_| at("bad timestamp"))?;
            }
            if fields.next().is_some() {
                return Err(at("trailing fields"));
            }
            let family = typed
                .keys()
                .find(|f| {
                    name == f.as_str()
                        || ["_sum", "_count", "_bucket"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(f.as_str()))
                })
                .ok_or_else(|| at("sample without TYPE"))?;
            let _ = family;
            if samples.insert((name.to_string(), labels), value).is_some() {
                return Err(at("a series twice"));
            }
        }
        Ok((samples, helped))
    }

    #[test]
    fn the_exposition_parser_refuses_what_prometheus_refuses() {
        let good = "# HELP a_total Things\n# TYPE a_total counter\na_total{stage=\"x \\\"q\\\"\",kind=\"k\"} 3\n\n# TYPE g gauge\ng -1.5\n";
        let (samples, helped) = parse_exposition(good).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(helped, ["a_total"]);
        let labels: BTreeMap<String, String> = [("stage", "x \"q\""), ("kind", "k")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(samples[&("a_total".to_string(), labels)], 3.0);
        for bad in [
            "a 1\n",                                     // no TYPE
            "# TYPE a counter\na{x=\"1} 1\n",            // unterminated
            "# TYPE a counter\na{1x=\"1\"} 1\n",         // bad label name
            "# TYPE a counter\na one\n",                 // not a float
            "# TYPE a counter\na 1\n# TYPE a counter\n", // TYPE after samples
            "# TYPE a counterish\n",                     // unknown type
            "# TYPE a counter\na{x=\"\\t\"} 1\n",        // bad escape
            "# TYPE 9a counter\n",                       // bad name
        ] {
            assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
        }
    }

    /// Fetches `http://addr/metrics`.
    fn scrape(addr: &str) -> String {
        let mut conn = TcpStream::connect(addr).expect("the metrics endpoint accepts");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(conn, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        body.to_string()
    }

    fn value(samples: &BTreeMap<Series, f64>, name: &str, stage: &str) -> Option<f64> {
        samples
            .iter()
            .find(|((n, l), _)| n == name && l.get("stage").is_some_and(|s| s == stage))
            .map(|(_, v)| *v)
    }

    #[test]
    fn the_metrics_endpoint_serves_prometheus_text_that_matches_the_final_report() {
        let dir = scratch("metrics");
        const N: u64 = 20_000;
        // More than the MiB that identifies a piped input, in whole batches: after the
        // last full batch nothing is pending, and a timeout of ten minutes never fires.
        let mut data = String::new();
        for id in 0..N {
            data.push_str(&record(
                id,
                &format!("n{id}"),
                id as f64 / 4.0,
                &["t"],
                "2024-05-01T12:00:00Z",
            ));
            data.push('\n');
        }
        assert!(data.len() > 1 << 20);
        let mut child = etl()
            .args([
                "-",
                "--db",
                "m.db",
                "--rejects",
                "r.jsonl",
                "--parsers",
                "2",
                "--batch-size",
                "1000",
                "--batch-timeout-ms",
                "600000",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .current_dir(&dir)
            .env("TMPDIR", dir.join("tmp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The address (port 0 picks one) is the first line on standard error.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .strip_prefix("serving metrics at http://")
            .and_then(|a| a.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("no address announced: {first:?}"))
            .to_string();
        let rest_of_stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // The input stays open (held by this test) until the scrape is done: the run
        // cannot end before it.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(data.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let until = Instant::now() + Duration::from_secs(120);
        let (text_seen, samples) = loop {
            let body = scrape(&addr);
            let (samples, _) = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
            let done = value(&samples, "stageflow_events_in_total", "batch") == Some(N as f64)
                && value(&samples, "stageflow_events_out_total", "batch") == Some(20.0)
                && value(&samples, "stageflow_events_in_total", "write") == Some(20.0);
            if done {
                break (body, samples);
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("etl ended ({status}) before the scrape");
            }
            assert!(
                Instant::now() < until,
                "the counters never reached {N}:\n{body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let (_, helped) = parse_exposition(&text_seen).unwrap();
        for family in [
            "stageflow_events_in_total",
            "stageflow_events_out_total",
            "stageflow_batches_total",
            "stageflow_busy_seconds",
            "stageflow_buffered",
            "stageflow_batches_by_size_total",
        ] {
            assert!(helped.iter().any(|h| h == family), "no HELP for {family}");
        }
        assert_eq!(
            value(&samples, "stageflow_batches_by_size_total", "batch"),
            Some(20.0)
        );
        // promtool, when installed, checks the text too.
        if let Ok(mut promtool) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            promtool
                .stdin
                .take()
                .unwrap()
                .write_all(text_seen.as_bytes())
                .unwrap();
            let out = promtool.wait_with_output().unwrap();
            // Exit 1: it does not parse; 3: its lint (names, units) complains.
            assert_eq!(
                out.status.code(),
                Some(0),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            println!(
                "promtool is not installed: the exposition was checked by this test's parser only"
            );
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let err = rest_of_stderr.join().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "{report}\n{err}");
        // The report's table: stage, in, out, buffered, exit.
        let mut rows = 0;
        for line in report.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f[4] != "normal" {
                break;
            }
            let (stage, events_in, events_out) = (f[0], f[1], f[2]);
            let scraped_in = value(&samples, "stageflow_events_in_total", stage);
            let scraped_out = value(&samples, "stageflow_events_out_total", stage);
            assert_eq!(
                scraped_in,
                Some(events_in.parse().unwrap()),
                "{stage}: {report}"
            );
            assert_eq!(
                scraped_out,
                Some(events_out.parse().unwrap()),
                "{stage}: {report}"
            );
            rows += 1;
        }
        assert_eq!(rows, 5, "{report}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `ETL_TRACE` installs the program's tracing subscriber (the library never does):
/// the stages' spans carry their names and the exits are events.
#[cfg(feature = "tracing")]
#[test]
fn etl_trace_prints_the_stages_spans_and_events() {
    let dir = scratch("trace");
    let out = common::etl()
        .current_dir(&dir)
        .env("TMPDIR", dir.join("tmp"))
        .env("ETL_TRACE", "info")
        .args(["--sample", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for stage in ["lines", "parse-1", "batch", "write"] {
        assert!(
            stderr.contains(&format!("stage{{name=\"{stage}\"")),
            "no span of stage {stage} in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("stage exited"),
        "no exit event in:\n{stderr}"
    );

    let bad = common::etl()
        .current_dir(&dir)
        .env("TMPDIR", dir.join("tmp"))
        .env("ETL_TRACE", "loud")
        .args(["--sample", "1"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ETL_TRACE=loud"),
        "{}",
        text(&bad)
    );
}
