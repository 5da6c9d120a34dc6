"""A minimal OTLP/HTTP traces receiver for load tests: it accepts every POST to /v1/traces,
reads the body and answers 200 with an empty ExportTraceServiceResponse, decoding nothing, so
that the receiver costs the load machine as little as possible. It counts requests and bytes
and prints them when stopped (SIGTERM or SIGINT).

    python3 benches/load/otlp_sink.py --port 4318
"""

import argparse
import http.server
import signal
import sys


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests = 0
    received = 0

    def do_POST(self):  # noqa: N802 (the http.server naming)
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        Sink.requests += 1
        Sink.received += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Sink)

    def stop(*_):
        print(f"otlp_sink: {Sink.requests} exports, {Sink.received} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
