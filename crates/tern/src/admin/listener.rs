//! The admin API's HTTP listener. `axum::serve` has no header-read timeout and no connection
//! cap, and a half-sent request would hold a connection (and its memory) forever; so each
//! connection is served here with hyper's HTTP/1 server directly: headers must arrive within
//! `admin.header_timeout_secs`, a request (body included) is answered within
//! `admin.request_timeout_secs`, at most `admin.max_connections` are served at once, and a
//! connection carries one request (the CLI and scripts open one per call), so an idle
//! keep-alive connection cannot hold a place either.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// What bounds the admin listener (from `[admin]`).
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// How long a stopping server lets admin requests in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` until `shutdown` changes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = limits.request_timeout;
    let router = router.layer(axum::middleware::from_fn(move |r, n| {
        request_deadline(r, n, timeout)
    }));
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin API: too many connections, refusing one");
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let _place = place;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin API connection ended");
            }
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Bounds each request, body upload included. `/tasks/{id}/await` is the one route meant to
/// wait: its own `timeout` parameter bounds it.
async fn request_deadline(request: Request, next: Next, timeout: Duration) -> Response {
    if request.uri().path().ends_with("/await") {
        return next.run(request).await;
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => super::error(
            StatusCode::REQUEST_TIMEOUT,
            "InvalidArgument",
            "the request took too long (admin.request_timeout_secs)",
        ),
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    let body = r#"{"statusCode":503,"type":"ServerError","message":"too many admin connections, try again later","details":null}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing: closing with unread data would reset the
        // connection and could destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
