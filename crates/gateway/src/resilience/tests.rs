//! Each policy on tokio's paused clock: attempts are closures that count
//! themselves and notice being dropped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use crate::shape::Json;

fn body(value: serde_json::Value) -> Answer {
    Answer {
        json: Json::from_value(&value),
        headers: http::HeaderMap::new(),
    }
}
use tokio::time::{Instant, sleep};

use super::*;
use crate::config::Upstream;

fn policies(yaml: &str) -> Policies {
    let upstream: Upstream =
        serde_saphyr::from_str(&format!("url: http://127.0.0.1:1\n{yaml}")).unwrap();
    Policies::new("users", &upstream, None)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn status(code: u16) -> BackendError {
    BackendError {
        kind: ErrorKind::Status,
        status: Some(code),
        message: format!("answered {code}"),
        body: None,
        unsent: false,
    }
}

#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl Count {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts a value's drop: an attempt future that was cancelled.
struct OnDrop(Count);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.bump();
    }
}

#[test]
fn an_upstream_that_configures_no_policy_has_none_to_go_through() {
    let configured = |yaml: &str| {
        let upstream: Upstream =
            serde_saphyr::from_str(&format!("url: http://127.0.0.1:1\n{yaml}")).unwrap();
        Policies::configured("users", &upstream, None).is_some()
    };
    assert!(!configured("timeout: 1s"));
    for one in [
        "max_in_flight: 2",
        "breaker: { failures: 3, cooldown: 10s }",
        "retry: { attempts: 2, backoff: 10ms, budget: 10% }",
        "hedge: { delay: 30ms }",
        "cache: { ttl: 1s, max_entries: 10 }",
        "coalesce: true",
    ] {
        assert!(configured(one), "{one}");
    }
}

#[tokio::test(start_paused = true)]
async fn retries_count_attempts_and_spare_what_should_not_be_retried() {
    let p = policies("retry: { attempts: 3, backoff: 10ms, budget: 100% }");
    let calls = Count::default();
    let report = CallReport::default();
    let result = p
        .call(Method::Get, Some("k"), None, &report, || {
            calls.bump();
            async { Err::<Answer, _>(status(503)) }
        })
        .await;
    assert_eq!(result.unwrap_err().status, Some(503));
    assert_eq!(calls.get(), 3, "3 attempts in all");
    assert_eq!((report.attempts(), report.hedged()), (3, false));

    for (method, error, expected) in [
        (Method::Post, status(503), 1), // not idempotent
        (Method::Get, status(404), 1),  // the caller's mistake
        (Method::Get, BackendError::new(ErrorKind::Decode, "x"), 1),
        (
            Method::Get,
            BackendError::new(ErrorKind::Connect, "refused"),
            3,
        ),
    ] {
        let calls = Count::default();
        let error = error.clone();
        let _ = p
            .call(method, Some("k"), None, &CallReport::default(), || {
                calls.bump();
                let e = error.clone();
                async move { Err::<Answer, _>(e) }
            })
            .await;
        assert_eq!(calls.get(), expected, "{method:?} {}", error.kind.as_str());
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_and_stop_before_the_deadline() {
    let p = policies("retry: { attempts: 4, backoff: 100ms, budget: 100% }");
    let times = std::sync::Mutex::new(Vec::new());
    let start = Instant::now();
    let _ = p
        .call(Method::Get, Some("k"), None, &CallReport::default(), || {
            times.lock().unwrap().push(start.elapsed());
            async { Err::<Answer, _>(status(500)) }
        })
        .await;
    let times = times.into_inner().unwrap();
    assert_eq!(times.len(), 4);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 100, 200, 400 ms, each with ±50 % jitter.
    for (gap, base) in gaps.iter().zip([100u64, 200, 400]) {
        assert!(*gap >= ms(base / 2) && *gap <= ms(base * 3 / 2), "{gaps:?}");
    }

    let calls = Count::default();
    let deadline = Instant::now() + ms(40);
    let _ = p
        .call(
            Method::Get,
            Some("k"),
            Some(deadline),
            &CallReport::default(),
            || {
                calls.bump();
                async { Err::<Answer, _>(status(500)) }
            },
        )
        .await;
    assert_eq!(
        calls.get(),
        1,
        "a retry that could not finish before the deadline is not made"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries_to_a_share_of_traffic() {
    let p = policies("retry: { attempts: 3, backoff: 1ms, budget: 20% }");
    let calls = Count::default();
    for _ in 0..100 {
        let _ = p
            .call(Method::Get, Some("k"), None, &CallReport::default(), || {
                calls.bump();
                async { Err::<Answer, _>(status(503)) }
            })
            .await;
    }
    let retries = calls.get() - 100;
    // Without a budget: 200 retries. With 20 % of 100 calls, plus tower's
    // minimum reserve (1 a second over its 10 s window): about 30.
    assert!((15..=40).contains(&retries), "{retries} retries");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_fails_fast_then_probes() {
    let p = policies("breaker: { failures: 3, cooldown: 10s }");
    let calls = Count::default();
    let fail = || {
        calls.bump();
        async { Err::<Answer, _>(status(502)) }
    };
    for _ in 0..3 {
        assert_eq!(
            p.call(Method::Get, Some("k"), None, &CallReport::default(), fail)
                .await
                .unwrap_err()
                .kind,
            ErrorKind::Status
        );
    }
    assert_eq!(p.breaker_state(), Some(BreakerState::Open));
    let err = p
        .call(Method::Get, Some("k"), None, &CallReport::default(), fail)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::CircuitOpen);
    assert_eq!(calls.get(), 3, "an open circuit does not call");

    sleep(Duration::from_secs(10)).await;
    assert_eq!(p.breaker_state(), Some(BreakerState::HalfOpen));
    // The probe fails: open again.
    assert_eq!(
        p.call(Method::Get, Some("k"), None, &CallReport::default(), fail)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Status
    );
    assert_eq!(p.breaker_state(), Some(BreakerState::Open));
    sleep(Duration::from_secs(10)).await;
    // The probe succeeds: closed.
    let ok = p
        .call(
            Method::Get,
            Some("k"),
            None,
            &CallReport::default(),
            || async { Ok(body(json!(1))) },
        )
        .await;
    assert!(ok.is_ok());
    assert_eq!(p.breaker_state(), Some(BreakerState::Closed));
    // 4xx answers do not count against the upstream.
    for _ in 0..5 {
        let _ = p
            .call(
                Method::Get,
                Some("k"),
                None,
                &CallReport::default(),
                || async { Err::<Answer, _>(status(404)) },
            )
            .await;
    }
    assert_eq!(p.breaker_state(), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_the_half_open_slot() {
    let p = policies("breaker: { failures: 1, cooldown: 1s }");
    let _ = p
        .call(
            Method::Get,
            Some("k"),
            None,
            &CallReport::default(),
            || async { Err::<Answer, _>(status(500)) },
        )
        .await;
    sleep(Duration::from_secs(1)).await;
    let report = CallReport::default();
    let probe = p.call(Method::Get, Some("k"), None, &report, || async {
        sleep(Duration::from_secs(60)).await;
        Ok(body(json!(1)))
    });
    assert!(
        tokio::time::timeout(ms(10), probe).await.is_err(),
        "the probe was cancelled"
    );
    let next = p
        .call(
            Method::Get,
            Some("k"),
            None,
            &CallReport::default(),
            || async { Ok(body(json!(2))) },
        )
        .await;
    assert_eq!(next.unwrap().json.to_value().unwrap(), json!(2));
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_sheds_at_once_beyond_max_in_flight() {
    let p = Arc::new(policies("max_in_flight: 2"));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut held = Vec::new();
    for _ in 0..2 {
        let (p, gate) = (p.clone(), gate.clone());
        held.push(tokio::spawn(async move {
            p.call(Method::Get, Some("k"), None, &CallReport::default(), || {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok(body(json!("held")))
                }
            })
            .await
        }));
    }
    tokio::task::yield_now().await;
    let start = Instant::now();
    let shed = p
        .call(
            Method::Get,
            Some("k"),
            None,
            &CallReport::default(),
            || async { Ok(body(json!("third"))) },
        )
        .await;
    assert_eq!(shed.unwrap_err().kind, ErrorKind::Overloaded);
    assert_eq!(start.elapsed(), Duration::ZERO, "shed at once, not queued");
    gate.notify_waiters();
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    assert!(
        p.call(
            Method::Get,
            Some("k"),
            None,
            &CallReport::default(),
            || async { Ok(body(json!(1))) }
        )
        .await
        .is_ok(),
        "room again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_after_the_delay_and_the_loser_is_dropped() {
    let p = policies("hedge: { delay: 30ms, max_extra: 100% }");
    let (calls, dropped) = (Count::default(), Count::default());
    let start = Instant::now();
    let report = CallReport::default();
    let result = p
        .call(Method::Get, Some("k"), None, &report, || {
            let n = calls.bump();
            let guard = OnDrop(dropped.clone());
            async move {
                let _guard = guard;
                sleep(if n == 1 { ms(100) } else { ms(10) }).await;
                Ok(body(json!(n)))
            }
        })
        .await;
    assert_eq!(
        result.unwrap().json.to_value().unwrap(),
        json!(2),
        "the hedge answered first"
    );
    assert_eq!(start.elapsed(), ms(40), "30 ms delay + 10 ms");
    assert_eq!(calls.get(), 2);
    assert_eq!(
        dropped.get(),
        2,
        "the loser was dropped (and the winner finished)"
    );
    assert_eq!(p.hedge_counts(), Some((1, 1)));
    assert!(report.hedged() && report.attempts() == 2, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn hedging_is_capped_and_learns_a_percentile() {
    let p = policies("hedge: { delay: 5ms, max_extra: 10% }");
    for _ in 0..50 {
        let _ = p
            .call(
                Method::Get,
                Some("k"),
                None,
                &CallReport::default(),
                || async {
                    sleep(ms(20)).await;
                    Ok(body(json!(1)))
                },
            )
            .await;
    }
    let (extra, calls) = p.hedge_counts().unwrap();
    assert_eq!(calls, 50);
    assert!(extra <= 5, "{extra} extra calls for 50: at most 10 %");

    let p = policies("hedge: { percentile: 90, max_extra: 100% }");
    // Learn: 90 % of calls take 1 ms, 10 % take 100 ms.
    for i in 0..40u64 {
        let d = if i % 10 == 9 { ms(100) } else { ms(1) };
        let _ = p
            .call(
                Method::Get,
                Some("k"),
                None,
                &CallReport::default(),
                || async move {
                    sleep(d).await;
                    Ok(body(json!(1)))
                },
            )
            .await;
    }
    let (before, _) = p.hedge_counts().unwrap();
    let start = Instant::now();
    let calls = Count::default();
    let _ = p
        .call(Method::Get, Some("k"), None, &CallReport::default(), || {
            let n = calls.bump();
            async move {
                sleep(if n == 1 { ms(100) } else { ms(1) }).await;
                Ok(body(json!(n)))
            }
        })
        .await;
    assert_eq!(p.hedge_counts().unwrap().0, before + 1);
    assert!(
        start.elapsed() < ms(100),
        "the p90 (~1 ms) hedge beat the slow call: {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn identical_gets_in_flight_share_one_call() {
    let p = Arc::new(policies("coalesce: true"));
    let calls = Count::default();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (p, calls) = (p.clone(), calls.clone());
            tokio::spawn(async move {
                p.call(
                    Method::Get,
                    Some("GET http://u/x"),
                    None,
                    &CallReport::default(),
                    || {
                        calls.bump();
                        async {
                            sleep(ms(50)).await;
                            Ok(body(json!({"shared": true})))
                        }
                    },
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap().json.to_value().unwrap(),
            json!({"shared": true})
        );
    }
    assert_eq!(calls.get(), 1);
    // A different key is a different call.
    let _ = p
        .call(
            Method::Get,
            Some("GET http://u/y"),
            None,
            &CallReport::default(),
            || {
                calls.bump();
                async { Ok(body(json!(1))) }
            },
        )
        .await;
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_cache_serves_within_its_ttl_and_keeps_only_successes() {
    let p = policies("cache: { ttl: 30s, max_entries: 2 }");
    let calls = Count::default();
    let call = |key: &'static str| {
        let calls = calls.clone();
        let p = &p;
        async move {
            p.call(
                Method::Get,
                Some(key),
                None,
                &CallReport::default(),
                move || {
                    calls.bump();
                    async { Ok(body(json!("fresh"))) }
                },
            )
            .await
        }
    };
    call("a").await.unwrap();
    call("a").await.unwrap();
    assert_eq!(calls.get(), 1, "a hit");
    sleep(Duration::from_secs(30)).await;
    call("a").await.unwrap();
    assert_eq!(calls.get(), 2, "expired after the ttl");
    call("b").await.unwrap();
    call("c").await.unwrap();
    assert_eq!(p.cache.as_ref().unwrap().len(), 2, "bounded");
    call("a").await.unwrap();
    assert_eq!(calls.get(), 5, "the oldest entry was evicted");

    let failures = Count::default();
    for _ in 0..2 {
        let _ = p
            .call(
                Method::Get,
                Some("bad"),
                None,
                &CallReport::default(),
                || {
                    failures.bump();
                    async { Err::<Answer, _>(status(500)) }
                },
            )
            .await;
    }
    assert_eq!(failures.get(), 2, "failures are never cached");
    let posts = Count::default();
    for _ in 0..2 {
        let _ = p
            .call(
                Method::Post,
                Some("post"),
                None,
                &CallReport::default(),
                || {
                    posts.bump();
                    async { Ok(body(json!(1))) }
                },
            )
            .await;
    }
    assert_eq!(posts.get(), 2, "only GETs are cached");
}
