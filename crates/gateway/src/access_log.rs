//! The access log: one line per HTTP request (WebSocket handshakes
//! included), with method, path, status and duration only; and one per
//! gRPC API call, with path, gRPC status and duration.

/// One line per HTTP request: method, path, status, duration. Never the
/// query string, a header or a body: those may carry tokens and payloads.
pub(crate) async fn access_log(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let response = next.call(req).await?;
    log_request(&method, &path, response.status().as_u16(), started);
    Ok(response)
}

/// The access log line (also written for WebSocket handshakes, which do not
/// pass through the App).
pub(crate) fn log_request(
    method: &actix_web::http::Method,
    path: &str,
    status: u16,
    started: std::time::Instant,
) {
    tracing::info!(
        target: "herald::access",
        %method,
        path,
        status,
        micros = started.elapsed().as_micros() as u64,
        "http request"
    );
}

/// The access log line of a gRPC API call: path (the method), gRPC status
/// code, duration. Never the metadata or a message.
pub(crate) fn log_grpc_request(path: &str, grpc_status: i32, started: std::time::Instant) {
    tracing::info!(
        target: "herald::access",
        path,
        grpc_status,
        micros = started.elapsed().as_micros() as u64,
        "grpc request"
    );
}
