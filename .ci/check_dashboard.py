#!/usr/bin/env python3
"""Checks statically that the Grafana dashboard imports as is and is fully parameterised.

Without a Grafana or a Prometheus, deploy/grafana/orders-api.json must:
  - be JSON with a current schemaVersion and no __inputs (no datasource prompt on import);
  - define the variables datasource (of type prometheus), namespace, and pod and route
    (multi-value with All), each query variable using only variables defined before it;
  - use the $datasource variable as the datasource of every query variable, panel and target;
  - have unique panel ids, a gridPos on every panel and at least one query in every panel that
    is not a row, with unique refIds;
  - use only defined variables in titles, expressions and legends, and $__rate_interval as the
    window of every rate().
The live part of .ci/prometheus-check then evaluates the same expressions in a real Prometheus.

Exit status 0 when every check passes, 1 with one FAIL: line per problem on stderr otherwise.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Grafana's own variables; `$1`-style names are regex group references of label_replace.
BUILTIN = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
           "__range_ms", "__from", "__to", "__dashboard", "__user", "__org", "__name",
           "__all", "timeFilter"}
VAR_RE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
# Variables the dashboard must define, and whether each must be multi-value with All.
REQUIRED_VARIABLES = (("datasource", False), ("namespace", False), ("pod", True), ("route", True))


def repo_path(relative):
    """A path of the repository, as seen from the current directory."""
    return os.path.relpath(REPO / relative)


def used_vars(text):
    """Names of the dashboard variables `text` refers to, Grafana's own left out."""
    return {a or b or c for a, b, c in VAR_RE.findall(text or "")} - BUILTIN


def all_panels(dashboard):
    """Every panel, those nested in rows included, breadth first."""
    panels, queue = [], list(dashboard.get("panels", []))
    while queue:
        panel = queue.pop(0)
        panels.append(panel)
        queue.extend(panel.get("panels", []))
    return panels


def check(dashboard):
    """(problems, summary line)"""
    problems = []

    def is_var_ds(ds, where):
        if not isinstance(ds, dict) or ds.get("uid") not in ("${datasource}", "$datasource"):
            problems.append(f"{where}: datasource must be the $datasource variable, is {ds!r}")

    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')!r}: "
                        "expected a current one (~39)")
    if "__inputs" in dashboard:
        problems.append("__inputs present: the dashboard must import without a datasource prompt")

    # --- template variables
    variables = dashboard.get("templating", {}).get("list", [])
    defined = []
    for v in variables:
        name = v.get("name", "")
        if v.get("type") == "datasource":
            if v.get("query") != "prometheus":
                problems.append(f"variable {name}: datasource variable must be of type prometheus")
        elif v.get("type") == "query":
            is_var_ds(v.get("datasource"), f"variable {name}")
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if not q or not q.strip():
                problems.append(f"variable {name}: empty query")
            for u in used_vars(q):
                if u not in defined:
                    problems.append(f"variable {name}: uses ${u}, not defined before it")
        defined.append(name)
    for need, multi in REQUIRED_VARIABLES:
        v = next((v for v in variables if v.get("name") == need), None)
        if v is None:
            problems.append(f"variable {need} missing")
        elif multi and not (v.get("multi") and v.get("includeAll")):
            problems.append(f"variable {need} must be multi-value with All")

    # --- panels and their queries
    panels = all_panels(dashboard)
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    queries = 0
    for p in panels:
        title = p.get("title", f"panel {p.get('id')}")
        if "gridPos" not in p:
            problems.append(f"{title}: no gridPos")
        for u in used_vars(title):
            if u not in defined:
                problems.append(f"{title}: title uses undefined ${u}")
        if p.get("type") == "row":
            continue
        is_var_ds(p.get("datasource"), title)
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{title}: no query")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{title}: refIds missing or repeated: {refs}")
        for t in targets:
            where = f"{title}/{t.get('refId')}"
            is_var_ds(t.get("datasource"), where)
            if not (t.get("expr") or "").strip():
                problems.append(f"{where}: empty expr")
                continue
            queries += 1
            for u in used_vars(t["expr"]) | used_vars(t.get("legendFormat")):
                if u not in defined and not u.isdigit():
                    problems.append(f"{where}: uses undefined ${u}")
            if "rate(" in t["expr"] and "[$__rate_interval]" not in t["expr"]:
                problems.append(f"{where}: rate window should be $__rate_interval")

    rows = sum(p.get("type") == "row" for p in panels)
    summary = (f"   {len(panels) - rows} panels in {rows} rows, {queries} queries, "
               f"variables {', '.join(defined)}")
    return problems, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dashboard", nargs="?", default=repo_path("deploy/grafana/orders-api.json"),
                        help="the dashboard JSON file (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        with open(args.dashboard) as f:
            dashboard = json.load(f)
    except ValueError as e:
        print(f"FAIL: {args.dashboard} is not JSON: {e}", file=sys.stderr)
        return 1
    problems, summary = check(dashboard)
    if problems:
        print("\n".join("FAIL: " + p for p in problems), file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
