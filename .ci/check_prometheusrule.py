#!/usr/bin/env python3
"""Checks that the PrometheusRule carries exactly the groups of the Prometheus rule file.

deploy/k8s/monitoring/prometheusrule.yaml is generated from deploy/prometheus/orders-api-rules.yaml
(`.ci/prometheus-check --write`), so that the Prometheus Operator and a plain Prometheus load the
same rules. .ci/prometheus-check compares the two texts; this compares what they mean once
parsed: the resource must be a monitoring.coreos.com/v1 PrometheusRule whose spec.groups equal
the rule file's groups.

Exit status 0 when they agree, 1 (with a FAIL: line on stderr) when they do not.
"""
import argparse
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def repo_path(relative):
    """A path of the repository, as seen from the current directory."""
    return os.path.relpath(REPO / relative)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", default=repo_path("deploy/prometheus/orders-api-rules.yaml"),
                        help="the Prometheus rule file (default: %(default)s)")
    parser.add_argument("--prometheusrule",
                        default=repo_path("deploy/k8s/monitoring/prometheusrule.yaml"),
                        help="the PrometheusRule generated from it (default: %(default)s)")
    args = parser.parse_args(argv)

    rules, cr = load(args.rules), load(args.prometheusrule)
    if not (isinstance(cr, dict) and cr.get("apiVersion") == "monitoring.coreos.com/v1"
            and cr.get("kind") == "PrometheusRule"):
        print(f"FAIL: {args.prometheusrule} is not a monitoring.coreos.com/v1 PrometheusRule",
              file=sys.stderr)
        return 1
    if (cr.get("spec") or {}).get("groups") != rules["groups"]:
        print("FAIL: spec.groups of the PrometheusRule are not the rule file's groups",
              file=sys.stderr)
        return 1
    n_rules = sum(len(g["rules"]) for g in rules["groups"])
    print(f"   {len(rules['groups'])} groups, {n_rules} rules, identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
