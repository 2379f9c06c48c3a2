//! The spawn + join workloads, shared by `benches/group.rs` and
//! `examples/spawn_join_loop.rs` (the driver for profilers): each spawns `n`
//! tasks that return their index and waits for every result.

use std::{convert::Infallible, hint::black_box};

use fanout_group::Group;
use tokio::task::JoinSet;

pub(crate) async fn fanout_group(n: usize, record_timeline: bool) {
    let group = Group::<Infallible>::builder()
        .record_timeline(record_timeline)
        .build();
    let handles: Vec<_> = (0..n)
        .map(|i| group.spawn("t", move |_| async move { Ok(black_box(i)) }))
        .collect();
    black_box(group.join(handles).await.unwrap());
}

pub(crate) async fn tokio_joinset(n: usize) {
    let mut set = JoinSet::new();
    for i in 0..n {
        set.spawn(async move { Ok::<_, Infallible>(black_box(i)) });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap().unwrap());
    }
    black_box(out);
}

/// The floor under the group: tokio's own spawn and `JoinHandle`, awaited in
/// order, with nothing else.
#[allow(dead_code)] // the bench does not run it
pub(crate) async fn join_handles(n: usize) {
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(async move { Ok::<_, Infallible>(black_box(i)) }))
        .collect();
    let mut out = Vec::with_capacity(n);
    for handle in handles {
        out.push(handle.await.unwrap().unwrap());
    }
    black_box(out);
}

#[allow(dead_code)] // the driver does not run it
pub(crate) async fn try_join_all(n: usize) {
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(async move { Ok::<_, Infallible>(black_box(i)) }))
        .collect();
    black_box(futures::future::try_join_all(handles).await.unwrap());
}
