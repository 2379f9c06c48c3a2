//! A driver for profilers: spawns and joins `n` trivial tasks, `rounds` times,
//! the way `benches/group.rs` does, so that instruction counts and allocations
//! per task can be compared between the group and tokio's `JoinSet`.
//!
//! ```sh
//! cargo build --release -p fanout-group --example spawn_join_loop
//! valgrind --tool=callgrind target/release/examples/spawn_join_loop group current 1000 200
//! ```
//!
//! Arguments: `group` | `no-timeline` | `joinset` | `handles` (tokio's
//! `JoinHandle`s awaited in order: the floor under the group), `current` |
//! `multi`, `n`, `rounds`. One extra round runs first as a warm-up.

use tokio::runtime::Builder;

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use workloads::{fanout_group, join_handles, tokio_joinset};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: spawn_join_loop group|no-timeline|joinset|handles current|multi N ROUNDS";
    let [mode, runtime, n, rounds] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect(usage);
    let rounds: usize = rounds.parse().expect(usage);
    let rt = match runtime.as_str() {
        "current" => Builder::new_current_thread().enable_all().build(),
        "multi" => Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => panic!("{usage}"),
    }
    .unwrap();
    let mode = mode.clone();
    let round = move || {
        let mode = mode.clone();
        async move {
            match mode.as_str() {
                "group" => fanout_group(n, true).await,
                "no-timeline" => fanout_group(n, false).await,
                "joinset" => tokio_joinset(n).await,
                "handles" => join_handles(n).await,
                _ => panic!("{usage}"),
            }
        }
    };
    let started = std::time::Instant::now();
    for _ in 0..=rounds {
        // Inside a task, as a server's handler spawns (and as the bench does).
        rt.block_on(async { tokio::spawn(round()).await.unwrap() });
    }
    let per_task = started.elapsed() / ((rounds + 1) * n) as u32;
    println!("{per_task:?} per task (wall clock, warm-up included)");
}
