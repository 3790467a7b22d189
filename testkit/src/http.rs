//! The HTTP client every fixture and test uses: keep-alive, no system
//! proxy (everything is on 127.0.0.1), every request bounded.

use std::time::Duration;

/// A client whose requests give up after `timeout`; panics if it cannot
/// be built (for tests).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"))
}
