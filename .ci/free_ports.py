#!/usr/bin/env python3
"""Prints distinct free TCP ports on a local address, on one line separated by spaces.

.ci/prometheus-check starts orders-api (API and ops listeners) and Prometheus on ports picked
here, so that the check neither needs fixed ports nor collides with anything else listening on
the machine. The ports are bound all at once, so they are distinct, then released on exit for
the servers to take.
"""
import argparse
import socket
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", nargs="?", type=int, default=1,
                        help="how many ports (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to find them on (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("count must be at least 1")

    socks = [socket.socket() for _ in range(args.count)]
    try:
        for s in socks:
            s.bind((args.host, 0))
        print(*(s.getsockname()[1] for s in socks))
    finally:
        for s in socks:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
