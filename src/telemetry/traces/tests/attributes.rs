//! The text attributes of a server span, as a collector decodes them.

use super::*;

#[test]
fn each_text_attribute_is_its_own_part_and_empty_ones_are_left_out() {
    for (route, path, host, agent) in [
        ("/r", "/p/1", "h", "a"),
        ("", "", "", ""),
        (
            "/api/v2/orders",
            "/api/v2/orders",
            "",
            "Mozilla/5.0 (X11) é",
        ),
        ("", "/only-path", "host.example", ""),
    ] {
        let texts = RequestTexts::new(route, path, host, agent);
        assert_eq!(
            (
                texts.route(),
                texts.path(),
                texts.host(),
                texts.user_agent()
            ),
            (route, path, host, agent)
        );
        let mut span = server(200, "");
        if let Detail::Server(d) = &mut span.detail {
            d.texts = texts;
        }
        let req = decode(&[span]);
        let attrs = &req.resource_spans[0].scope_spans[0].spans[0].attributes;
        assert_eq!(text(attrs, "http.route"), route);
        assert_eq!(text(attrs, "url.path"), path);
        assert_eq!(value(attrs, "server.address").is_some(), !host.is_empty());
        assert_eq!(
            value(attrs, "user_agent.original").is_some(),
            !agent.is_empty()
        );
        if !agent.is_empty() {
            assert_eq!(text(attrs, "user_agent.original"), agent);
        }
    }
}

#[test]
fn client_addresses_are_written_as_their_usual_text() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.20.100",
        "::1",
        "2001:db8::ff00:42:8329",
    ] {
        let mut span = server(200, "");
        if let Detail::Server(d) = &mut span.detail {
            d.client = Some(ip.parse().unwrap());
        }
        let req = decode(&[span]);
        let attrs = &req.resource_spans[0].scope_spans[0].spans[0].attributes;
        assert_eq!(text(attrs, "client.address"), ip);
    }
}
