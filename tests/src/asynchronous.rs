//! Async code run inside a namespace: a thread that entered it, with a tokio runtime of its
//! own. Netlink sockets belong to the namespace of the thread that opens them, so code
//! like tortie's dataplane, which opens them itself, must run on such a thread.

use std::future::Future;

use crate::Netns;

/// Runs the future `work()` makes to completion on a new thread inside `netns`, with a
/// current-thread tokio runtime (whose tasks all stay on that thread, in the namespace),
/// and returns its output. A panic inside is passed on to the caller.
#[track_caller]
pub fn block_on_in<T, F>(netns: &Netns, work: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    let thread = netns.spawn_thread(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"));
        runtime.block_on(work())
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
