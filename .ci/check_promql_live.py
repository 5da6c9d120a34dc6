#!/usr/bin/env python3
"""Evaluates the dashboard's and the rules' PromQL in a live Prometheus scraping orders-api.

The live part of .ci/prometheus-check runs the binary and a Prometheus on 127.0.0.1 (scraping it
every second and evaluating the rule file), and calls this twice:

  wait-scraped  before the traffic: waits until Prometheus holds samples of the idle target, so
                that counters have a value from before the traffic and their rates are not 0/0;
  evaluate      after the traffic: waits until Prometheus has scraped every request sent and the
                rules have run on them, then sends every expression through the query API:
                  - a contract of series the traffic must have left (exactly the requests sent,
                    route templates, real histograms, 429s, no ops traffic, build_info);
                  - the dashboard's variables, resolved as Grafana would, then every panel query;
                  - every recording rule, and what Prometheus recorded from it;
                  - every alert through the signal it compares (comparisons turned into `bool`,
                    or the argument of absent()), since a healthy run leaves the alert empty;
                  - the server's own evaluation of every rule, which must be healthy.
                An expression fails when it does not parse, returns no series (unless listed in
                ALLOWED_EMPTY) or only NaN values, or returns series that must not exist.

Exit status 0 when everything passes, 1 with FAIL: lines on stderr otherwise.
"""
import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

# Expressions allowed to return no series on a healthy run, keyed "dashboard:<panel>:<refId>" or
# "rule:<name>", with the reason. Keep it short: prefer expressions that return 0 to nothing.
ALLOWED_EMPTY = {
}

# What Grafana substitutes for its own variables when the dashboard is evaluated here.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")
CMP = re.compile(r"==|!=|>=|<=|>|<")


def repo_path(relative):
    """A path of the repository, as seen from the current directory."""
    return os.path.relpath(REPO / relative)


class Prometheus:
    """Prometheus' HTTP API, and the results of the expressions checked against it."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.failures, self.lines = [], []
        self.counts = {"evaluated": 0, "series": 0, "allowed": 0}

    def call(self, path, params, post=True):
        data = urllib.parse.urlencode(params, doseq=True)
        req = (urllib.request.Request(self.url + path, data=data.encode()) if post
               else urllib.request.Request(self.url + path + "?" + data))
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def query(self, expr):
        """(series, series with a finite value, error or None)"""
        r = self.call("/api/v1/query", {"query": expr})
        if r.get("status") != "success":
            return 0, 0, f"{r.get('errorType')}: {r.get('error')}"
        data = r["data"]
        values = ([data["result"]] if data["resultType"] == "scalar"
                  else [x["value"] for x in data["result"]])
        finite = [v for _, v in values if v not in ("NaN", "+Inf", "-Inf")]
        return len(values), len(finite), None

    def value(self, expr):
        """The first series' value, or None when there is none."""
        r = self.call("/api/v1/query", {"query": expr})
        res = r.get("data", {}).get("result", [])
        return float(res[0]["value"][1]) if res else None

    def check(self, key, expr, must_have_series=True, why=""):
        """Evaluates `expr`, records a line for it and a failure if it is not as expected."""
        n, finite, err = self.query(expr)
        self.counts["evaluated"] += 1
        self.counts["series"] += n > 0
        if err:
            self.failures.append(f"{key}: {err}\n      {expr}")
            status = "ERROR"
        elif n > 0 and finite == 0 and must_have_series and key not in ALLOWED_EMPTY:
            # Series that are all NaN mean rates of zero over zero: the traffic did not reach them.
            self.failures.append(f"{key}: {n} series, none with a finite value\n      {expr}")
            status = "NaN"
        elif n == 0 and must_have_series and key not in ALLOWED_EMPTY:
            seen = ""
            if " == " in expr:  # show what the left side holds instead
                r = self.call("/api/v1/query", {"query": expr.split(" == ")[0]})
                seen = " ".join(f"{x['metric']}={x['value'][1]}"
                                for x in r.get("data", {}).get("result", []))
                seen = f"\n      left side: {seen or 'no series'}"
            self.failures.append(f"{key}: no series\n      {expr}{seen}")
            status = "EMPTY"
        elif n > 0 and not must_have_series:
            self.failures.append(f"{key}: {n} series, expected none ({why})\n      {expr}")
            status = "UNEXPECTED"
        else:
            status = "allowed-empty" if n == 0 and must_have_series else "ok"
            self.counts["allowed"] += status == "allowed-empty"
        self.lines.append(f"   {status:13} {n:3}  {key}")
        return n


# --- wait-scraped ----------------------------------------------------------------------------

def wait_scraped(args):
    prom = Prometheus(args.prometheus)
    expr = f'count_over_time(up{{job="{args.job}"}}[1m])'
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            scrapes = prom.value(expr)
        except (OSError, ValueError):  # not answering yet, or not with JSON
            scrapes = None
        if scrapes is not None and scrapes >= args.scrapes:
            return 0
        if time.monotonic() > deadline:
            print(f"FAIL: after {args.timeout:g} s Prometheus holds {scrapes or 0:g} scrapes of "
                  f"job {args.job}, expected {args.scrapes}", file=sys.stderr)
            return 1
        time.sleep(0.1)


# --- evaluate --------------------------------------------------------------------------------

def wait_for_traffic(prom, sent, timeout=60):
    """Waits until Prometheus has scraped everything sent and the rules have run on it."""
    deadline = time.time() + timeout
    while True:
        seen = prom.value('sum(http_requests_total{job="orders-api"})')
        recorded = prom.value('count(namespace_job:http_requests_limited:ratio_rate5m)')
        if seen is not None and seen >= sent and recorded:
            break
        if time.time() > deadline:
            print(f"FAIL: after {timeout} s Prometheus holds {seen} of {sent} requests, "
                  f"recorded={recorded}", file=sys.stderr)
            return False
        time.sleep(0.5)
    time.sleep(3)  # a few more scrapes and evaluations, so series born during the burst have rates
    return True


def check_contract(prom, sent):
    """The series the traffic of .ci/prometheus-check must have left."""
    contract = [
        ('sum(http_requests_total{job="orders-api"})', True, "requests counted"),
        (f'sum(http_requests_total{{job="orders-api"}}) == {sent}', True,
         f"exactly the {sent} API requests sent: probes and scrapes are not counted"),
        ('http_requests_total{route="<unmatched>", status="404"}', True,
         "unknown paths are <unmatched>"),
        ('http_requests_total{route="/api/v1/orders/{id}", method="GET", status="200"}', True,
         "routes are templates"),
        ('http_requests_total{route=~"/healthz|/readyz|/metrics"}', False,
         "ops traffic is not recorded"),
        ('http_request_duration_seconds_bucket{le="0.25"}', True,
         "the latency SLI boundary exists"),
        ('http_request_duration_seconds_bucket{le="+Inf"}', True,
         "real histograms, not summaries"),
        ('http_requests_total{status="429"}', True, "the rate limiter answered 429"),
        ('rate_limit_decisions_total{decision="limited"}', True, "limited decisions are counted"),
        ('namespace_job:http_requests_errors:ratio_rate5m == 0', True, "no 5xx for valid traffic"),
        ('build_info == 1', True, "build_info is 1"),
    ]
    for expr, present, why in contract:
        prom.check(f"contract: {why}", expr, present, why)


def interpolate(text, resolved):
    """`text` with the dashboard variables of `resolved` substituted as Grafana would."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return resolved.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, text)


def check_dashboard(prom, dash, namespace, pod):
    """Resolves the template variables as Grafana would, then evaluates every panel query.
    Returns the number of queries."""
    resolved = dict(GRAFANA_BUILTINS)
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if not m:
            prom.failures.append(f"variable {v['name']}: not a label_values() query: {q}")
            continue
        selector, label = interpolate(m.group(1), resolved), m.group(2)
        r = prom.call(f"/api/v1/label/{label}/values", {"match[]": selector}, post=False)
        values = sorted(r.get("data") or [])
        prom.lines.append(f"   {'ok' if values else 'EMPTY':13} {len(values):3}  "
                          f"variable {v['name']} = {values}")
        if r.get("status") != "success" or not values:
            prom.failures.append(f"variable {v['name']}: {q} -> {r.get('error') or 'no values'}")
            continue
        if v.get("multi") or v.get("includeAll"):
            # "All" with no custom all value: Grafana sends every value, regex-escaped, as (a|b|c).
            esc = [REGEX_SPECIAL.sub(lambda c: "\\\\" + c.group(0), x) for x in values]
            resolved[v["name"]] = esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
        else:
            resolved[v["name"]] = values[0]
    for name, want in (("namespace", namespace), ("pod", pod)):
        if want not in resolved.get(name, "").replace("\\\\", ""):
            prom.failures.append(f"variable {name} does not resolve to {want}: "
                                 f"{resolved.get(name)}")

    panels, queue = [], list(dash["panels"])
    while queue:
        p = queue.pop(0)
        panels.append(p)
        queue.extend(p.get("panels", []))
    n_dash = 0
    for p in panels:
        for t in p.get("targets", []):
            n_dash += 1
            prom.check(f"dashboard:{p['title']}:{t['refId']}", interpolate(t["expr"], resolved))
    return n_dash


def with_bool(expr):
    """Turns every comparison outside selectors and strings into `op bool`: the expression then
    returns 0/1 for every input series instead of filtering them away."""
    out, i, depth = [], 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < len(expr) and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append(expr[i:j + 1])
            i = j + 1
            continue
        depth += (c == "{") - (c == "}")
        m = CMP.match(expr, i) if depth == 0 else None
        if m:
            out.append(m.group(0) + ("" if re.match(r"\s*bool\b", expr[m.end():]) else " bool"))
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def absent_argument(expr):
    """X when `expr` is exactly absent(X), else None."""
    m = re.fullmatch(r"\s*absent\s*\((.*)\)\s*", expr, re.S)
    if not m:
        return None
    depth = 0
    for c in m.group(1):
        depth += (c == "(") - (c == ")")
        if depth < 0:
            return None
    return m.group(1)


def check_rules(prom, rules):
    """Recording rules as written; alerts through the signal they compare, since a healthy run
    must leave their conditions false (and so empty). Returns the number of rules."""
    n_rules = 0
    for g in rules["groups"]:
        for r in g["rules"]:
            n_rules += 1
            expr = r["expr"]
            if "record" in r:
                prom.check(f"rule:{r['record']}", expr)
                prom.check(f"recorded by Prometheus:{r['record']}", r["record"])
                continue
            name = r["alert"]
            n, _, err = prom.query(expr)
            prom.counts["evaluated"] += 1
            if err:
                prom.failures.append(f"rule:{name}: {err}\n      {expr}")
            inner = absent_argument(expr)
            if inner is not None:
                # absent(X) stays quiet exactly while X returns series.
                prom.check(f"rule:{name} (absent argument)", inner)
            else:
                prom.check(f"rule:{name} (signal, comparisons as bool)", with_bool(expr))
            prom.lines.append(f"   {'condition':13} {n:3}  rule:{name} "
                              "(condition as written; firing if > 0)")
    return n_rules


def check_server_rules(prom):
    """Every rule evaluated by the server itself without error."""
    for g in prom.call("/api/v1/rules", {}, post=False)["data"]["groups"]:
        for r in g["rules"]:
            if r.get("health") != "ok":
                prom.failures.append(f"Prometheus evaluates {r['name']}: health "
                                     f"{r.get('health')} {r.get('lastError', '')}")


def evaluate(args):
    prom = Prometheus(args.prometheus)
    if not wait_for_traffic(prom, args.sent):
        return 1
    check_contract(prom, args.sent)
    with open(args.dashboard) as f:
        n_dash = check_dashboard(prom, json.load(f), args.namespace, args.pod)
    with open(args.rules) as f:
        n_rules = check_rules(prom, yaml.safe_load(f))
    check_server_rules(prom)

    counts, failures = prom.counts, prom.failures
    print("\n".join(prom.lines))
    print(f"   {n_dash} dashboard queries and {n_rules} rules: {counts['evaluated']} expressions "
          f"evaluated, {counts['series']} returned series, {counts['allowed']} allowed empty, "
          f"{len(failures)} failures")
    if failures:
        print("\n".join("FAIL: " + f for f in failures), file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    wait = commands.add_parser("wait-scraped", help="wait until the idle target has been scraped",
                               description="Waits until Prometheus holds at least SCRAPES samples "
                               "of up{job=JOB} from the last minute.")
    wait.add_argument("--prometheus", required=True, metavar="URL",
                      help="Prometheus' base URL, e.g. http://127.0.0.1:9090")
    wait.add_argument("--job", default="orders-api", help="the scrape job (default: %(default)s)")
    wait.add_argument("--scrapes", type=int, default=2,
                      help="samples of up to wait for (default: %(default)s)")
    wait.add_argument("--timeout", type=float, default=30,
                      help="seconds before giving up (default: %(default)s)")
    wait.set_defaults(run=wait_scraped)

    ev = commands.add_parser("evaluate", help="evaluate every expression after the traffic",
                             description="Evaluates the contract, the dashboard's queries and the "
                             "rules through Prometheus' query API (what is checked: "
                             "check_promql_live.py --help).")
    ev.add_argument("--prometheus", required=True, metavar="URL",
                    help="Prometheus' base URL, e.g. http://127.0.0.1:9090")
    ev.add_argument("--sent", required=True, type=int, metavar="N",
                    help="API requests sent: http_requests_total must add up to exactly this")
    ev.add_argument("--dashboard", default=repo_path("deploy/grafana/orders-api.json"),
                    help="the Grafana dashboard (default: %(default)s)")
    ev.add_argument("--rules", default=repo_path("deploy/prometheus/orders-api-rules.yaml"),
                    help="the Prometheus rule file (default: %(default)s)")
    ev.add_argument("--namespace", default="default",
                    help="the namespace label of the scrape target (default: %(default)s)")
    ev.add_argument("--pod", default="orders-api-test",
                    help="the pod label of the scrape target (default: %(default)s)")
    ev.set_defaults(run=evaluate)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
