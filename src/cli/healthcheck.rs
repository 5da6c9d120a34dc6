//! `orders-api healthcheck`: GET a probe over plain HTTP/1.1 and exit 0 on 2xx, 1 otherwise.
//! It needs no shell, curl or network tools in the image (distroless has none).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Parses `http://host:port/path` into (`host:port`, `/path`).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((authority, path.to_string()))
}

/// The status code of `GET url`, within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let (authority, path) = parse_url(url)?;
    let exchange = async {
        let mut stream = TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: orders-api-healthcheck\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("read: {e}"))?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| head.starts_with(b"HTTP/1."))
            .ok_or_else(|| "not an HTTP/1.x response".to_string())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9090/healthz"),
            Ok(("127.0.0.1:9090".into(), "/healthz".into()))
        );
        assert_eq!(parse_url("http://host"), Ok(("host:80".into(), "/".into())));
        assert!(parse_url("https://x/healthz").is_err());
    }
}
