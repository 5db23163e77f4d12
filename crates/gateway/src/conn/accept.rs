//! The public listener's connections, from accept to close.
//!
//! Every TCP connection of the public listener takes its address's place
//! (`client.connection_limit_per_ip`) before a byte of TLS or HTTP is read,
//! whatever it turns out to carry: a WebSocket, an HTTP request of the
//! internal routes on a shared port, a request with a body that never ends.
//! A connection over the limit is closed at once. The place travels with the
//! stream ([`PublicStream`]): an upgraded connection's socket task owns it
//! through the stream, so it is given back exactly when the socket closes,
//! however the connection ends.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_http::error::DispatchError;
use actix_http::Protocol;
use actix_rt::net::{ActixStream, Ready};
use actix_service::{fn_service, ServiceFactory, ServiceFactoryExt as _};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_tls::accept::TlsError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::conn::abort::AbortHandle;
use crate::conn::socket::ByteStream;
use crate::node::{IpSlot, Node};

/// A TCP connection of the public listener with its place in the
/// per-address count; the place is given back when the stream is dropped.
pub(crate) struct PublicStream {
    tcp: TcpStream,
    /// Read once at accept (one `getpeername`), for HTTP's `peer_addr`.
    peer: SocketAddr,
    _slot: Option<IpSlot>,
    /// Pulled by a streamed response's Session when its reader stopped.
    abort: AbortHandle,
}

impl PublicStream {
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }
}

/// Takes the connection's place for its address; `None` (the connection is
/// closed) when the address is at `client.connection_limit_per_ip`.
fn admit(node: &Node, tcp: TcpStream) -> Option<PublicStream> {
    // Replies are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    // A socket without a peer is already gone.
    let peer = tcp.peer_addr().ok()?;
    let slot = match node.take_ip_slot(peer.ip()) {
        Ok(slot) => slot,
        Err(()) => {
            tracing::debug!(peer = %peer.ip(), "connection refused: per-address limit");
            crate::metrics::address_limit_refusal();
            return None;
        }
    };
    Some(PublicStream {
        tcp,
        peer,
        _slot: slot,
        abort: AbortHandle::default(),
    })
}

/// The plain-TCP pipeline of the public listener: admission, then the HTTP
/// service (`http`, an actix-http `HttpService` over [`PublicStream`]).
pub(crate) fn plain<H>(
    node: Arc<Node>,
    http: H,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
where
    H: ServiceFactory<
        (PublicStream, Protocol, Option<SocketAddr>),
        Config = (),
        Response = (),
        Error = DispatchError,
        InitError = (),
    >,
{
    fn_service(move |tcp: TcpStream| {
        let admitted = admit(&node, tcp).ok_or_else(refused);
        async move {
            let io = admitted?;
            let peer = io.peer_addr();
            Ok((io, Protocol::Http1, peer))
        }
    })
    .and_then(http)
}

/// The TLS pipeline: admission before the TLS handshake (a refused address
/// costs no handshake), then rustls, then the HTTP service.
pub(crate) fn tls<H>(
    node: Arc<Node>,
    mut config: rustls::ServerConfig,
    handshake_timeout: std::time::Duration,
    http: H,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = (),
    Error = TlsError<io::Error, DispatchError>,
    InitError = (),
>
where
    H: ServiceFactory<
        (TlsStream<PublicStream>, Protocol, Option<SocketAddr>),
        Config = (),
        Response = (),
        Error = DispatchError,
        InitError = (),
    >,
{
    // HTTP/1.1 only (no h2 in this build), as actix-http's own TLS setup.
    let mut protocols = vec![b"http/1.1".to_vec()];
    protocols.extend_from_slice(&config.alpn_protocols);
    config.alpn_protocols = protocols;
    let mut acceptor = Acceptor::new(config);
    acceptor.set_handshake_timeout(handshake_timeout);
    fn_service(move |tcp: TcpStream| {
        let admitted = admit(&node, tcp).ok_or_else(|| TlsError::Service(refused()));
        async move { admitted }
    })
    .and_then(acceptor.map_err(TlsError::into_service_error))
    .and_then(fn_service(|io: TlsStream<PublicStream>| async move {
        let peer = io.get_ref().0.peer_addr();
        Ok((io, Protocol::Http1, peer))
    }))
    .and_then(http.map_err(TlsError::Service))
}

fn refused() -> DispatchError {
    DispatchError::Io(io::Error::other("over the per-address connection limit"))
}

impl AsyncRead for PublicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.abort.guard(cx, read)
    }
}

impl AsyncWrite for PublicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.abort.guard(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.abort.guard(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.tcp).poll_flush(cx);
        this.abort.guard(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl ActixStream for PublicStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.tcp, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.tcp, cx)
    }
}

impl ByteStream for PublicStream {
    /// `send(2)` rather than `write(2)`: it skips the VFS layers, measurable
    /// at one call per delivery.
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let sent = self.send_now(cx, buf);
        self.abort.guard(cx, sent)
    }

    fn abort_handle(&self) -> Option<AbortHandle> {
        Some(self.abort.clone())
    }
}

impl PublicStream {
    fn send_now(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&self.tcp).send(buf)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl ByteStream for TlsStream<PublicStream> {
    fn abort_handle(&self) -> Option<AbortHandle> {
        self.get_ref().0.abort_handle()
    }

    fn peer_certificate(&self) -> Option<&[u8]> {
        let (_, connection) = self.get_ref();
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref())
    }
}

/// Puts the connection's abort switch where its requests' handlers find it
/// (`HttpRequest::conn_data`).
pub(crate) fn remember_abort<T: ByteStream>(io: &T, data: &mut actix_http::Extensions) {
    if let Some(handle) = io.abort_handle() {
        data.insert(handle);
    }
}
