//! Accept loop: one task per connection (HTTP/1.1 keep-alive) until the
//! shutdown future resolves. Then readiness fails at once, but the worker
//! goes on serving for `drain_delay` (proxies take a health check or a
//! discovery read to stop sending it requests; a request that raced onto a
//! connection as it closed would be lost to a non-idempotent retry rule),
//! and only then stops accepting, closes idle connections and waits, up to
//! a deadline, for the requests in flight to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::api::Api;

/// When to stop serving, and how gently.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Serve on (readiness failing) this long after the signal.
    pub delay: Duration,
    /// Then wait this long for requests in flight.
    pub grace: Duration,
}

/// Serve `listener` until `shutdown` resolves and `drain.delay` has passed,
/// then wait up to `drain.grace` for in-flight requests. Returns whether
/// they all finished in time.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
) -> bool {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown, if stop_at.is_none() => {
                api.start_draining();
                stop_at = Some(tokio::time::Instant::now() + drain.delay);
                continue;
            }
            () = sleep_until(stop_at), if stop_at.is_some() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // Responses are small: send them at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let api = Arc::clone(&api);
        let service = service_fn(move |request| {
            let api = Arc::clone(&api);
            async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(drain.grace) => false,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
