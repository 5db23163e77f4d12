//! The transports a client connection can arrive on. Each is a thin reader
//! and writer around the same Session and connection machine; this names
//! them (the `transport` label of the metrics) and says what kind each is.

/// How a connection reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `/connection/websocket`: the bidirectional protocol, JSON or protobuf.
    WebSocket,
    /// `/connection/http_stream`: replies streamed in one response, commands
    /// through `/emulation`.
    HttpStream,
    /// `/connection/sse`: as `HttpStream`, as server-sent events (JSON only).
    Sse,
    /// `/connection/uni_websocket`: the server only pushes.
    UniWebSocket,
    /// `/connection/uni_sse`.
    UniSse,
    /// `/connection/uni_http_stream`.
    UniHttpStream,
    /// The `uni_grpc` server's `Consume` stream.
    UniGrpc,
}

impl Transport {
    pub(crate) const ALL: [Transport; 7] = [
        Transport::WebSocket,
        Transport::HttpStream,
        Transport::Sse,
        Transport::UniWebSocket,
        Transport::UniSse,
        Transport::UniHttpStream,
        Transport::UniGrpc,
    ];

    /// The `transport` label (Centrifugo's transport names).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::HttpStream => "http_stream",
            Transport::Sse => "sse",
            Transport::UniWebSocket => "uni_websocket",
            Transport::UniSse => "uni_sse",
            Transport::UniHttpStream => "uni_http_stream",
            Transport::UniGrpc => "uni_grpc",
        }
    }

    /// The server only pushes: no commands after the connect request.
    pub(crate) fn unidirectional(self) -> bool {
        matches!(
            self,
            Transport::UniWebSocket
                | Transport::UniSse
                | Transport::UniHttpStream
                | Transport::UniGrpc
        )
    }

    /// Bidirectional emulation: later commands arrive through `/emulation`.
    pub(crate) fn emulated(self) -> bool {
        matches!(self, Transport::HttpStream | Transport::Sse)
    }
}
