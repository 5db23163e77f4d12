//! Request bodies of both listeners' HTTP routes: a deadline on every body,
//! and no connection kept for a body nobody reads.
//!
//! actix-http keeps reading (and discarding) a chunked body that the
//! handler did not read, for keep-alive, without end when the body never
//! ends; a `Content-Length` body it closes for. [`guard`] wraps every
//! request that announces a body:
//!
//! - the handler reads it through [`Deadline`], which fails the read once
//!   `http_server.request_body_timeout` has passed since the request head
//!   arrived (a body trickled a byte at a time is cut like a stalled one);
//! - when the response is ready and the body was not read to its end, the
//!   response keeps the request's payload alive until it is written, which
//!   makes actix-http close the connection after the response (it lingers
//!   at most `client_disconnect_timeout`, 1 s, reading and discarding)
//!   instead of draining the body;
//! - on the public listener, every error response closes the connection.

use std::cell::RefCell;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use bytes::Bytes;
use futures_util::Stream;

/// What [`guard`] is built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// `http_server.request_body_timeout`.
    pub(crate) timeout: Duration,
    /// Close the connection after every error response (the public
    /// listener: a client that got an error has nothing more to ask there).
    pub(crate) close_on_error: bool,
}

/// The middleware of both listeners' Apps (module docs).
pub(crate) async fn guard(
    limits: web::Data<BodyLimits>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody, Holding>>, actix_web::Error> {
    let close_on_error = limits.close_on_error;
    let closing = move |mut response: ServiceResponse<_>| {
        if close_on_error && response.status().as_u16() >= 400 {
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        response
    };
    if !crate::ws::handshake::has_body(req.headers()) {
        return next
            .call(req)
            .await
            .map(|response| closing(response).map_into_boxed_body().map_into_left_body());
    }
    let shared = Rc::new(RefCell::new(Body {
        payload: req.take_payload(),
        finished: false,
    }));
    req.set_payload(Payload::Stream {
        payload: Box::pin(Deadline {
            body: shared.clone(),
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            expired: false,
        }),
    });
    let response = closing(next.call(req).await?);
    if shared.borrow_mut().read_buffered_to_end() {
        return Ok(response.map_into_boxed_body().map_into_left_body());
    }
    crate::metrics::body_cut("unread");
    // Not through `BoxBody::new`, which would drop an empty body (and with
    // it the payload) before actix-http looks.
    Ok(response.map_body(|_, body| {
        EitherBody::right(Holding {
            body: body.boxed(),
            _payload: shared,
        })
    }))
}

/// A request's payload, shared by the handler's reader and the response.
struct Body {
    payload: Payload,
    /// The payload ended (the whole body was read).
    finished: bool,
}

impl Body {
    /// Takes what has already arrived without waiting; true when that
    /// reaches the end of the body (nothing is left to read).
    fn read_buffered_to_end(&mut self) -> bool {
        if self.finished {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Bounded: the payload buffers at most its high-water mark before
        // actix-http stops reading the socket.
        loop {
            match Pin::new(&mut self.payload).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(None) => {
                    self.finished = true;
                    return true;
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
            }
        }
    }
}

/// The handler's view of the body: ends with an error at the deadline.
struct Deadline {
    body: Rc<RefCell<Body>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.body.borrow().finished {
            return Poll::Ready(None);
        }
        // Checked before every read: a body that keeps trickling in never
        // leaves the read pending, yet must be cut too.
        if self.expired || self.deadline.as_mut().poll(cx).is_ready() {
            if !self.expired {
                self.expired = true;
                crate::metrics::body_cut("timeout");
            }
            return Poll::Ready(Some(Err(body_timeout())));
        }
        let mut body = self.body.borrow_mut();
        match Pin::new(&mut body.payload).poll_next(cx) {
            Poll::Ready(None) => {
                body.finished = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// The error a handler's body read ends with at the deadline.
fn body_timeout() -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "request body not complete within http_server.request_body_timeout",
    ))
}

/// Reads a request body: 413 past `limit` bytes (at once when
/// `Content-Length` says so), 408 when it is not complete within
/// `http_server.request_body_timeout`, 400 when the client breaks it off.
pub(crate) async fn read_limited(
    req: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, actix_web::HttpResponse> {
    use actix_web::HttpResponse;
    use futures_util::StreamExt as _;
    let too_large = || {
        crate::metrics::body_cut("too_large");
        HttpResponse::PayloadTooLarge().body(format!("request body larger than {limit} bytes\n"))
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() > limit => return Err(too_large()),
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(e) if is_timeout(&e) => {
                return Err(HttpResponse::RequestTimeout()
                    .body("request body not complete within http_server.request_body_timeout\n"))
            }
            Err(e) => return Err(HttpResponse::BadRequest().body(format!("request body: {e}\n"))),
        }
    }
    Ok(body.freeze())
}

/// Whether a payload read failed at the deadline (a handler answers 408).
pub(crate) fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// A response body that keeps the request's unread payload alive until the
/// response is written: actix-http then closes the connection after it.
pub(crate) struct Holding {
    body: BoxBody,
    _payload: Rc<RefCell<Body>>,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
