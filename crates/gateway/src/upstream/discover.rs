//! Finding targets and watching them: names resolved to every address they
//! have, again every `dns_refresh` (a failed refresh keeps the last good
//! set), and active health checks.

use std::{
    net::SocketAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;

use super::{Target, Targets};
use crate::{client::Transport, config::Health};

/// Resolves every source once and installs the result, keeping the state
/// of targets whose address is still there.
pub(super) async fn resolve(targets: &Targets) {
    let mut found: Vec<(SocketAddr, &super::Source)> = Vec::new();
    let mut failure = None;
    for source in &targets.sources {
        match source.ip {
            Some(ip) => found.push((SocketAddr::new(ip, source.port), source)),
            None => match tokio::net::lookup_host((source.host.as_str(), source.port)).await {
                Ok(addrs) => {
                    for addr in addrs {
                        targets
                            .client
                            .name_authority(&addr.to_string(), &source.host);
                        found.push((addr, source));
                    }
                }
                Err(e) => failure = Some(format!("cannot resolve `{}`: {e}", source.host)),
            },
        }
    }
    install(targets, found, failure);
}

/// Makes `found` the target set, unless the lookup failed and found fewer
/// than there are now (a failed refresh keeps the last good set). A target
/// whose address is still there keeps its state.
pub(super) fn install(
    targets: &Targets,
    mut found: Vec<(SocketAddr, &super::Source)>,
    failure: Option<String>,
) {
    let current = targets.all();
    if found.is_empty() || failure.is_some() && found.len() < current.len() {
        // Keep the last good set; say why there is none if there never was.
        if let Some(why) = failure {
            tracing::warn!(upstream = targets.upstream, error = %why, "DNS refresh failed; keeping the last addresses");
            if current.is_empty() {
                *targets.unresolved.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
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
                .unwrap_or_else(|| Arc::new(Target::new(addr, source.host_header.clone())))
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

/// Checks every target every `interval`: a 2xx within `timeout` keeps it
/// in, anything else takes it out until a check passes.
pub(super) async fn check(targets: Weak<Targets>, health: Health) {
    let client = crate::client::HttpClient::new();
    loop {
        let Some(live) = targets.upgrade() else {
            return;
        };
        for target in live.all().iter() {
            let uri = format!(
                "{}://{}{}",
                live.scheme.as_str(),
                target.authority,
                health.path
            );
            let request = http::Request::get(uri)
                .header(http::header::HOST, target.host_header.clone())
                .body(http_body_util::Empty::<Bytes>::new());
            let Ok(request) = request else { continue };
            let answered = tokio::time::timeout(health.timeout.0, async {
                let response = client.send(&live.client, request).await.ok()?;
                let success = response.status().is_success();
                // Read to its end (within a bound), so that the connection
                // is kept for the next check.
                let body = http_body_util::Limited::new(response.into_body(), 64 << 10);
                let _ = http_body_util::BodyExt::collect(body).await;
                Some(success)
            })
            .await;
            let healthy = matches!(answered, Ok(Some(true)));
            if healthy
                != (target.state(tokio::time::Instant::now()) != super::TargetState::Unhealthy)
            {
                tracing::warn!(upstream = live.upstream, target = %target.authority, healthy, "health check");
            }
            target.set_healthy(healthy);
        }
        let interval: Duration = health.interval.0;
        drop(live);
        tokio::time::sleep(interval).await;
    }
}
