//! Accept loops: one task per connection (HTTP/1.1 keep-alive), on the
//! public listener and, when there is one, the admin listener (each serves
//! its [`Surface`] of the API), until the shutdown future resolves. Then
//! readiness fails at once, but the worker goes on serving for
//! `drain_delay` (proxies take a health check or a discovery read to stop
//! sending it requests; a request that raced onto a connection as it closed
//! would be lost to a non-idempotent retry rule), and only then both
//! listeners stop accepting, idle connections close, and the requests in
//! flight get up to a deadline to finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::api::{Api, Surface};

/// When to stop serving, and how gently.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Serve on (readiness failing) this long after the signal.
    pub delay: Duration,
    /// Then wait this long for requests in flight.
    pub grace: Duration,
}

/// The sockets a worker serves on.
pub struct Listeners {
    /// `--listen`: [`Surface::Public`], for proxies and other workers.
    pub public: TcpListener,
    /// `--admin-listen`: [`Surface::Admin`], for the operator's network
    /// (`None`: no admin listener).
    pub admin: Option<TcpListener>,
}

/// Serve `listeners` until `shutdown` resolves and `drain.delay` has
/// passed, then wait up to `drain.grace` for in-flight requests. Returns
/// whether they all finished in time.
pub async fn serve(
    listeners: Listeners,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
) -> bool {
    let graceful = GracefulShutdown::new();
    let stop = async {
        shutdown.await;
        api.start_draining();
        tokio::time::sleep(drain.delay).await;
    };
    let admin = async {
        match listeners.admin {
            Some(listener) => accept(listener, Surface::Admin, &api, &graceful).await,
            None => std::future::pending().await,
        }
    };
    // The accept loops own the listeners: when `stop` wins, both close.
    tokio::select! {
        () = stop => {}
        never = accept(listeners.public, Surface::Public, &api, &graceful) => match never {},
        never = admin => match never {},
    }
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(drain.grace) => false,
    }
}

/// Accept connections on `listener` and serve `surface` of the API on
/// each, watched by `graceful`, until dropped.
async fn accept(
    listener: TcpListener,
    surface: Surface,
    api: &Arc<Api>,
    graceful: &GracefulShutdown,
) -> Infallible {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, ?surface, "accept failed");
                continue;
            }
        };
        // Responses are small: send them at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let api = Arc::clone(api);
        let service = service_fn(move |request| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.handle(request, surface).await) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
