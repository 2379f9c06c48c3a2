//! Coalescing: identical in-flight GETs (same URL, same forwarded headers)
//! share one backend call (singleflight).
//!
//! Written here: tower has no singleflight. A leader makes the call and
//! publishes its result on a watch channel; followers wait on it. If the
//! leader is cancelled, the channel closes and a follower takes over.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use super::Answer;
use tokio::sync::watch;

use crate::error::BackendError;

type Shared = Option<Result<Arc<Answer>, BackendError>>;

#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    inflight: Mutex<HashMap<String, watch::Receiver<Shared>>>,
}

/// Removes the leader's entry however the call ends.
struct Leader<'c> {
    coalescer: &'c Coalescer,
    key: &'c str,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.coalescer
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}

impl Coalescer {
    pub(crate) async fn run<F, Fut>(&self, key: &str, call: F) -> Result<Arc<Answer>, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<Answer>, BackendError>>,
    {
        loop {
            let existing = {
                let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
                match inflight.get(key) {
                    Some(rx) => Ok(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.to_owned(), rx);
                        Err(tx)
                    }
                }
            };
            match existing {
                Ok(mut rx) => {
                    if let Ok(result) = rx.wait_for(Option::is_some).await {
                        if let Some(result) = result.clone() {
                            return result;
                        }
                    }
                    // The leader was cancelled before it answered: try again.
                }
                Err(tx) => {
                    let _leader = Leader {
                        coalescer: self,
                        key,
                    };
                    let result = call().await;
                    tx.send_replace(Some(result.clone()));
                    return result;
                }
            }
        }
    }
}
