#!/usr/bin/env python3
"""Checks ServiceMonitor and PrometheusRule manifests (monitoring.coreos.com/v1) structurally.

kubernetes-validate bundles the built-in schemas only, and the CRD schemas are not available
offline, so .ci/deploy-checks runs this instead for the Prometheus Operator resources. Not the
full CRD schema: the fields these files may use are listed, so that a misspelled one fails, and
  - every document is a monitoring.coreos.com/v1 ServiceMonitor or PrometheusRule with a
    metadata.name and a spec, and there is at least one ServiceMonitor;
  - a ServiceMonitor has a selector matching the Service's labels and endpoints, each naming one
    of the Service's ports;
  - a PrometheusRule has groups with a name and rules, each rule an expr and exactly one of
    alert and record.

Exit status 0 when every check passes, 1 with one line per problem on stderr otherwise.
"""
import argparse
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

SM_SPEC = {"endpoints", "selector", "namespaceSelector", "jobLabel", "targetLabels",
           "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
           "labelNameLengthLimit", "labelValueLengthLimit", "keepDroppedTargets",
           "attachMetadata", "scrapeClass", "scrapeProtocols", "bodySizeLimit",
           "selectorMechanism", "fallbackScrapeProtocol", "serviceDiscoveryRole",
           "scrapeClassicHistograms", "nativeHistogramBucketLimit",
           "nativeHistogramMinBucketFactor", "convertClassicHistogramsToNHCB"}
SM_ENDPOINT = {"port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
               "tlsConfig", "bearerTokenFile", "bearerTokenSecret", "authorization",
               "honorLabels", "honorTimestamps", "trackTimestampsStaleness", "basicAuth",
               "oauth2", "metricRelabelings", "relabelings", "proxyUrl", "noProxy",
               "proxyFromEnvironment", "proxyConnectHeader", "followRedirects",
               "enableHttp2", "filterRunning"}
RULE_SPEC = {"groups"}
RULE_GROUP = {"name", "interval", "rules", "limit", "partial_response_strategy",
              "query_offset", "labels"}
RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
SELECTOR = {"matchLabels", "matchExpressions"}
METADATA = {"name", "namespace", "labels", "annotations"}


def repo_path(relative):
    """A path of the repository, as seen from the current directory."""
    return os.path.relpath(REPO / relative)


def check(service, docs):
    """The problems found in `docs`, checked against the Service `service`."""
    errors = []

    def keys(where, obj, allowed, required=()):
        if not isinstance(obj, dict):
            errors.append(f"{where}: expected a mapping")
            return {}
        for k in obj:
            if k not in allowed:
                errors.append(f"{where}: unknown field {k!r}")
        for k in required:
            if k not in obj:
                errors.append(f"{where}: missing {k!r}")
        return obj

    service_ports = {p.get("name") for p in service["spec"]["ports"]}
    service_labels = service["metadata"].get("labels", {})

    seen = set()
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        where = f"{kind}/{name}"
        seen.add(kind)
        if d.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
        keys(where, d, {"apiVersion", "kind", "metadata", "spec"}, ("metadata", "spec"))
        keys(f"{where} metadata", d.get("metadata", {}), METADATA, ("name",))
        spec = d.get("spec") or {}
        if kind == "ServiceMonitor":
            keys(f"{where} spec", spec, SM_SPEC, ("selector", "endpoints"))
            sel = keys(f"{where} spec.selector", spec.get("selector", {}), SELECTOR)
            for k, v in (sel.get("matchLabels") or {}).items():
                if service_labels.get(k) != v:
                    errors.append(f"{where}: selector {k}={v} does not match the Service's labels")
            for i, ep in enumerate(spec.get("endpoints") or []):
                keys(f"{where} endpoints[{i}]", ep, SM_ENDPOINT)
                if ep.get("port") not in service_ports:
                    errors.append(f"{where} endpoints[{i}]: port {ep.get('port')!r} is not a "
                                  f"Service port ({sorted(service_ports)})")
        elif kind == "PrometheusRule":
            keys(f"{where} spec", spec, RULE_SPEC, ("groups",))
            for g in spec.get("groups") or []:
                gw = f"{where} group {g.get('name')!r}"
                keys(gw, g, RULE_GROUP, ("name", "rules"))
                for r in g.get("rules") or []:
                    rw = f"{gw} rule {r.get('alert') or r.get('record')!r}"
                    keys(rw, r, RULE, ("expr",))
                    if ("alert" in r) == ("record" in r):
                        errors.append(f"{rw}: exactly one of alert and record")
        else:
            errors.append(f"{where}: unexpected kind in deploy/k8s/monitoring")
    if "ServiceMonitor" not in seen:
        errors.append("no ServiceMonitor found")
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", default=repo_path("deploy/k8s/service.yaml"),
                        help="the Service the ServiceMonitor must select (default: %(default)s)")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="the Prometheus Operator manifests (.ci/classify_manifests.py lists "
                             "them as crd)")
    args = parser.parse_args(argv)

    with open(args.service) as f:
        service = yaml.safe_load(f)
    docs = []
    for path in args.files:
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    errors = check(service, docs)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
