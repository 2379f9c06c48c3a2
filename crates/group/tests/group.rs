//! Behaviour of `fanout-group`: the ten semantics of the product spec (§1), then
//! the conformance cases ported from Go's errgroup, kratos, sourcegraph/conc and
//! Java's StructuredTaskScope, and the known pitfalls, each named after its origin.
//!
//! Time is tokio's paused clock: sleeps complete instantly and in order, and
//! elapsed times are exact.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use fanout_group::{Cause, Group, GroupError, TaskError, TaskName};
use futures::FutureExt;
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts live values: lets a test see that a task's future was dropped.
#[derive(Clone, Default)]
struct Alive(Arc<AtomicUsize>);

struct Token(Arc<AtomicUsize>);

impl Alive {
    fn token(&self) -> Token {
        self.0.fetch_add(1, Ordering::SeqCst);
        Token(self.0.clone())
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forever() {
    std::future::pending::<()>().await
}

// ---------------------------------------------------------------------------
// 1. Parallel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_tasks_run_in_parallel_on_worker_threads() {
    // Two tasks that each spin (without awaiting) until both are running at the
    // same moment: possible only if they are on two worker threads at once.
    let arrived = Arc::new(AtomicUsize::new(0));
    let group = Group::<&str>::new();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let arrived = arrived.clone();
            group.spawn(format!("spinner-{i}"), move |_| async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                let give_up = std::time::Instant::now() + Duration::from_secs(20);
                while arrived.load(Ordering::SeqCst) < 2 {
                    if std::time::Instant::now() > give_up {
                        return Err("the other task never ran at the same time");
                    }
                    std::hint::spin_loop();
                }
                Ok(std::thread::current().id())
            })
        })
        .collect();
    let threads = group.join(handles).await.unwrap();
    assert_ne!(threads[0], threads[1]);
}

#[tokio::test(start_paused = true)]
async fn s1_total_time_is_the_slowest_not_the_sum() {
    let start = Instant::now();
    let group = Group::<Infallible>::new();
    let a = group.spawn("a", |_| async {
        sleep(ms(100)).await;
        Ok(1)
    });
    let b = group.spawn("b", |_| async {
        sleep(ms(300)).await;
        Ok(2)
    });
    let c = group.spawn("c", |_| async {
        sleep(ms(200)).await;
        Ok(3)
    });
    assert_eq!(group.join((a, b, c)).await.unwrap(), (1, 2, 3));
    assert_eq!(start.elapsed(), ms(300));
}

// ---------------------------------------------------------------------------
// 2. Nothing outlives the group.

#[tokio::test(start_paused = true)]
async fn s2_every_task_is_reaped_when_the_wait_returns() {
    let alive = Alive::default();
    let group = Group::<&str>::new();
    for i in 0..10u64 {
        let token = alive.token();
        group.spawn(format!("t{i}"), move |_| async move {
            let _token = token;
            sleep(ms(10 * i)).await;
            if i == 3 { Err("three") } else { Ok(()) }
        });
    }
    // Tasks whose handles were dropped are waited for too.
    assert!(group.wait().await.is_err());
    assert_eq!(alive.count(), 0, "a task outlived the wait");
}

#[tokio::test(start_paused = true)]
async fn s2_dropping_the_group_stops_its_tasks() {
    let alive = Alive::default();
    let group = Group::<Infallible>::new();
    let ctx = group.context();
    for i in 0..5 {
        let token = alive.token();
        group.spawn(format!("t{i}"), move |_| async move {
            let _token = token;
            forever().await;
            Ok(())
        });
    }
    sleep(ms(1)).await;
    assert_eq!(alive.count(), 5);
    drop(group);
    assert_eq!(ctx.cause(), Some(Cause::GroupDropped));
    sleep(ms(1)).await;
    assert_eq!(alive.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn s2_dropping_the_waiting_future_stops_the_tasks() {
    let alive = Alive::default();
    let group = Group::<Infallible>::new();
    let token = alive.token();
    let h = group.spawn("stuck", move |_| async move {
        let _token = token;
        forever().await;
        Ok(())
    });
    let waited = tokio::time::timeout(ms(50), group.join(h)).await;
    assert!(waited.is_err(), "the join should still have been pending");
    sleep(ms(1)).await;
    assert_eq!(alive.count(), 0);
}

// ---------------------------------------------------------------------------
// 3. Typed results, in submission order.

#[tokio::test(start_paused = true)]
async fn s3_results_of_different_types_in_submission_order() {
    let group = Group::<Infallible>::new();
    let name = group.spawn("name", |_| async {
        sleep(ms(30)).await;
        Ok(String::from("Ada"))
    });
    let points = group.spawn("points", |_| async {
        sleep(ms(10)).await;
        Ok(1200u64)
    });
    let list: Vec<_> = (0..5u64)
        .map(|i| {
            group.spawn(format!("item-{i}"), move |_| async move {
                sleep(ms(50 - 10 * i)).await; // the last finishes first
                Ok(i)
            })
        })
        .collect();
    let arr = [
        group.spawn("x", |_| async {
            sleep(ms(2)).await;
            Ok('x')
        }),
        group.spawn("y", |_| async { Ok('y') }),
    ];
    let (name, points, list, arr) = group.join((name, points, list, arr)).await.unwrap();
    assert_eq!(name, "Ada");
    assert_eq!(points, 1200);
    assert_eq!(list, vec![0, 1, 2, 3, 4]);
    assert_eq!(arr, ['x', 'y']);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "did not spawn it")]
async fn s3_a_handle_from_another_group_is_refused() {
    let a = Group::<Infallible>::new();
    let b = Group::<Infallible>::new();
    let h = a.spawn("mine", |_| async { Ok(()) });
    let _ = b.join(h).await;
}

// ---------------------------------------------------------------------------
// 4. Policies.

#[tokio::test(start_paused = true)]
async fn s4_fail_fast_returns_the_first_failure_and_cancels_the_rest() {
    let start = Instant::now();
    let group = Group::<String>::new();
    let timeline = group.timeline();
    let slow = group.spawn("slow", |_| async {
        sleep(Duration::from_secs(2)).await;
        Ok(1)
    });
    let bad = group.spawn("bad", |_| async {
        sleep(ms(50)).await;
        Err::<i32, _>("backend down".to_string())
    });
    let err = group.join((slow, bad)).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(50));
    match &err {
        GroupError::Failed { task, error } => {
            assert_eq!(task, "bad");
            assert_eq!(error, "backend down");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "task `bad` failed: backend down");
    let entries = timeline.entries();
    assert_eq!(
        entries[0].outcome,
        Err(TaskError::Cancelled(Cause::TaskFailed {
            task: "bad".into(),
            error: "backend down".into()
        }))
    );
}

#[tokio::test(start_paused = true)]
async fn s4_collect_all_returns_every_outcome_and_cancels_nothing() {
    let group = Group::<&str>::builder().collect_all().build();
    let a = group.spawn("a", |_| async {
        sleep(ms(10)).await;
        Err::<u32, _>("a broke")
    });
    let b = group.spawn("b", |_| async {
        sleep(ms(30)).await;
        Ok(2u32)
    });
    let c = group.spawn("c", |_| async { panic!("c exploded") });
    let (a, b, c): (Result<u32, _>, _, Result<(), _>) = group.join((a, b, c)).await;
    assert!(matches!(a, Err(TaskError::Failed("a broke"))));
    assert_eq!(b.unwrap(), 2, "a sibling's failure must not cancel b");
    assert!(matches!(c, Err(TaskError::Panicked { message }) if message == "c exploded"));
}

#[tokio::test(start_paused = true)]
async fn s4_first_success_wins_and_cancels_the_rest() {
    let start = Instant::now();
    let alive = Alive::default();
    let group = Group::<&str>::builder().first_success().build();
    let mut handles = Vec::new();
    for (name, delay, ok) in [
        ("primary", 100, true),
        ("replica", 20, true),
        ("broken", 5, false),
    ] {
        let token = alive.token();
        handles.push(group.spawn(name, move |_| async move {
            let _token = token;
            sleep(ms(delay)).await;
            if ok { Ok(name) } else { Err("no") }
        }));
    }
    assert_eq!(group.join(handles).await.unwrap(), "replica");
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(alive.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn s4_first_success_returns_every_error_when_all_fail() {
    let group = Group::<String>::builder().first_success().build();
    let handles: Vec<_> = (0..3u64)
        .map(|i| {
            group.spawn(format!("r{i}"), move |_| async move {
                sleep(ms(30 - 10 * i)).await;
                Err::<(), _>(format!("e{i}"))
            })
        })
        .collect();
    let all = group.join(handles).await.unwrap_err();
    let names: Vec<_> = all.failures.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["r0", "r1", "r2"], "in submission order");
    let errors: Vec<_> = all
        .failures
        .into_iter()
        .map(|(_, e)| e.into_failed().unwrap())
        .collect();
    assert_eq!(errors, ["e0", "e1", "e2"]);
}

// ---------------------------------------------------------------------------
// 4, collect-all with required tasks: a required task's own failure cancels the
// group as fail-fast would, and every task's outcome still comes back in place.

#[tokio::test(start_paused = true)]
async fn s4_required_failure_cancels_the_others_at_that_instant_with_its_cause() {
    let start = Instant::now();
    let group = Group::<String>::builder().collect_all().build();
    let timeline = group.timeline();
    let done = group.spawn("done", |_| async {
        sleep(ms(10)).await;
        Ok(1)
    });
    let slow = group.spawn("slow", |_| async {
        sleep(Duration::from_secs(2)).await;
        Ok(2)
    });
    let payment = group.spawn_required("payment", |_| async {
        sleep(ms(50)).await;
        Err::<i32, _>("card declined".to_string())
    });
    // Required too, but stopped by `payment` before it fails: not a failure.
    let stock = group.task("stock").required().spawn(|_| async {
        sleep(ms(60)).await;
        Err::<i32, _>("out of stock".to_string())
    });
    let (done, slow, payment, stock) = group.join((done, slow, payment, stock)).await;
    assert_eq!(start.elapsed(), ms(50));
    let cause = Cause::TaskFailed {
        task: "payment".into(),
        error: "card declined".into(),
    };
    assert_eq!(done.unwrap(), 1, "ended before the failure");
    assert_eq!(slow.unwrap_err(), TaskError::Cancelled(cause.clone()));
    assert_eq!(
        payment.unwrap_err(),
        TaskError::Failed("card declined".to_string()),
        "the failure stays at its place in the join"
    );
    assert_eq!(stock.unwrap_err(), TaskError::Cancelled(cause.clone()));
    let entries = timeline.entries();
    assert_eq!(entries[1].finished - start, ms(50));
    assert_eq!(entries[1].outcome, Err(TaskError::Cancelled(cause)));
    assert_eq!(
        entries[2].outcome,
        Err(TaskError::Failed("card declined".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn s4_required_a_failure_of_a_task_not_required_cancels_nothing() {
    let start = Instant::now();
    let group = Group::<&str>::builder().collect_all().build();
    let ctx = group.context();
    let profile = group.spawn_required("profile", |_| async {
        sleep(ms(100)).await;
        Ok("Ada")
    });
    let avatar = group.spawn("avatar", |_| async {
        sleep(ms(10)).await;
        Err::<(), _>("404")
    });
    let badge = group.task("badge").timeout(ms(20)).spawn(|_| async {
        forever().await;
        Ok(())
    });
    let points = group.spawn("points", |_| async {
        sleep(ms(30)).await;
        panic!("points exploded");
    });
    let orders = group.spawn("orders", |_| async {
        sleep(ms(80)).await;
        Ok(3)
    });
    let (profile, avatar, badge, points, orders): (_, _, _, Result<(), _>, _) =
        group.join((profile, avatar, badge, points, orders)).await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(profile.unwrap(), "Ada");
    assert_eq!(avatar.unwrap_err(), TaskError::Failed("404"));
    assert_eq!(badge.unwrap_err(), TaskError::TimedOut { after: ms(20) });
    assert!(matches!(points, Err(TaskError::Panicked { .. })));
    assert_eq!(orders.unwrap(), 3);
    assert_eq!(
        ctx.cause(),
        Some(Cause::GroupFinished),
        "nothing cancelled it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_required_the_first_failure_stands_when_two_fail() {
    // Two required tasks on two workers. `second` never awaits, so nothing can
    // stop it; it fails only once it sees the group cancelled by `first`.
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    let second_running = Arc::new(AtomicBool::new(false));
    let group = Group::<&str>::builder().collect_all().build();
    let ctx = group.context();
    let running = second_running.clone();
    let first = group.spawn_required("first", move |_| async move {
        while !running.load(Ordering::SeqCst) {
            if std::time::Instant::now() > give_up {
                return Ok("second never ran");
            }
            std::hint::spin_loop();
        }
        Err("first broke")
    });
    let running = second_running.clone();
    let second = group.spawn_required("second", move |ctx| async move {
        running.store(true, Ordering::SeqCst);
        while !ctx.is_cancelled() {
            if std::time::Instant::now() > give_up {
                return Ok("never saw the cancellation");
            }
            std::hint::spin_loop();
        }
        Err("second broke")
    });
    let (first, second) = group.join((first, second)).await;
    assert_eq!(first, Err(TaskError::Failed("first broke")));
    assert_eq!(second, Err(TaskError::Failed("second broke")));
    assert_eq!(
        ctx.cause(),
        Some(Cause::TaskFailed {
            task: "first".into(),
            error: "first broke".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn s4_required_panic_cancels_with_the_task_panicked_cause() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().collect_all().build();
    let sibling = group.spawn("sibling", |_| async {
        sleep(Duration::from_secs(10)).await;
        Ok(())
    });
    let buggy = group.spawn_required("buggy", |_| async {
        sleep(ms(30)).await;
        panic!("invariant broken") as Result<(), Infallible>
    });
    let (sibling, buggy) = group.join((sibling, buggy)).await;
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(
        buggy.unwrap_err(),
        TaskError::Panicked {
            message: "invariant broken".into()
        }
    );
    assert_eq!(
        sibling.unwrap_err(),
        TaskError::Cancelled(Cause::TaskPanicked {
            task: "buggy".into(),
            message: "invariant broken".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn s4_required_own_timeout_cancels_with_the_task_timed_out_cause() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder()
        .collect_all()
        .task_timeout(ms(500))
        .build();
    let sibling = group.spawn("sibling", |_| async {
        sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    let profile = group
        .task("profile")
        .required()
        .timeout(ms(200))
        .spawn(|_| async {
            sleep(Duration::from_secs(1)).await;
            Ok(())
        });
    let (sibling, profile) = group.join((sibling, profile)).await;
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(profile.unwrap_err(), TaskError::TimedOut { after: ms(200) });
    assert_eq!(
        sibling.unwrap_err(),
        TaskError::Cancelled(Cause::TaskTimedOut {
            task: "profile".into(),
            after: ms(200)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn s4_required_queued_tasks_never_start_after_its_failure_and_say_so() {
    let start = Instant::now();
    let started = Arc::new(AtomicUsize::new(0));
    let group = Group::<&str>::builder().collect_all().limit(2).build();
    let timeline = group.timeline();
    let running = group.spawn("running", |_| async {
        sleep(Duration::from_secs(10)).await;
        Ok(())
    });
    let fails = group.spawn_required("fails", |_| async {
        sleep(ms(10)).await;
        Err::<(), _>("boom")
    });
    let queued: Vec<_> = (0..3)
        .map(|i| {
            let started = started.clone();
            group.spawn(format!("queued{i}"), move |_| async move {
                started.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
        .collect();
    let (running, fails, queued) = group.join((running, fails, queued)).await;
    assert_eq!(start.elapsed(), ms(10));
    assert_eq!(started.load(Ordering::SeqCst), 0, "a queued task started");
    let cause = Cause::TaskFailed {
        task: "fails".into(),
        error: "boom".into(),
    };
    assert_eq!(running.unwrap_err(), TaskError::Cancelled(cause.clone()));
    assert_eq!(fails.unwrap_err(), TaskError::Failed("boom"));
    for outcome in queued {
        assert_eq!(outcome.unwrap_err(), TaskError::NotStarted(cause.clone()));
    }
    for entry in &timeline.entries()[2..] {
        assert_eq!(entry.started, None);
        assert_eq!(entry.queued(), ms(10));
    }
}

#[tokio::test(start_paused = true)]
async fn s4_required_task_stopped_by_the_deadline_keeps_the_deadline_cause() {
    let start = Instant::now();
    let group = Group::<String>::builder()
        .collect_all()
        .deadline(ms(100))
        .build();
    let ctx = group.context();
    // Returns an error as soon as it notices the cancellation: that error is a
    // consequence of the deadline, not a failure of its own.
    let profile = group.spawn_required("profile", |ctx| async move {
        loop {
            if let Some(cause) = ctx.cause() {
                return Err::<(), _>(format!("gave up: {cause}"));
            }
            sleep(ms(1)).await;
        }
    });
    let orders = group.spawn("orders", |_| async {
        sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    let (profile, orders) = group.join((profile, orders)).await;
    assert_eq!(start.elapsed(), ms(100));
    let deadline = Cause::DeadlineExpired { after: ms(100) };
    assert_eq!(profile.unwrap_err(), TaskError::Cancelled(deadline.clone()));
    assert_eq!(orders.unwrap_err(), TaskError::Cancelled(deadline.clone()));
    assert_eq!(ctx.cause(), Some(deadline));
}

#[tokio::test(start_paused = true)]
async fn s4_required_failure_cause_is_read_from_a_context_kept_past_the_join() {
    let group = Group::<&str>::builder().collect_all().build();
    let ctx = group.context();
    let kept = Arc::new(Mutex::new(None));
    let slot = kept.clone();
    let ok = group.spawn("keeps its context", move |ctx| async move {
        *slot.lock().unwrap() = Some(ctx);
        Ok(())
    });
    let bad = group.spawn_required("profile", |_| async {
        sleep(ms(5)).await;
        Err::<(), _>("503")
    });
    let (ok, bad) = group.join((ok, bad)).await;
    assert!(ok.is_ok());
    assert!(bad.is_err());
    let cause = Cause::TaskFailed {
        task: "profile".into(),
        error: "503".into(),
    };
    assert_eq!(ctx.cause(), Some(cause.clone()));
    assert_eq!(ctx.cancelled().await, cause);
    let task_ctx = kept.lock().unwrap().take().unwrap();
    assert_eq!(task_ctx.cause(), Some(cause));
}

// ---------------------------------------------------------------------------
// 5. Limit.

#[tokio::test(start_paused = true)]
async fn s5_limit_runs_at_most_n_and_starts_queued_tasks_in_fifo_order() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().limit(3).build();
    let timeline = group.timeline();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let (running, peak) = (running.clone(), peak.clone());
        // Never blocks, even far beyond the limit.
        group.spawn(format!("t{i}"), move |_| async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            sleep(ms(10)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
    }
    group.wait().await.unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), ms(40), "10 tasks of 10ms, 3 at a time");
    let entries = timeline.entries();
    let mut by_start: Vec<_> = entries
        .iter()
        .map(|e| (e.started.unwrap(), e.index))
        .collect();
    by_start.sort();
    let order: Vec<_> = by_start.iter().map(|&(_, i)| i).collect();
    assert_eq!(
        order,
        (0..10).collect::<Vec<_>>(),
        "queued tasks start in submission order"
    );
    assert_eq!(entries[9].queued(), ms(30));
    assert_eq!(entries[9].ran(), ms(10));
}

#[tokio::test(start_paused = true)]
async fn s5_try_spawn_refuses_when_full_and_gives_the_closure_back() {
    let group = Group::<Infallible>::builder().limit(1).build();
    let first = group
        .try_spawn("first", |_| async {
            sleep(ms(10)).await;
            Ok(1)
        })
        .unwrap();
    let refused = group.try_spawn("second", |_| async { Ok(2) }).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the group already runs or queues its limit of 1 tasks"
    );
    sleep(ms(11)).await;
    let second = group.try_spawn("second", refused.into_inner()).unwrap();
    assert_eq!(group.join((first, second)).await.unwrap(), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn s5_spawn_when_free_waits_for_room() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().limit(2).build();
    let mut handles = Vec::new();
    let mut spawned_at = Vec::new();
    for i in 0..4u64 {
        handles.push(
            group
                .spawn_when_free(format!("t{i}"), |_| async {
                    sleep(ms(10)).await;
                    Ok(())
                })
                .await,
        );
        spawned_at.push(start.elapsed());
    }
    assert_eq!(spawned_at, [ms(0), ms(0), ms(10), ms(10)]);
    group.join(handles).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn s5_queued_tasks_never_start_after_cancellation_and_say_so() {
    let started = Arc::new(AtomicUsize::new(0));
    let group = Group::<&str>::builder().limit(2).collect_all().build();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let started = started.clone();
            group.spawn(format!("t{i}"), move |_| async move {
                started.fetch_add(1, Ordering::SeqCst);
                sleep(ms(100)).await;
                Ok(())
            })
        })
        .collect();
    sleep(ms(5)).await;
    assert!(group.cancel("operator said stop"));
    let outcomes = group.join(handles).await;
    assert_eq!(started.load(Ordering::SeqCst), 2);
    let requested = Cause::Requested {
        reason: "operator said stop".into(),
    };
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (0 | 1, Err(TaskError::Cancelled(c))) => assert_eq!(c, requested),
            (2.., Err(TaskError::NotStarted(c))) => assert_eq!(c, requested),
            (i, other) => panic!("task {i}: unexpected {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Deadlines.

#[tokio::test(start_paused = true)]
async fn s6_group_deadline_cancels_with_a_cause_naming_it() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().deadline(ms(500)).build();
    let ctx = group.context();
    let slow = group.spawn("loyalty", |_| async {
        sleep(Duration::from_secs(1)).await;
        Ok(42)
    });
    let err = group.join(slow).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(500));
    assert!(
        matches!(&err, GroupError::Cancelled(Cause::DeadlineExpired { after }) if *after == ms(500))
    );
    assert_eq!(
        err.to_string(),
        "group cancelled: group deadline of 500ms expired"
    );
    assert_eq!(ctx.cause(), Some(Cause::DeadlineExpired { after: ms(500) }));
}

#[tokio::test(start_paused = true)]
async fn s6_the_deadline_stops_tasks_that_nobody_waits_on_yet() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().deadline(ms(500)).build();
    let alive = Alive::default();
    let token = alive.token();
    let slow = group.spawn("slow", move |_| async move {
        let _token = token;
        sleep(Duration::from_secs(10)).await;
        Ok(())
    });
    // The owner is busy elsewhere past the deadline: the task is stopped at
    // 500 ms all the same, not when the wait begins.
    sleep(ms(800)).await;
    assert_eq!(
        alive.count(),
        0,
        "the task's future was dropped at the deadline"
    );
    let err = group.join(slow).await.unwrap_err();
    assert!(matches!(
        err,
        GroupError::Cancelled(Cause::DeadlineExpired { .. })
    ));
    assert_eq!(start.elapsed(), ms(800));
}

#[tokio::test(start_paused = true)]
async fn s6_a_wait_watches_the_deadline_without_a_task_of_its_own() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let start = Instant::now();
    let group = Group::<Infallible>::builder().deadline(ms(500)).build();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            group.spawn(format!("t{i}"), |_| async {
                sleep(Duration::from_secs(10)).await;
                Ok(())
            })
        })
        .collect();
    let join = group.join(handles);
    tokio::pin!(join);
    // The wait begins, the tasks start and park.
    tokio::select! {
        biased;
        _ = &mut join => panic!("the group ended before its deadline"),
        () = sleep(ms(100)) => {}
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        3,
        "the three tasks, and no watchdog task beside them"
    );
    let joined = join.await;
    assert!(matches!(
        joined,
        Err(GroupError::Cancelled(Cause::DeadlineExpired { .. }))
    ));
    assert_eq!(start.elapsed(), ms(500));
}

#[tokio::test(start_paused = true)]
async fn s6_per_task_timeout_under_collect_all_only_stops_that_task() {
    let group = Group::<Infallible>::builder()
        .collect_all()
        .task_timeout(ms(300))
        .build();
    let fast = group.spawn("fast", |_| async {
        sleep(ms(100)).await;
        Ok(1)
    });
    let slow = group.spawn("slow", |_| async {
        sleep(ms(400)).await;
        Ok(2)
    });
    let own = group.task("own").timeout(ms(500)).spawn(|_| async {
        sleep(ms(400)).await;
        Ok(3)
    });
    let (fast, slow, own) = group.join((fast, slow, own)).await;
    assert_eq!(fast.unwrap(), 1);
    assert!(matches!(slow, Err(TaskError::TimedOut { after }) if after == ms(300)));
    assert_eq!(
        own.unwrap(),
        3,
        "a per-task timeout overrides the group's default"
    );
}

#[tokio::test(start_paused = true)]
async fn s6_task_context_knows_its_deadline() {
    let start = Instant::now();
    let group = Group::<Infallible>::builder().deadline(ms(1000)).build();
    let tight = group
        .task("tight")
        .timeout(ms(200))
        .spawn(|ctx| async move { Ok(ctx.deadline()) });
    let loose = group
        .task("loose")
        .timeout(ms(5000))
        .spawn(|ctx| async move { Ok(ctx.remaining()) });
    let (tight, loose) = group.join((tight, loose)).await.unwrap();
    assert_eq!(tight, Some(start + ms(200)));
    assert_eq!(
        loose,
        Some(ms(1000)),
        "the group's deadline is earlier than the task's"
    );
}

// ---------------------------------------------------------------------------
// 7. Cancellation with a cause.

#[tokio::test(start_paused = true)]
async fn s7_a_task_can_ask_why_it_was_cancelled() {
    let seen = Arc::new(Mutex::new(None));
    let group = Group::<&str>::new();
    let seen2 = seen.clone();
    group.spawn("watcher", move |ctx| async move {
        // Cleanup that runs on cancellation: a guard whose drop reads the cause.
        struct OnDrop(fanout_group::Context, Arc<Mutex<Option<Cause>>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                *self.1.lock().unwrap() = self.0.cause();
            }
        }
        let _guard = OnDrop(ctx, seen2);
        forever().await;
        Ok(())
    });
    group.spawn("failing", |_| async {
        sleep(ms(10)).await;
        Err::<(), _>("quota exceeded")
    });
    assert!(group.wait().await.is_err());
    assert_eq!(
        *seen.lock().unwrap(),
        Some(Cause::TaskFailed {
            task: "failing".into(),
            error: "quota exceeded".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn s7_explicit_cancel_from_elsewhere_with_a_reason() {
    let group = Group::<Infallible>::new();
    let canceller = group.canceller();
    let h = group.spawn("work", |_| async {
        forever().await;
        Ok(())
    });
    tokio::spawn(async move {
        sleep(ms(25)).await;
        canceller.cancel("client went away");
    });
    let err = group.join(h).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "group cancelled: cancelled: client went away"
    );
}

#[tokio::test(start_paused = true)]
async fn s7_cancelled_tasks_stop_at_their_next_await() {
    let steps = Arc::new(AtomicUsize::new(0));
    let group = Group::<Infallible>::new();
    let steps2 = steps.clone();
    group.spawn("looper", move |_| async move {
        loop {
            steps2.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), Infallible>(())
    });
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    group.cancel("enough");
    let at_cancel = steps.load(Ordering::SeqCst);
    // Fail-fast is all or nothing: a cancelled task fails the wait.
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "group cancelled: cancelled: enough");
    // At most the step already under way when the cancel landed.
    assert!(steps.load(Ordering::SeqCst) <= at_cancel + 1);
}

#[tokio::test(start_paused = true)]
async fn s7_a_cancel_before_anyone_waits_still_reaches_every_later_waiter() {
    // Nothing has waited on the group's cancellation yet when it is cancelled:
    // whatever waits afterwards must see it at once.
    let group = Group::<Infallible>::new();
    let ctx = group.context();
    assert!(group.cancel("early"));
    let cause = Cause::Requested {
        reason: "early".into(),
    };
    // Bounded: a lost wake-up fails here instead of hanging.
    assert_eq!(
        tokio::time::timeout(ms(1_000), ctx.cancelled()).await,
        Ok(cause.clone())
    );
    let nested = Group::<Infallible>::builder().parent(&ctx).build();
    let nested_ctx = nested.context();
    assert_eq!(
        tokio::time::timeout(ms(1_000), nested_ctx.cancelled()).await,
        Ok(Cause::Parent(Arc::new(cause.clone())))
    );
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let handle = group.spawn("late", move |_| async move {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    });
    let result = group.join(handle).await;
    assert!(matches!(result, Err(GroupError::Cancelled(c)) if c == cause));
    assert!(!started.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn s7_a_pending_task_with_its_own_timeout_is_stopped_by_its_group() {
    // The task's own scope, a child of the group's, waits for the group's
    // cancellation only once the task is pending.
    let group = Group::<Infallible>::builder().collect_all().build();
    let alive = Alive::default();
    let token = alive.token();
    let handle = group
        .task("waits")
        .timeout(ms(1_000))
        .spawn(|ctx| async move {
            let _token = token;
            let cause = ctx.cancelled().await;
            Ok(cause)
        });
    sleep(ms(10)).await;
    assert_eq!(alive.count(), 1);
    group.cancel("stop");
    let outcome = group.join(handle).await;
    let cause = Cause::Requested {
        reason: "stop".into(),
    };
    assert!(matches!(outcome, Err(TaskError::Cancelled(c)) if c == cause));
    assert_eq!(alive.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_a_cancel_racing_the_first_waiter_is_never_lost() {
    // The group's cancellation token is made by the first waiter, here on a
    // worker, while another thread cancels: whichever comes first, the parked
    // task must be stopped. A lost wake-up would hang the wait.
    for round in 0..500 {
        let group = Group::<Infallible>::new();
        let canceller = group.canceller();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let at_start = barrier.clone();
        group.spawn("parked", move |_| async move {
            // Both sides leave the barrier together; the task then spins a
            // little longer each round before it parks (and makes the token),
            // so that the cancel lands before, during and after that.
            at_start.wait();
            for _ in 0..(round % 50) * 20 {
                std::hint::spin_loop();
            }
            forever().await;
            Ok(())
        });
        let cancel = std::thread::spawn(move || {
            barrier.wait();
            canceller.cancel("race")
        });
        let waited = tokio::time::timeout(Duration::from_secs(10), group.wait()).await;
        assert!(cancel.join().unwrap());
        assert!(
            matches!(waited, Ok(Err(GroupError::Cancelled(_)))),
            "round {round}: {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn s7_the_first_cause_stands() {
    let group = Group::<Infallible>::new();
    assert!(group.cancel("first"));
    assert!(!group.cancel("second"));
    assert_eq!(
        group.cause(),
        Some(Cause::Requested {
            reason: "first".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn s7_a_context_kept_past_the_wait_sees_the_group_finished() {
    let group = Group::<Infallible>::new();
    let kept = Arc::new(Mutex::new(None));
    let slot = kept.clone();
    group.spawn("keeps its context", move |ctx| async move {
        *slot.lock().unwrap() = Some(ctx);
        Ok(())
    });
    let canceller = group.canceller();
    group.wait().await.unwrap();
    let ctx = kept.lock().unwrap().take().unwrap();
    assert_eq!(ctx.cause(), Some(Cause::GroupFinished));
    assert_eq!(ctx.cancelled().await, Cause::GroupFinished);
    assert!(canceller.is_cancelled());
}

// ---------------------------------------------------------------------------
// 8. Nesting.

#[tokio::test(start_paused = true)]
async fn s8_nested_group_is_cancelled_with_its_parent_and_inherits_its_deadline() {
    let start = Instant::now();
    let outer = Group::<String>::builder().deadline(ms(300)).build();
    let h = outer.spawn("fan-in", |ctx| async move {
        let inner = Group::<String>::builder()
            .parent(&ctx)
            .deadline(ms(10_000))
            .build();
        let deadline = inner.context().deadline();
        let timeline = inner.timeline();
        inner.spawn("leaf", |_| async {
            sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let result = inner.wait().await;
        Ok((deadline, result.map_err(|e| e.to_string()), timeline))
    });
    let ctx = outer.context();
    // The outer task is itself stopped by the deadline, so read what the inner
    // group saw from its timeline via a collect-all wrapper instead.
    let err = outer.join(h).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    assert!(matches!(
        err,
        GroupError::Cancelled(Cause::DeadlineExpired { .. })
    ));
    assert!(ctx.is_cancelled());

    // Same shape, with the inner group's view captured from inside.
    let start = Instant::now();
    let outer = Group::<String>::builder()
        .deadline(ms(300))
        .collect_all()
        .build();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    outer.spawn("fan-in", move |ctx| async move {
        let inner = Group::<String>::builder().parent(&ctx).build();
        assert_eq!(inner.context().deadline(), Some(start + ms(300)));
        let timeline = inner.timeline();
        *seen2.lock().unwrap() = Some(timeline);
        inner.spawn("leaf", |_| async {
            sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        inner.wait().await.map_err(|e| e.to_string())
    });
    outer.wait().await;
    let timeline = seen.lock().unwrap().take().unwrap();
    let leaf = &timeline.entries()[0];
    assert_eq!(
        leaf.outcome,
        Err(TaskError::Cancelled(Cause::Parent(Arc::new(
            Cause::DeadlineExpired { after: ms(300) }
        ))))
    );
    assert_eq!(leaf.finished - start, ms(300));
}

#[tokio::test(start_paused = true)]
async fn s8_nested_group_sees_its_task_timeout_as_the_cause() {
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let outer = Group::<Infallible>::builder().collect_all().build();
    let h = outer
        .task("parent")
        .timeout(ms(100))
        .spawn(move |ctx| async move {
            let inner = Group::<Infallible>::builder().parent(&ctx).build();
            *seen2.lock().unwrap() = Some(inner.timeline());
            inner.spawn("leaf", |_| async {
                forever().await;
                Ok(())
            });
            inner.wait().await.unwrap();
            Ok(())
        });
    assert!(matches!(
        outer.join(h).await,
        Err(TaskError::TimedOut { .. })
    ));
    sleep(ms(1)).await;
    let timeline = seen.lock().unwrap().take().unwrap();
    let cause = match &timeline.entries()[0].outcome {
        Err(TaskError::Cancelled(c)) => c.clone(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        cause.root(),
        &Cause::TaskTimedOut {
            task: "parent".into(),
            after: ms(100)
        }
    );
}

// ---------------------------------------------------------------------------
// 9. Panics.

#[tokio::test(start_paused = true)]
async fn s9_a_panic_is_a_failure_with_the_task_name_and_message_and_cancels_siblings() {
    let alive = Alive::default();
    let group = Group::<Infallible>::new();
    let token = alive.token();
    group.spawn("sibling", move |_| async move {
        let _t = token;
        forever().await;
        Ok(())
    });
    group.spawn("buggy", |_| async {
        sleep(ms(5)).await;
        let v: Vec<u8> = Vec::new();
        Ok(v[3])
    });
    let err = group.wait().await.unwrap_err();
    match err {
        GroupError::Panicked { task, message } => {
            assert_eq!(task, "buggy");
            assert!(message.contains("index out of bounds"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(alive.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn s9_a_panic_while_building_the_future_is_caught_too() {
    let group = Group::<Infallible>::new();
    group.spawn("eager", |_| -> std::future::Ready<Result<(), Infallible>> {
        panic!("bad input")
    });
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "task `eager` panicked: bad input");
}

#[tokio::test(start_paused = true)]
async fn s9_panics_can_be_resumed_at_the_wait_after_reaping() {
    let alive = Alive::default();
    let group = Group::<Infallible>::builder().resume_panics(true).build();
    let token = alive.token();
    group.spawn("sibling", move |_| async move {
        let _t = token;
        forever().await;
        Ok(())
    });
    group.spawn("buggy", |_| async {
        sleep(ms(5)).await;
        std::panic::panic_any(1234u32) as Result<(), Infallible>
    });
    let caught = std::panic::AssertUnwindSafe(group.wait())
        .catch_unwind()
        .await;
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&1234));
    assert_eq!(
        alive.count(),
        0,
        "siblings are reaped before the panic resumes"
    );
}

// ---------------------------------------------------------------------------
// 10. Timeline and tracing.

#[tokio::test(start_paused = true)]
async fn s10_timeline_records_names_instants_and_outcomes() {
    let group = Group::<&str>::builder().collect_all().limit(1).build();
    let timeline = group.timeline();
    let origin = timeline.origin();
    group.spawn("ok", |_| async {
        sleep(ms(10)).await;
        Ok(())
    });
    group.spawn("err", |_| async {
        sleep(ms(20)).await;
        Err::<(), _>("nope")
    });
    group.task("slow").timeout(ms(5)).spawn(|_| async {
        sleep(ms(50)).await;
        Ok(())
    });
    group.wait().await;
    let e = timeline.entries();
    let names: Vec<_> = e.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["ok", "err", "slow"]);
    assert_eq!(e[0].started.unwrap() - origin, ms(0));
    assert_eq!(e[0].ran(), ms(10));
    // `ok` had room at once: no queueing, spawned when it started.
    assert_eq!(e[0].queued(), ms(0));
    assert_eq!(Some(e[0].spawned), e[0].started);
    assert_eq!(e[1].started.unwrap() - origin, ms(10));
    assert_eq!(e[1].queued(), ms(10));
    assert_eq!(e[1].spawned - origin, ms(0));
    assert_eq!(e[1].outcome, Err(TaskError::Failed("nope".into())));
    assert_eq!(e[2].queued(), ms(30));
    assert_eq!(e[2].outcome, Err(TaskError::TimedOut { after: ms(5) }));
}

#[tokio::test(start_paused = true)]
async fn s10_timeline_recording_can_be_turned_off() {
    let group = Group::<&str>::builder().record_timeline(false).build();
    let timeline = group.timeline();
    group.spawn("a", |_| async { Ok(()) });
    group.spawn("b", |_| async { Err::<(), _>("still reported") });
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.task(), Some("b"));
    assert!(timeline.entries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn s10_timeline_keeps_every_record_of_a_large_group_in_order() {
    // Enough tasks to fill the first, small chunk of records and several of
    // the later ones; with a limit, so that some records carry a queueing
    // instant, and failures, so that some carry an error.
    let group = Group::<String>::builder().collect_all().limit(7).build();
    let timeline = group.timeline();
    let origin = timeline.origin();
    for i in 0..300u64 {
        group.spawn(format!("t{i}"), move |_| async move {
            sleep(ms(i % 3)).await;
            if i % 10 == 0 {
                return Err(format!("e{i}"));
            }
            Ok(())
        });
    }
    group.wait().await;
    let entries = timeline.entries();
    assert_eq!(entries.len(), 300);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.index, i);
        assert_eq!(e.name, format!("t{i}").as_str());
        assert_eq!(e.ran(), ms(i as u64 % 3), "{e:?}");
        let expected = match i % 10 {
            0 => Err(TaskError::Failed(format!("e{i}").into())),
            _ => Ok(()),
        };
        assert_eq!(e.outcome, expected);
        assert!(e.spawned >= origin && e.finished >= e.spawned, "{e:?}");
    }
    // The first seven had room; every later one waited for it.
    assert!(entries[..7].iter().all(|e| e.queued() == ms(0)));
    assert!(entries[7..].iter().any(|e| e.queued() > ms(0)));
    assert_eq!(entries[299].spawned, origin);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// A subscriber writing here, the default on this thread until the guard drops.
    fn subscribed() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

#[tokio::test(start_paused = true)]
async fn s10_each_task_runs_in_a_tracing_span_named_after_it() {
    let (captured, _default) = Captured::subscribed();
    let group = Group::<Infallible>::new();
    group.spawn("profile", |_| async {
        tracing::info!("calling the profile service");
        Ok(())
    });
    group.wait().await.unwrap();
    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("task{otel.name=profile task.index=0}: ")
            && out.contains("calling the profile service"),
        "{out}"
    );
}

/// Logs when dropped: shows whose span a future is dropped in.
struct LogsOnDrop(&'static str);

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        tracing::info!("dropping {}", self.0);
    }
}

#[test]
fn s10_a_stopped_task_s_future_is_dropped_inside_its_span() {
    let (captured, _default) = Captured::subscribed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (stopped, abandoned) = (Group::<Infallible>::new(), Group::<Infallible>::new());
    rt.block_on(async {
        // Stopped by its group's cancellation, on its next poll.
        stopped.spawn("stopped", |_| async {
            let _guard = LogsOnDrop("stopped");
            std::future::pending::<Result<(), Infallible>>().await
        });
        // Dropped by the runtime as it shuts down, never polled again.
        abandoned.spawn("abandoned", |_| async {
            let _guard = LogsOnDrop("abandoned");
            std::future::pending::<Result<(), Infallible>>().await
        });
        tokio::task::yield_now().await;
    });
    stopped.cancel("test");
    rt.block_on(tokio::task::yield_now());
    // The line of `message`, logged inside `span`.
    let logged_in = |span: &str, message: &str| {
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let found = out
            .lines()
            .any(|line| line.contains(span) && line.contains(message));
        assert!(found, "{message} not logged in {span}: {out}");
    };
    logged_in("task{otel.name=stopped task.index=0}: ", "dropping stopped");
    drop(rt);
    logged_in(
        "task{otel.name=abandoned task.index=0}: ",
        "dropping abandoned",
    );
}

// ---------------------------------------------------------------------------
// Go x/sync errgroup (errgroup_test.go).

#[tokio::test(start_paused = true)]
async fn go_errgroup_test_zero_group() {
    let err1 = "errgroup_test: 1";
    let err2 = "errgroup_test: 2";
    let cases: [&[Option<&'static str>]; 5] = [
        &[],
        &[None],
        &[Some(err1)],
        &[Some(err1), None],
        &[Some(err1), None, Some(err2)],
    ];
    for errs in cases {
        let group = Group::<&str>::default();
        for (i, err) in errs.iter().copied().enumerate() {
            // Go waits after each call; here task i ends at i ms, which orders them the same way.
            group.spawn(format!("t{i}"), move |_| async move {
                sleep(ms(i as u64)).await;
                err.map_or(Ok(()), Err)
            });
        }
        let first = errs.iter().flatten().next().copied();
        let got = group.wait().await.err().map(|e| match e {
            GroupError::Failed { error, .. } => error,
            other => panic!("{other:?}"),
        });
        assert_eq!(got, first, "errs = {errs:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn go_errgroup_test_with_context() {
    let doom = "group_test: doomed";
    let cases: [&[Option<&'static str>]; 4] = [&[], &[None], &[Some(doom)], &[Some(doom), None]];
    for errs in cases {
        let group = Group::<&str>::new();
        let ctx = group.context();
        for (i, err) in errs.iter().copied().enumerate() {
            group.spawn(
                format!("t{i}"),
                move |_| async move { err.map_or(Ok(()), Err) },
            );
        }
        let want = errs.iter().flatten().next().copied();
        let got = group.wait().await.err().and_then(|e| match e {
            GroupError::Failed { error, .. } => Some(error),
            _ => None,
        });
        assert_eq!(got, want);
        assert!(
            ctx.is_cancelled(),
            "the group's context is done after the wait ({errs:?})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn go_errgroup_test_try_go() {
    let n = 42;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let group = Group::<Infallible>::builder().limit(n).build();
    let task = |gate: Arc<tokio::sync::Semaphore>| {
        move |_| async move {
            gate.acquire().await.unwrap().forget();
            Ok(())
        }
    };
    for i in 0..n {
        assert!(
            group.try_spawn(format!("t{i}"), task(gate.clone())).is_ok(),
            "call {i} should succeed"
        );
    }
    assert!(
        group.try_spawn("extra", task(gate.clone())).is_err(),
        "call past the limit should fail"
    );
    gate.add_permits(n);
    sleep(ms(1)).await;
    assert!(
        group.try_spawn("again", task(gate.clone())).is_ok(),
        "room again once the tasks ended"
    );
    gate.add_permits(1);
    group.wait().await.unwrap();

    // Switch limit.
    let group = Group::<Infallible>::builder().limit(1).build();
    assert!(group.try_spawn("one", task(gate.clone())).is_ok());
    assert!(group.try_spawn("two", task(gate.clone())).is_err());
    gate.add_permits(1);
    group.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_errgroup_test_go_limit() {
    const LIMIT: usize = 10;
    let group = Group::<String>::builder().limit(LIMIT).build();
    let active = Arc::new(AtomicUsize::new(0));
    for i in 0..=(1 << 10) {
        let active = active.clone();
        group.spawn(format!("t{i}"), move |_| async move {
            let n = active.fetch_add(1, Ordering::SeqCst) + 1;
            if n > LIMIT {
                return Err(format!("saw {n} active tasks; want ≤ {LIMIT}"));
            }
            tokio::task::yield_now().await; // let others try to get in
            active.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
    }
    group.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn go_errgroup_test_cancel_cause() {
    let doom = "group_test: doomed";
    let cases: [&[Option<&'static str>]; 4] = [&[], &[None], &[Some(doom)], &[Some(doom), None]];
    for errs in cases {
        let group = Group::<&str>::new();
        let ctx = group.context();
        for (i, err) in errs.iter().copied().enumerate() {
            group.spawn(
                format!("t{i}"),
                move |_| async move { err.map_or(Ok(()), Err) },
            );
        }
        let want = errs.iter().flatten().next().copied();
        let _ = group.wait().await;
        let expected = match want {
            Some(e) => Cause::TaskFailed {
                task: "t0".into(),
                error: e.into(),
            },
            None => Cause::GroupFinished,
        };
        assert_eq!(ctx.cause(), Some(expected), "errs = {errs:?}");
    }
}

// ---------------------------------------------------------------------------
// kratos v1 errgroup (errgroup_test.go).

#[tokio::test(start_paused = true)]
async fn kratos_errgroup_test_gomaxprocs() {
    let sleep_1s = |_| async {
        sleep(Duration::from_secs(1)).await;
        Ok::<_, &str>(())
    };

    // No limit: four one-second tasks take one second.
    let start = Instant::now();
    let group = Group::<&str>::new();
    for i in 0..4 {
        group.spawn(format!("t{i}"), sleep_1s);
    }
    group.wait().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // Limit 2: two seconds.
    let start = Instant::now();
    let group = Group::<&str>::builder().limit(2).build();
    for i in 0..4 {
        group.spawn(format!("t{i}"), sleep_1s);
    }
    group.wait().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Context cancelled: the error cancels the one-second task.
    let group = Group::<&str>::builder().limit(2).build();
    let timeline = group.timeline();
    group.spawn("err", |_| async {
        sleep(ms(10)).await; // let the sleeper start, as the goroutines in Go's test do
        Err::<(), _>("error for testing errgroup context")
    });
    group.spawn("sleeper", sleep_1s);
    group.wait().await.unwrap_err();
    assert!(matches!(
        timeline.entries()[1].outcome,
        Err(TaskError::Cancelled(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn kratos_errgroup_test_recover() {
    let group = Group::<Infallible>::new();
    group.spawn("t", |_| async { panic!("2233") as Result<(), Infallible> });
    assert!(group.wait().await.is_err());
}

// ---------------------------------------------------------------------------
// sourcegraph/conc pool tests.

#[tokio::test(start_paused = true)]
async fn conc_result_pool_results_in_submission_order() {
    let group = Group::<Infallible>::new();
    let handles: Vec<_> = (0..100u64)
        .map(|i| {
            group.spawn(format!("t{i}"), move |_| async move {
                sleep(ms(100 - i)).await;
                Ok(i)
            })
        })
        .collect();
    assert_eq!(
        group.join(handles).await.unwrap(),
        (0..100).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn conc_context_pool_cancel_on_error() {
    let group = Group::<String>::new();
    group.spawn("err", |_| async { Err::<(), _>("err".to_string()) });
    for i in 0..5 {
        // Each returns its own error once it sees the cancellation, as conc's tests do.
        group.spawn(format!("waiter{i}"), move |ctx| async move {
            ctx.cancelled().await;
            Err::<(), _>(format!("context canceled ({i})"))
        });
    }
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "task `err` failed: err");
}

#[tokio::test(start_paused = true)]
async fn conc_first_error_wins() {
    let group = Group::<String>::new();
    for i in 0..10u64 {
        group.spawn(format!("t{i}"), move |_| async move {
            sleep(ms(10 + i)).await;
            Err::<(), _>(format!("error {i}"))
        });
    }
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "task `t0` failed: error 0");
}

// ---------------------------------------------------------------------------
// Java StructuredTaskScope joiners.

#[tokio::test(start_paused = true)]
async fn java_sts_all_successful_or_throw() {
    let group = Group::<&str>::new();
    let hs: Vec<_> = (0..3)
        .map(|i| group.spawn(format!("t{i}"), move |_| async move { Ok(i * 10) }))
        .collect();
    assert_eq!(group.join(hs).await.unwrap(), [0, 10, 20]);

    let group = Group::<&str>::new();
    let ok = group.spawn("ok", |_| async {
        sleep(ms(100)).await;
        Ok(1)
    });
    let bad = group.spawn("bad", |_| async {
        sleep(ms(1)).await;
        Err::<i32, _>("thrown")
    });
    let err = group.join((ok, bad)).await.unwrap_err();
    assert_eq!(err.task(), Some("bad"));
}

#[tokio::test(start_paused = true)]
async fn java_sts_any_successful_result_or_throw() {
    let group = Group::<&str>::builder().first_success().build();
    let hs = vec![
        group.spawn("fails-fast", |_| async { Err("no") }),
        group.spawn("slow", |_| async {
            sleep(ms(50)).await;
            Ok("slow")
        }),
        group.spawn("fast", |_| async {
            sleep(ms(10)).await;
            Ok("fast")
        }),
    ];
    assert_eq!(group.join(hs).await.unwrap(), "fast");

    let group = Group::<&str>::builder().first_success().build();
    let hs = vec![
        group.spawn("a", |_| async { Err::<(), _>("a") }),
        group.spawn("b", |_| async { Err("b") }),
    ];
    let all = group.join(hs).await.unwrap_err();
    assert_eq!(
        all.to_string(),
        "all 2 tasks failed; `a` failed: a; `b` failed: b"
    );
}

#[tokio::test(start_paused = true)]
async fn java_sts_await_all() {
    let start = Instant::now();
    let group = Group::<&str>::builder().collect_all().build();
    let a = group.spawn("a", |_| async { Err::<(), _>("early failure") });
    let b = group.spawn("b", |_| async {
        sleep(ms(80)).await;
        Ok(())
    });
    let (a, b) = group.join((a, b)).await;
    assert!(a.is_err());
    assert!(b.is_ok());
    assert_eq!(start.elapsed(), ms(80), "waits for all, cancels nothing");
}

// ---------------------------------------------------------------------------
// Known pitfalls.

#[tokio::test(start_paused = true)]
async fn go_issue_54045_no_task_starts_after_the_first_failure() {
    let calls = Arc::new(AtomicUsize::new(0));
    let group = Group::<&str>::new();
    let timeline = group.timeline();
    group.spawn("fails", |_| async { Err::<(), _>("boom") });
    sleep(ms(1)).await;
    assert!(group.is_cancelled());
    for i in 0..5 {
        let calls = calls.clone();
        group.spawn(format!("late{i}"), move |_| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    assert_eq!(group.wait().await.unwrap_err().task(), Some("fails"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(
        timeline.entries()[1..]
            .iter()
            .all(|e| matches!(e.outcome, Err(TaskError::NotStarted(_))))
    );
}

#[tokio::test(start_paused = true)]
async fn go_issue_27837_an_error_caused_by_cancellation_is_never_the_cause() {
    // `first` returns an error only *because* it was cancelled; the cause is the
    // deadline, and that is what is reported, not `first`'s error.
    let group = Group::<String>::builder()
        .collect_all()
        .deadline(ms(20))
        .build();
    let ctx = group.context();
    let h = group.spawn("first", |ctx| async move {
        // Synchronous work that notices cancellation by polling the context.
        loop {
            if let Some(cause) = ctx.cause() {
                return Err::<(), _>(format!("gave up: {cause}"));
            }
            sleep(ms(1)).await;
        }
    });
    let outcome = group.join(h).await;
    assert!(
        outcome.unwrap_err().is_cancelled(),
        "stopped at its await, not reported as failed"
    );
    assert_eq!(ctx.cause(), Some(Cause::DeadlineExpired { after: ms(20) }));
}

#[tokio::test(start_paused = true)]
async fn tokio_issue_1830_no_sibling_left_running_after_an_error() {
    let alive = Alive::default();
    let group = Group::<&str>::new();
    for i in 0..20 {
        let token = alive.token();
        group.spawn(format!("sibling{i}"), move |_| async move {
            let _t = token;
            forever().await;
            Ok(())
        });
    }
    group.spawn("fails", |_| async {
        sleep(ms(3)).await;
        Err::<(), _>("boom")
    });
    group.wait().await.unwrap_err();
    // Checked immediately, with no time for stragglers.
    assert_eq!(alive.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn kratos_queue_bug_queued_tasks_never_start_after_cancellation() {
    let calls = Arc::new(AtomicUsize::new(0));
    let group = Group::<&str>::builder().limit(1).build();
    let timeline = group.timeline();
    group.spawn("fails", |_| async {
        sleep(ms(10)).await;
        Err::<(), _>("boom")
    });
    for i in 0..5 {
        let calls = calls.clone();
        group.spawn(format!("queued{i}"), move |_| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    group.wait().await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let not_started = timeline
        .entries()
        .iter()
        .filter(|e| matches!(e.outcome, Err(TaskError::NotStarted(_))))
        .count();
    assert_eq!(not_started, 5);
}

#[test]
fn task_names_compare_with_strings() {
    let n: TaskName = "a".into();
    assert_eq!(n, "a");
    assert_eq!(TaskName::from(String::from("a")), n);
}
