//! Cost of the task group against raw tokio.
//!
//! Run: `cargo bench -p fanout-group --bench group`
//!
//! Each `spawn_join` sample spawns `n` trivial tasks and waits for all their
//! results, on two runtimes:
//! - `current_thread`: the group's own overhead, with no cross-core effects;
//! - `multi_thread`: two workers, spawning from inside a task as a server's
//!   request handler does (spawning from outside the runtime measures tokio's
//!   per-spawn worker wake-ups instead).
//!
//! The `cancel_1000_waiting` rows time from the cancel call until every one of
//! 1 000 parked tasks has been stopped and reaped (on a multi-threaded
//! runtime of their own, so that they leave nothing behind for the other rows).

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use divan::{Bencher, black_box};
use fanout_group::Group;
use tokio::{
    runtime::{Builder, Runtime},
    task::JoinSet,
};

mod workloads;

use workloads::{fanout_group, tokio_joinset, try_join_all};

fn main() {
    divan::main();
}

static CURRENT: LazyLock<Runtime> =
    LazyLock::new(|| Builder::new_current_thread().enable_all().build().unwrap());

static MULTI: LazyLock<Runtime> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

/// The `cancel` rows' own runtime, like `MULTI`. On `MULTI` they left it slow
/// for the rows after them (divan runs `cancel` first): after the `JoinSet`
/// row's 1 000-task aborts, `multi_thread`'s first row took 60–90 µs a sample
/// at n = 10 for seconds, against 8–12 µs when run alone or after the
/// `cancel` rows on a runtime of their own.
static CANCEL: LazyLock<Runtime> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

const SIZES: &[usize] = &[10, 1_000, 100_000];

/// Runs `f` as a task of `rt`, and waits for it.
fn in_task<F: Future<Output = ()> + Send + 'static>(rt: &Runtime, f: F) {
    rt.block_on(async { tokio::spawn(f).await.unwrap() })
}

/// The spawn+join benchmarks, once per runtime.
macro_rules! spawn_join_benches {
    ($module:ident, $rt:ident) => {
        #[divan::bench_group]
        mod $module {
            use super::*;

            #[divan::bench(args = SIZES)]
            fn spawn_join_fanout_group(b: Bencher<'_, '_>, n: usize) {
                b.bench(|| in_task(&$rt, fanout_group(n, true)));
            }

            #[divan::bench(args = SIZES)]
            fn spawn_join_fanout_group_no_timeline(b: Bencher<'_, '_>, n: usize) {
                b.bench(|| in_task(&$rt, fanout_group(n, false)));
            }

            #[divan::bench(args = SIZES)]
            fn spawn_join_tokio_joinset(b: Bencher<'_, '_>, n: usize) {
                b.bench(|| in_task(&$rt, tokio_joinset(n)));
            }

            // futures' `try_join_all` is quadratic-ish at 100 000 handles
            // (seconds per sample), so it gets fewer samples.
            #[divan::bench(args = SIZES, sample_count = 10)]
            fn spawn_join_try_join_all(b: Bencher<'_, '_>, n: usize) {
                b.bench(|| in_task(&$rt, try_join_all(n)));
            }
        }
    };
}

spawn_join_benches!(current_thread, CURRENT);
spawn_join_benches!(multi_thread, MULTI);

/// Cancelling 1 000 parked tasks, on a multi-threaded runtime ([`CANCEL`]).
#[divan::bench_group]
mod cancel {
    use super::*;

    /// 1 000 tasks that count themselves in, then park forever.
    fn parked<S>(spawn: impl Fn(Arc<AtomicUsize>) -> S) -> S {
        CANCEL.block_on(async {
            let started = Arc::new(AtomicUsize::new(0));
            let set = spawn(started.clone());
            while started.load(Ordering::Relaxed) < 1_000 {
                tokio::task::yield_now().await;
            }
            set
        })
    }

    #[divan::bench]
    fn waiting_1000_fanout_group(b: Bencher<'_, '_>) {
        b.with_inputs(|| {
            parked(|started| {
                let group = Group::<Infallible>::new();
                for _ in 0..1_000 {
                    let started = started.clone();
                    group.spawn("parked", move |_| async move {
                        started.fetch_add(1, Ordering::Relaxed);
                        std::future::pending::<Result<(), Infallible>>().await
                    });
                }
                group
            })
        })
        .bench_values(|group| {
            CANCEL.block_on(async move {
                group.cancel("benchmark");
                black_box(group.wait().await.unwrap_err());
            })
        });
    }

    #[divan::bench]
    fn waiting_1000_tokio_joinset(b: Bencher<'_, '_>) {
        b.with_inputs(|| {
            parked(|started| {
                let mut set = JoinSet::<()>::new();
                for _ in 0..1_000 {
                    let started = started.clone();
                    set.spawn(async move {
                        started.fetch_add(1, Ordering::Relaxed);
                        std::future::pending::<()>().await
                    });
                }
                set
            })
        })
        .bench_values(|mut set| {
            CANCEL.block_on(async move {
                set.abort_all();
                while set.join_next().await.is_some() {}
            })
        });
    }
}
