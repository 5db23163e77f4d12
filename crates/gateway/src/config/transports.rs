//! The sections of the transports besides WebSocket, under Centrifugo v6's
//! names so a Centrifugo config section ports over: `http_stream`, `sse`,
//! `emulation`, `uni_websocket`, `uni_sse`, `uni_http_stream`, `uni_grpc`
//! (docs/configuration.md). Every transport is off by default.

use serde::{Deserialize, Serialize};

/// Every transport section, flattened into the top level of the config. An
/// empty `handler_prefix` stands for the transport's default endpoint
/// ([`TransportsConfig::resolved`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportsConfig {
    pub http_stream: EmulatedStreamConfig,
    pub sse: EmulatedStreamConfig,
    pub emulation: EmulationConfig,
    pub uni_websocket: UniWebSocketConfig,
    pub uni_sse: UniHttpConfig,
    pub uni_http_stream: UniHttpConfig,
    pub uni_grpc: UniGrpcConfig,
}

const HTTP_STREAM_PATH: &str = "/connection/http_stream";
const SSE_PATH: &str = "/connection/sse";
const UNI_SSE_PATH: &str = "/connection/uni_sse";
const UNI_HTTP_STREAM_PATH: &str = "/connection/uni_http_stream";

impl Default for TransportsConfig {
    fn default() -> Self {
        Self {
            http_stream: EmulatedStreamConfig::at(HTTP_STREAM_PATH),
            sse: EmulatedStreamConfig::at(SSE_PATH),
            emulation: EmulationConfig::default(),
            uni_websocket: UniWebSocketConfig::default(),
            uni_sse: UniHttpConfig::at(UNI_SSE_PATH),
            uni_http_stream: UniHttpConfig::at(UNI_HTTP_STREAM_PATH),
            uni_grpc: UniGrpcConfig::default(),
        }
    }
}

impl TransportsConfig {
    /// The same, every empty `handler_prefix` replaced by its default.
    pub fn resolved(mut self) -> Self {
        let defaults = Self::default();
        for (prefix, default) in [
            (
                &mut self.http_stream.handler_prefix,
                defaults.http_stream.handler_prefix,
            ),
            (&mut self.sse.handler_prefix, defaults.sse.handler_prefix),
            (
                &mut self.emulation.handler_prefix,
                defaults.emulation.handler_prefix,
            ),
            (
                &mut self.uni_websocket.handler_prefix,
                defaults.uni_websocket.handler_prefix,
            ),
            (
                &mut self.uni_sse.handler_prefix,
                defaults.uni_sse.handler_prefix,
            ),
            (
                &mut self.uni_http_stream.handler_prefix,
                defaults.uni_http_stream.handler_prefix,
            ),
        ] {
            if prefix.is_empty() {
                *prefix = default;
            }
        }
        self
    }

    /// `/emulation` is served whenever a bidirectional emulation transport is.
    pub fn emulation_enabled(&self) -> bool {
        self.http_stream.enabled || self.sse.enabled
    }
}

/// `http_stream` and `sse`: bidirectional emulation over one streamed response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulatedStreamConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest body of the request that opens the stream (its first commands).
    pub max_request_body_size: usize,
}

impl EmulatedStreamConfig {
    fn at(prefix: &str) -> Self {
        Self {
            enabled: false,
            handler_prefix: prefix.to_owned(),
            max_request_body_size: 65536,
        }
    }
}

impl Default for EmulatedStreamConfig {
    fn default() -> Self {
        Self::at("")
    }
}

/// `emulation`: the endpoint emulated clients send their later commands to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulationConfig {
    pub handler_prefix: String,
    pub max_request_body_size: usize,
}

impl Default for EmulationConfig {
    fn default() -> Self {
        Self {
            handler_prefix: "/emulation".to_owned(),
            max_request_body_size: 65536,
        }
    }
}

/// `uni_websocket`: a WebSocket the server only pushes on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UniWebSocketConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest message the client may send (its connect request).
    pub message_size_limit: usize,
}

impl Default for UniWebSocketConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            handler_prefix: "/connection/uni_websocket".to_owned(),
            message_size_limit: 65536,
        }
    }
}

/// `uni_sse` and `uni_http_stream`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UniHttpConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    pub max_request_body_size: usize,
    pub connect_code_to_http_response: ConnectCodeToHttpResponse,
}

impl UniHttpConfig {
    fn at(prefix: &str) -> Self {
        Self {
            enabled: false,
            handler_prefix: prefix.to_owned(),
            max_request_body_size: 65536,
            connect_code_to_http_response: ConnectCodeToHttpResponse::default(),
        }
    }
}

impl Default for UniHttpConfig {
    fn default() -> Self {
        Self::at("")
    }
}

/// `uni_*.connect_code_to_http_response`: a failed connect answered with an
/// HTTP status instead of a stream holding a disconnect push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectCodeToHttpResponse {
    pub enabled: bool,
    pub transforms: Vec<HttpResponseTransform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpResponseTransform {
    /// The connect error code (`100`–`1xx`, or a disconnect code).
    pub code: u32,
    pub to: HttpResponseTo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpResponseTo {
    pub status_code: u16,
    #[serde(default)]
    pub body: String,
}

impl ConnectCodeToHttpResponse {
    /// The status and body for connect error `code`, when one is configured.
    pub fn response_for(&self, code: u32) -> Option<&HttpResponseTo> {
        if !self.enabled {
            return None;
        }
        self.transforms
            .iter()
            .find(|t| t.code == code)
            .map(|t| &t.to)
    }
}

/// `client.connect_code_to_unidirectional_disconnect`: which disconnect a
/// unidirectional client gets for a connect error code.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectCodeToUnidirectionalDisconnect {
    pub enabled: bool,
    pub transforms: Vec<UniDisconnectTransform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UniDisconnectTransform {
    pub code: u32,
    pub to: UniDisconnectTo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UniDisconnectTo {
    pub code: u16,
    #[serde(default)]
    pub reason: String,
}

impl ConnectCodeToUnidirectionalDisconnect {
    /// The configured disconnect for connect error `code`, if any.
    pub fn disconnect_for(&self, code: u32) -> Option<(u16, &str)> {
        if !self.enabled {
            return None;
        }
        self.transforms
            .iter()
            .find(|t| t.code == code)
            .map(|t| (t.to.code, t.to.reason.as_str()))
    }
}

/// `uni_grpc`: a gRPC server on its own port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UniGrpcConfig {
    pub enabled: bool,
    pub address: String,
    /// 0 picks a free port (printed in the ready line).
    pub port: u16,
    /// Largest ConnectRequest accepted, in bytes.
    pub max_receive_message_size: usize,
    pub tls: GrpcTlsConfig,
}

impl Default for UniGrpcConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "127.0.0.1".to_owned(),
            port: 11000,
            max_receive_message_size: 65536,
            tls: GrpcTlsConfig::default(),
        }
    }
}

/// `uni_grpc.tls` and `grpc_api.tls`: the certificate of a gRPC server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcTlsConfig {
    pub enabled: bool,
    pub cert_pem_file: String,
    pub key_pem_file: String,
}
