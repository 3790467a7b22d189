//! Waiting for something a test cannot be told about: polling until it
//! holds, within a limit.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `check` every 20 ms until it returns `Some`, or panic after `limit`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
