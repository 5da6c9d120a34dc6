//! `[server]`: the listeners, their connection limits and the request limits.

use std::net::IpAddr;
use std::time::Duration;

use super::reader::Reader;

/// `[server]`: listeners and request limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address both listeners bind to.
    pub host: IpAddr,
    /// API listener port (0 picks a free one).
    pub port: u16,
    /// Operations listener port (0 picks a free one).
    pub ops_port: u16,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Whole-request budget (504 past it).
    pub request_timeout: Duration,
    /// Time a client has to send a complete request head (from the accept, or from the first
    /// byte of a later request on the connection).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open and silent between two requests.
    pub keep_alive_timeout: Duration,
    /// Open connections per listener; past it, new ones are closed at accept.
    pub max_connections: u32,
    /// API requests served at once before shedding.
    pub max_in_flight: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

pub(super) fn read(r: &mut Reader<'_>) -> ServerSettings {
    let host = r.parsed(
        "server.host",
        "an IP address such as 0.0.0.0 or ::",
        |s: &str| s.parse::<IpAddr>().ok(),
    );
    let port = r.port("server.port");
    let ops_port = r.port("server.ops_port");
    if port != 0 && port == ops_port {
        r.invalid("server.ops_port", "must differ from server.port");
    }
    let body_limit = r.size("server.body_limit");
    r.check(
        "server.body_limit",
        body_limit > 0,
        "must be at least 1 byte",
    );
    let request_timeout = r.positive_duration("server.request_timeout");
    let header_read_timeout = r.positive_duration("server.header_read_timeout");
    let keep_alive_timeout = r.positive_duration("server.keep_alive_timeout");
    let max_connections = r.positive_count("server.max_connections");
    let max_in_flight = r.positive_count("server.max_in_flight");
    let trusted_proxies = r.cidrs("server.trusted_proxies");
    ServerSettings {
        host: host.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        port,
        ops_port,
        body_limit,
        request_timeout,
        header_read_timeout,
        keep_alive_timeout,
        max_connections,
        max_in_flight,
        trusted_proxies,
    }
}
