//! `fanout demo`: the seed scenarios on the task group, in real time, each
//! followed by its waterfall.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use fanout_group::{Group, Outcome, Timeline};
use tokio::time::{Instant, sleep};

/// A downstream call that takes `ms` and answers `value` (or fails with it).
async fn call(ms: u64, value: &'static str, ok: bool) -> Result<&'static str, String> {
    sleep(Duration::from_millis(ms)).await;
    if ok {
        Ok(value)
    } else {
        Err(value.to_string())
    }
}

pub(crate) async fn run() {
    println!("fanout demo: the scenarios that motivated fanout, on the task group.");
    println!(
        "(Each call is a timer standing in for a service; the gateway demo comes with `fanout serve`.)\n"
    );

    // 1. Merge three interfaces into one map.
    let start = Instant::now();
    let group = Group::new();
    let timeline = group.timeline();
    let calls = vec![
        group.spawn("interface1", |_| async {
            call(100, "value1", true).await.map(|v| ("key1", v))
        }),
        group.spawn("interface2", |_| async {
            call(300, "value2", true).await.map(|v| ("key2", v))
        }),
        group.spawn("interface3", |_| async {
            call(200, "value3", true).await.map(|v| ("key3", v))
        }),
    ];
    let merged = group
        .join(calls)
        .await
        .map(|kv| kv.into_iter().collect::<BTreeMap<_, _>>());
    section("merge three interfaces into one map", start, &timeline);
    match merged {
        Ok(map) => println!("  result: {}", json_map(&map)),
        Err(err) => println!("  error: {err}"),
    }
    println!("  calls of 100, 300 and 200 ms: one after another would take 600 ms\n");

    // 2. Scatter-gather a user.
    let start = Instant::now();
    let group = Group::new();
    let timeline = group.timeline();
    let name = group.spawn("name", |_| call(80, "Ada Lovelace", true));
    let points = group.spawn("loyalty", |_| async { call(1000, "1200", true).await });
    let result = group.join((name, points)).await;
    section("scatter-gather a user", start, &timeline);
    match result {
        Ok((name, points)) => {
            println!("  result: {{\"name\":\"{name}\",\"loyalty_points\":{points}}}\n")
        }
        Err(err) => println!("  error: {err}\n"),
    }

    // 3. The same with a 500 ms deadline: partial answer, slow call cancelled.
    let start = Instant::now();
    let group = Group::builder()
        .collect_all()
        .deadline(Duration::from_millis(500))
        .build();
    let timeline = group.timeline();
    let name = group.spawn("name", |_| call(80, "Ada Lovelace", true));
    let points = group.spawn("loyalty", |_| call(1000, "1200", true));
    let (name, points) = group.join((name, points)).await;
    section("the same with a 500 ms deadline", start, &timeline);
    let mut body = String::from("{");
    if let Ok(name) = name {
        let _ = write!(body, "\"name\":\"{name}\"");
    }
    body.push('}');
    let complete = points.is_ok();
    println!("  result: {body}   complete: {complete}");
    if let Err(err) = points {
        println!("  loyalty: {err}");
    }
    println!();

    // 4. Fail fast.
    let start = Instant::now();
    let group = Group::new();
    let timeline = group.timeline();
    let inventory = group.spawn("inventory", |_| call(2000, "7 left", true));
    let payment = group.spawn("payment", |_| call(50, "card declined", false));
    let result = group.join((inventory, payment)).await;
    section(
        "fail fast: one required call fails at 50 ms, another takes 2 s",
        start,
        &timeline,
    );
    match result {
        Ok(_) => println!("  unexpectedly succeeded\n"),
        Err(err) => println!("  error: {err}\n"),
    }
}

fn section(title: &str, start: Instant, timeline: &Timeline) {
    println!("{title}: {} ms", start.elapsed().as_millis());
    print!("{}", waterfall(timeline));
}

/// Draws each task as a bar on a shared time axis.
fn waterfall(timeline: &Timeline) -> String {
    const WIDTH: f64 = 40.0;
    let entries = timeline.entries();
    let origin = timeline.origin();
    let end = entries
        .iter()
        .map(|e| e.finished - origin)
        .max()
        .unwrap_or_default();
    let scale = WIDTH / end.as_secs_f64().max(1e-9);
    let mut out = String::new();
    for e in &entries {
        let from = e.started.map_or(e.finished, |s| s) - origin;
        let to = e.finished - origin;
        let lead = (from.as_secs_f64() * scale).round() as usize;
        let len = (((to - from).as_secs_f64() * scale).round() as usize).max(1);
        let (mark, what) = match &e.outcome {
            Outcome::Succeeded => ('█', "ok".to_string()),
            Outcome::Failed { error } => ('▓', format!("failed: {error}")),
            Outcome::Cancelled(cause) => ('░', format!("cancelled: {cause}")),
            Outcome::TimedOut { after } => ('░', format!("timed out after {after:?}")),
            Outcome::NotStarted(_) => ('·', "never started".to_string()),
            Outcome::Panicked { message } => ('▓', format!("panicked: {message}")),
            other => ('?', format!("{other:?}")),
        };
        let bar: String = std::iter::repeat_n(mark, len).collect();
        let _ = writeln!(
            out,
            "  {:<10} {:lead$}{bar:<pad$} {:>5} ms  {what}",
            e.name.as_str(),
            "",
            (to - from).as_millis(),
            pad = WIDTH as usize + 1 - lead.min(WIDTH as usize),
        );
    }
    out
}

fn json_map(map: &BTreeMap<&str, &str>) -> String {
    let fields: Vec<_> = map
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!("{{{}}}", fields.join(","))
}
