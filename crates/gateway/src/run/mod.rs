//! Running one request: every backend of its endpoint on a
//! [`fanout_group::Group`], then a verdict on their results.
//!
//! - Backends without `after` start at once; a backend with `after` waits,
//!   inside its task, for exactly the answers it needs ([`deps`]): a DAG, not
//!   stages.
//! - The endpoint deadline is the group's deadline. A backend's own timeout
//!   covers each attempt of its call (not the wait for its dependencies).
//! - The group collects every outcome (optional failures give partial
//!   answers); a *required* backend's failure cancels the group, which stops
//!   every other call at once, and the group's cause names it.
//! - Dropping the future (the client went away) drops the group, which stops
//!   every call, which closes their connections: backends see the disconnect.
//!
//! The files, in the order a request meets them: [`request`] (the state its
//! tasks share), [`backend`] (one task: dependencies, URL, policies, call,
//! shape), [`decode`] (reading an answer), [`outcome`] (the verdict).

mod backend;
mod decode;
mod deps;
mod outcome;
mod proxy;
mod request;

/// What the fuzz targets drive directly (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing {
    use crate::shape::Json;

    /// A backend body as the gateway takes it: parsed within a depth.
    pub(crate) fn decode_body(data: &[u8], depth: u32) -> Option<Json> {
        Json::parse_within(bytes::Bytes::copy_from_slice(data), depth).ok()
    }
}

use std::sync::Arc;

use fanout_group::Group;

use self::{outcome::task_error, request::RequestState};
pub(crate) use self::{
    outcome::{BackendResult, Outcome, Verdict},
    proxy::{Passed, Streamed, Upload, pass},
    request::{ClientBody, Inputs},
};
use crate::{client::Transport, error::BackendError, plan::EndpointPlan};

/// Runs `endpoint` for one request, sending calls through `transport`.
/// `timeline` records when each backend ran (for the dashboard).
pub(crate) async fn execute<T: Transport>(
    endpoint: &Arc<EndpointPlan>,
    inputs: Inputs,
    transport: T,
    timeline: bool,
) -> Outcome {
    let started = inputs.arrived.unwrap_or_else(tokio::time::Instant::now);
    let group = Group::<BackendError>::builder()
        .collect_all()
        .deadline(endpoint.deadline.saturating_sub(started.elapsed()))
        .record_timeline(timeline)
        .build();
    // Kept past the join: the group's cause says which required backend
    // failed first, if one did.
    let context = group.context();
    let state = Arc::new(RequestState::new(endpoint.clone(), inputs, transport));
    let handles: Vec<_> = endpoint
        .backends
        .iter()
        .enumerate()
        .map(|(index, plan)| {
            let state = state.clone();
            let task = group.task(plan.task_name.clone());
            // A required backend's failure cancels the group, naming it.
            let task = if plan.required { task.required() } else { task };
            task.spawn(move |ctx| async move { backend::run(&state, index, ctx.deadline()).await })
        })
        .collect();
    let timeline = timeline.then(|| group.timeline());
    let outcomes = group.join(handles).await;
    let results: Vec<BackendResult> = outcomes
        .into_iter()
        .map(|outcome| outcome.map_err(|e| task_error(e, endpoint.deadline)))
        .collect();
    let verdict = outcome::verdict(endpoint, &results, context.cause().as_ref());
    // Every task has been reaped, so this is the last reference.
    let (reports, headers) = Arc::into_inner(state)
        .map(|s| {
            let headers = s.returned.into_iter().map(|h| h.into_inner()).collect();
            (s.reports, headers)
        })
        .unwrap_or_default();
    Outcome {
        results,
        verdict,
        timeline,
        reports,
        headers,
        took: started.elapsed(),
    }
}
