//! The streamed response of the HTTP transports: a body that reads the
//! connection's Outbox and writes what it holds in the transport's framing
//! (docs/protocol.md, "HTTP-streaming and SSE", "Unidirectional
//! transports"). The frames in the Outbox are the ones every WebSocket
//! subscriber gets, encoded once per publication; a body only copies them
//! into its framing.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::{BufMut as _, Bytes, BytesMut};
use herald_protocol::Format;

use crate::format;
use crate::metrics;
use crate::outbox::{Next, Outbox};
use crate::ws::frame::DataFrame;

/// How replies and pushes are written on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `http_stream`: each JSON reply and `\n`, or protobuf replies
    /// varint-delimited, back to back.
    HttpStream(Format),
    /// `sse`: `data: <reply>\n\n` per reply.
    Sse,
    /// `uni_http_stream`: `<push>\n` per push.
    UniHttpStream,
    /// `uni_sse`: `data: <push>\n\n` per push.
    UniSse,
}

impl Framing {
    fn format(self) -> Format {
        match self {
            Framing::HttpStream(format) => format,
            _ => Format::Json,
        }
    }

    /// What is written before anything else: SSE starts at once, so
    /// proxies and browsers open the stream.
    fn preamble(self) -> Option<Bytes> {
        matches!(self, Framing::Sse | Framing::UniSse).then(|| Bytes::from_static(b"\r\n"))
    }

    /// One batch of the Outbox (JSON lines joined with `\n`, or protobuf
    /// replies back to back) in this framing.
    pub(crate) fn frame(self, batch: &DataFrame) -> Bytes {
        let payload = batch.payload();
        match self {
            Framing::HttpStream(Format::Protobuf) => Bytes::copy_from_slice(payload),
            Framing::HttpStream(Format::Json) => {
                let mut out = BytesMut::with_capacity(payload.len() + 1);
                out.put_slice(payload);
                out.put_u8(b'\n');
                out.freeze()
            }
            Framing::Sse | Framing::UniSse | Framing::UniHttpStream => {
                let sse = self != Framing::UniHttpStream;
                let unwrap = self != Framing::Sse;
                let mut out = BytesMut::with_capacity(payload.len() + 16);
                for line in payload.split(|b| *b == b'\n') {
                    let line = if unwrap {
                        format::push_object(line)
                    } else {
                        line
                    };
                    if sse {
                        out.put_slice(b"data: ");
                        out.put_slice(line);
                        out.put_slice(b"\n\n");
                    } else {
                        out.put_slice(line);
                        out.put_u8(b'\n');
                    }
                }
                out.freeze()
            }
        }
    }
}

/// The response body of one connection (module docs). Holds what must live
/// exactly as long as the response: a connection's Session inbound channel
/// (when the client goes away, actix drops the body, and with it the
/// channel, which ends the Session), or a console stream's subscription
/// (`admin/stats.rs`).
pub(crate) struct OutboxBody {
    outbox: Arc<Outbox>,
    framing: Framing,
    preamble: Option<Bytes>,
    ended: bool,
    _held: Box<dyn Send>,
}

impl OutboxBody {
    pub(crate) fn new(outbox: Arc<Outbox>, framing: Framing, held: impl Send + 'static) -> Self {
        Self {
            outbox,
            framing,
            preamble: framing.preamble(),
            ended: false,
            _held: Box::new(held),
        }
    }
}

impl MessageBody for OutboxBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if let Some(preamble) = this.preamble.take() {
            return Poll::Ready(Some(Ok(preamble)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let bytes = match this.outbox.poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Next::Write(batch)) => this.framing.frame(&batch),
            Poll::Ready(Next::Close(disconnect)) => {
                // No close frame here: the disconnect is a push, then the end.
                this.ended = true;
                let push = format::frame_disconnect(this.framing.format(), &disconnect);
                this.framing.frame(&push)
            }
        };
        metrics::METRICS.bytes_sent.inc_by(bytes.len() as u64);
        Poll::Ready(Some(Ok(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use herald_protocol::Disconnect;

    use super::*;

    fn text(lines: &[&str]) -> DataFrame {
        let frames: Vec<DataFrame> = lines
            .iter()
            .map(|l| DataFrame::text(l.as_bytes()))
            .collect();
        DataFrame::join(&frames)
    }

    #[test]
    fn each_framing_writes_what_its_clients_read() {
        let batch = text(&[
            r#"{"id":1,"connect":{}}"#,
            r#"{"push":{"channel":"c","pub":{"data":1}}}"#,
            "{}",
        ]);
        assert_eq!(
            &Framing::HttpStream(Format::Json).frame(&batch)[..],
            b"{\"id\":1,\"connect\":{}}\n{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1}}}\n{}\n"
        );
        assert_eq!(
            &Framing::Sse.frame(&batch)[..],
            b"data: {\"id\":1,\"connect\":{}}\n\ndata: {\"push\":{\"channel\":\"c\",\"pub\":{\"data\":1}}}\n\ndata: {}\n\n"
        );
        let pushes = text(&[r#"{"push":{"channel":"c","pub":{"data":1}}}"#, "{}"]);
        assert_eq!(
            &Framing::UniHttpStream.frame(&pushes)[..],
            b"{\"channel\":\"c\",\"pub\":{\"data\":1}}\n{}\n"
        );
        assert_eq!(
            &Framing::UniSse.frame(&pushes)[..],
            b"data: {\"channel\":\"c\",\"pub\":{\"data\":1}}\n\ndata: {}\n\n"
        );
        let binary = DataFrame::binary(&[2, 0x22, 0]);
        assert_eq!(
            &Framing::HttpStream(Format::Protobuf).frame(&binary)[..],
            &[2, 0x22, 0]
        );
    }

    #[tokio::test]
    async fn the_body_starts_with_the_preamble_and_ends_after_a_disconnect_push() {
        use actix_web::body::MessageBody as _;
        use futures_channel::mpsc;

        use crate::format::ClientMessage;
        let outbox = Arc::new(Outbox::new(1024));
        let (inbound, _rx) = mpsc::channel::<ClientMessage>(1);
        let mut body = OutboxBody::new(outbox.clone(), Framing::UniSse, inbound);
        outbox.push(DataFrame::text(
            br#"{"push":{"channel":"c","pub":{"data":1}}}"#,
        ));
        outbox.close(Disconnect::SHUTDOWN);
        let mut got = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "\r\ndata: {\"channel\":\"c\",\"pub\":{\"data\":1}}\n\ndata: {\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\"}}\n\n"
        );
    }
}
