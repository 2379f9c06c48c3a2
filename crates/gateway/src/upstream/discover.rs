//! Finding targets and watching them: names resolved to every address they
//! have, again every `dns_refresh` (a failed refresh keeps the last good
//! set), and active health checks.

use std::{
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use super::{Target, Targets};
use crate::{client::Transport, config::Health};

/// How long one name's lookup may take. The system resolver retries for
/// longer than that, and the first call of an upstream waits for its
/// addresses.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves every source once (the names at the same time) and installs the
/// result, keeping the state of targets whose address is still there.
pub(super) async fn resolve(targets: &Targets) {
    let lookups = targets.sources.iter().map(|source| async move {
        let addrs: Result<Vec<SocketAddr>, String> = match source.ip {
            Some(ip) => Ok(vec![SocketAddr::new(ip, source.port)]),
            None => {
                let lookup = tokio::net::lookup_host((source.host.as_str(), source.port));
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => {
                        let addrs: Vec<SocketAddr> = addrs.collect();
                        if addrs.is_empty() {
                            Err(format!("cannot resolve `{}`: no address", source.host))
                        } else {
                            Ok(addrs)
                        }
                    }
                    Ok(Err(e)) => Err(format!("cannot resolve `{}`: {e}", source.host)),
                    Err(_) => Err(format!(
                        "cannot resolve `{}`: no answer within {}s",
                        source.host,
                        LOOKUP_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        (source, addrs)
    });
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (source, addrs) in futures::future::join_all(lookups).await {
        match addrs {
            Ok(addrs) => {
                found.extend(addrs.into_iter().map(|addr| (addr, source)));
            }
            Err(why) => failed.push((source, why)),
        }
    }
    install(targets, found, failed);
}

/// Makes `found` the target set, with the current targets of each source in
/// `failed` (whose lookup failed: a failed refresh keeps the last good
/// addresses). A target whose address is still there keeps its state. With
/// nothing found, the set stays as it is.
pub(super) fn install<'s>(
    targets: &Targets,
    mut found: Vec<(SocketAddr, &'s super::Source)>,
    failed: Vec<(&'s super::Source, String)>,
) {
    let current = targets.all();
    for (source, why) in &failed {
        tracing::warn!(upstream = targets.upstream, error = %why, "DNS lookup failed; keeping the name's last addresses");
        found.extend(
            current
                .iter()
                .filter(|t| t.is_from(source))
                .map(|t| (t.addr, *source)),
        );
    }
    if found.is_empty() {
        // Say why there is no target, if there never was one.
        if let (true, Some((_, why))) = (current.is_empty(), failed.into_iter().next()) {
            *targets.unresolved.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
        return;
    }
    found.sort_by_key(|(addr, _)| *addr);
    found.dedup_by_key(|(addr, _)| *addr);
    let next: Vec<Arc<Target>> = found
        .into_iter()
        .map(|(addr, source)| {
            current
                .iter()
                .find(|t| t.addr == addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(Target::new(addr, source)))
        })
        .collect();
    let changed = next.len() != current.len()
        || next
            .iter()
            .zip(current.iter())
            .any(|(a, b)| a.addr != b.addr);
    if changed {
        tracing::info!(
            upstream = targets.upstream,
            targets = %next.iter().map(|t| t.authority.as_str()).collect::<Vec<_>>().join(" "),
            "targets"
        );
    }
    targets.set.store(Arc::new(next));
}

/// Resolves again every `dns_refresh`, for as long as the targets live.
pub(super) async fn refresh(targets: Weak<Targets>) {
    loop {
        let Some(every) = targets.upgrade().map(|t| t.dns_refresh) else {
            return;
        };
        {
            let Some(live) = targets.upgrade() else {
                return;
            };
            resolve(&live).await;
        }
        tokio::time::sleep(every).await;
    }
}

/// Checks every target every `interval`, all at once: a 2xx within
/// `timeout` keeps it in, anything else takes it out until a check passes.
pub(super) async fn check(targets: Weak<Targets>, health: Health) {
    let client = crate::client::HttpClient::new();
    let mut every = tokio::time::interval(health.interval.0);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(live) = targets.upgrade() else {
            return;
        };
        let all = live.all();
        let checks = all.iter().map(|target| async {
            let healthy = check_one(&live, target, &health, &client).await;
            let was = target.state(tokio::time::Instant::now()) != super::TargetState::Unhealthy;
            if healthy != was {
                tracing::warn!(upstream = live.upstream, target = %target.authority, healthy, "health check");
            }
            target.set_healthy(healthy);
        });
        futures::future::join_all(checks).await;
    }
}

/// The most of a health check's body that is read and thrown away, so that
/// its connection serves the next check (a longer one closes it).
const HEALTH_BODY_LIMIT: usize = 64 * 1024;

/// Whether `target` answers `health.path` with a 2xx within
/// `health.timeout` (its body read within that time too).
async fn check_one(
    targets: &Targets,
    target: &Target,
    health: &Health,
    client: &crate::client::HttpClient,
) -> bool {
    use http_body_util::BodyExt;
    let Ok(host) = target.host_header.to_str() else {
        return false;
    };
    let uri = format!("{}://{host}{}", targets.scheme.as_str(), health.path);
    let Ok(mut request) = http::Request::get(uri).body(crate::client::Body::empty()) else {
        return false;
    };
    targets
        .client
        .set_host(&target.dial, request.headers_mut(), &target.host_header);
    let probe = async {
        let response = client
            .send(&targets.client, &target.dial, request)
            .await
            .ok()?;
        let success = response.status().is_success();
        let _ = http_body_util::Limited::new(response.into_body(), HEALTH_BODY_LIMIT)
            .collect()
            .await;
        Some(success)
    };
    matches!(
        tokio::time::timeout(health.timeout(), probe).await,
        Ok(Some(true))
    )
}
