//! Accept loop: one task per connection, HTTP/1.1 with keep-alive, until the
//! shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::routes;

/// Who this worker is, stamped on every response.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub id: Arc<str>,
}

/// Serve `listener` until `shutdown` resolves; in-flight connections are
/// dropped with the runtime.
pub async fn run(
    listener: TcpListener,
    identity: WorkerIdentity,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // Latency over throughput: responses are tiny, send them at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| routes::respond(request, identity.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
