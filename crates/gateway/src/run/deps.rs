//! Dependencies between the backends of one request: a backend named in
//! another's `after` publishes its answer once, and the backends that wait
//! for it read it from here.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::{plan::EndpointPlan, shape::FieldPath};

/// The fields of a backend's answer that its dependents' templates read.
pub(crate) type Exported = Vec<(FieldPath, Value)>;

/// One backend's answer, as its dependents see it.
#[derive(Clone, Debug)]
enum Answer {
    /// Not yet.
    Waiting,
    /// It failed (or was stopped): its dependents are not called.
    Failed,
    /// It succeeded: the fields its dependents read.
    Ready(Arc<Exported>),
}

/// The answers of one request's awaited backends (those named in an `after`);
/// the others have no slot.
#[derive(Debug)]
pub(crate) struct Answers {
    slots: Box<[Option<watch::Sender<Answer>>]>,
}

impl Answers {
    /// A slot for each backend of `endpoint` that another waits for.
    pub(crate) fn new(endpoint: &EndpointPlan) -> Answers {
        Answers {
            slots: endpoint
                .backends
                .iter()
                .map(|b| b.awaited.then(|| watch::Sender::new(Answer::Waiting)))
                .collect(),
        }
    }

    /// The publisher of backend `index`'s answer, if anyone waits for it.
    pub(crate) fn publisher(&self, index: usize) -> Option<Publisher<'_>> {
        let slot = self.slots.get(index)?.as_ref()?;
        Some(Publisher { slot, done: false })
    }

    /// Waits for backend `index`'s answer: its exported fields, or `None` if it
    /// failed. A backend without a slot (nobody waits for it) reads `None`.
    pub(crate) async fn wait(&self, index: usize) -> Option<Arc<Exported>> {
        let slot = self.slots.get(index)?.as_ref()?;
        let mut rx = slot.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail; the
        // publisher answers `Failed` however its task ends.
        let answer = rx.wait_for(|a| !matches!(a, Answer::Waiting)).await.ok()?;
        match &*answer {
            Answer::Ready(fields) => Some(fields.clone()),
            Answer::Waiting | Answer::Failed => None,
        }
    }
}

/// Publishes one backend's answer once. Dropped without publishing (the
/// backend failed, or its task was stopped), it publishes a failure, so no
/// dependent ever waits for an answer that will not come.
#[derive(Debug)]
pub(crate) struct Publisher<'a> {
    slot: &'a watch::Sender<Answer>,
    done: bool,
}

impl Publisher<'_> {
    /// Publishes the fields its dependents read.
    pub(crate) fn ready(mut self, fields: Exported) {
        self.done = true;
        self.slot.send_replace(Answer::Ready(Arc::new(fields)));
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.send_replace(Answer::Failed);
        }
    }
}
