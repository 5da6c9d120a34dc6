//! How an encoded batch reaches the collector: an HTTP POST of `application/x-protobuf`
//! (OTLP/HTTP), or, in a build with the `otlp-grpc` feature, the gRPC `TraceService/Export`
//! call. Either runs on the exporter thread only.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::config::{OtlpProtocol, TelemetrySettings};

/// Sends one encoded request body; the error says why it was not accepted.
pub(super) trait Transport: Send + 'static {
    fn send(&mut self, body: Vec<u8>) -> Result<(), String>;
}

/// A transport that could not be built: every batch fails with why.
pub(super) struct Failed(pub(super) String);

impl Transport for Failed {
    fn send(&mut self, _: Vec<u8>) -> Result<(), String> {
        Err(self.0.clone())
    }
}

/// Builds the transport on the thread that uses it (a blocking HTTP client must not be made
/// or dropped on the async runtime).
pub(super) type Connect = Box<dyn FnOnce() -> Result<Box<dyn Transport>, String> + Send>;

/// Checks the settings now (so that a bad header fails start-up, naming its key) and returns
/// how to connect.
pub(super) fn build(cfg: &TelemetrySettings, url: String) -> Result<Connect, String> {
    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.otlp.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("telemetry.otlp.headers: {k:?} is not a header name"))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| format!("telemetry.otlp.headers: the value of {k:?} is not valid"))?;
        headers.insert(name, value);
    }
    let timeout = cfg.otlp.timeout;
    match cfg.otlp.protocol {
        OtlpProtocol::HttpProtobuf => Ok(Box::new(move || {
            Ok(Box::new(Http::new(url, headers, timeout)?) as Box<dyn Transport>)
        })),
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => Ok(Box::new(move || {
            Ok(Box::new(grpc::Grpc::new(&url, &headers, timeout)?) as Box<dyn Transport>)
        })),
    }
}

struct Http {
    client: reqwest::blocking::Client,
    url: String,
}

impl Http {
    fn new(url: String, mut headers: HeaderMap, timeout: Duration) -> Result<Self, String> {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let client = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(Self { client, url })
    }
}

impl Transport for Http {
    fn send(&mut self, body: Vec<u8>) -> Result<(), String> {
        let res = self
            .client
            .post(&self.url)
            .body(body)
            .send()
            .map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {}", res.status()))
        }
    }
}

#[cfg(feature = "otlp-grpc")]
mod grpc {
    //! OTLP/gRPC: the encoded request is the message, sent as is through a pass-through codec.

    use std::time::Duration;

    use bytes::{Buf, BufMut, Bytes};
    use http::uri::PathAndQuery;
    use reqwest::header::HeaderMap;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
    use tonic::transport::Channel;

    use super::Transport;

    const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    pub(super) struct Grpc {
        runtime: tokio::runtime::Runtime,
        client: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
        timeout: Duration,
    }

    impl Grpc {
        pub(super) fn new(
            url: &str,
            headers: &HeaderMap,
            timeout: Duration,
        ) -> Result<Self, String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the OTLP gRPC runtime: {e}"))?;
            let endpoint = Channel::from_shared(url.to_owned())
                .map_err(|e| format!("telemetry.otlp.endpoint: {e}"))?
                .timeout(timeout);
            let channel = {
                let _guard = runtime.enter();
                endpoint.connect_lazy()
            };
            let mut metadata = MetadataMap::new();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    MetadataKey::from_bytes(k.as_str().as_bytes()),
                    MetadataValue::try_from(v.as_bytes()),
                ) {
                    metadata.insert(k, v);
                }
            }
            Ok(Self {
                runtime,
                client: tonic::client::Grpc::new(channel),
                metadata,
                timeout,
            })
        }
    }

    impl Transport for Grpc {
        fn send(&mut self, body: Vec<u8>) -> Result<(), String> {
            let mut request = tonic::Request::new(Bytes::from(body));
            *request.metadata_mut() = self.metadata.clone();
            request.set_timeout(self.timeout);
            let client = &mut self.client;
            self.runtime.block_on(async {
                client.ready().await.map_err(|e| e.to_string())?;
                client
                    .unary::<Bytes, (), Raw>(request, PathAndQuery::from_static(EXPORT), Raw)
                    .await
                    .map(drop)
                    .map_err(|status| {
                        let code = status.code();
                        format!(
                            "gRPC status {} ({code:?}): {}",
                            code as i32,
                            status.message()
                        )
                    })
            })
        }
    }

    /// Sends bytes as they are; ignores the response's (partial-success) body.
    struct Raw;

    impl Codec for Raw {
        type Encode = Bytes;
        type Decode = ();
        type Encoder = Raw;
        type Decoder = Raw;

        fn encoder(&mut self) -> Raw {
            Raw
        }

        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;

        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = ();
        type Error = tonic::Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
            src.advance(src.remaining());
            Ok(Some(()))
        }
    }
}
