#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod cause;
mod context;
mod error;
mod group;
mod handle;
mod name;
mod shared;
mod task;
mod timeline;

pub use cause::Cause;
pub use context::{Canceller, Context};
pub use error::{AllFailed, GroupError, TaskError, TrySpawnError};
pub use group::{Builder, CollectAll, FailFast, FirstSuccess, Group, Policy, TaskBuilder};
pub use handle::{Handle, Handles};
pub use name::TaskName;
pub use timeline::{Entry, Outcome, Timeline};
