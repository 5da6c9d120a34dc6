#!/usr/bin/env python3
"""Parses every manifest under a directory and sorts the files by the validator they need.

.ci/deploy-checks validates each kind of file differently:
  builtin    built-in Kubernetes kinds, for kubernetes-validate --strict;
  kustomize  Kustomization and Component files, not validated as manifests (their directories
             are rendered with `kubectl kustomize`, a component through the overlays that use
             it, and the result validated);
  crd        Prometheus Operator resources (monitoring.coreos.com), which kubernetes-validate has
             no schema for: checked structurally instead.
Every *.yaml / *.yml file must be YAML, not empty, with apiVersion and kind on every document, and
hold documents of one of these sorts only.

Writes one file per sort (builtin, kustomize, crd) into the output directory, each listing its
manifests one path a line. Exit status 0, or 1 with the reason on stderr.
"""
import argparse
import os
import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
SORTS = ("builtin", "kustomize", "crd")


def repo_path(relative):
    """A path of the repository, as seen from the current directory."""
    return os.path.relpath(REPO / relative)


class ManifestError(Exception):
    pass


def sort_of(path):
    """The sort of every document in the file at `path`."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not YAML: {e}") from e
    if not docs:
        raise ManifestError(f"{path}: empty")
    sorts = set()
    for d in docs:
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
            raise ManifestError(f"{path}: every document needs apiVersion and kind")
        if d["kind"] in ("Kustomization", "Component"):
            sorts.add("kustomize")
        elif d["apiVersion"].startswith("monitoring.coreos.com/"):
            sorts.add("crd")
        else:
            sorts.add("builtin")
    if len(sorts) != 1:
        raise ManifestError(f"{path}: mixes built-in, CRD and kustomize documents; split it")
    return sorts.pop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, type=pathlib.Path, metavar="DIR",
                        help="where to write the lists builtin, kustomize and crd")
    parser.add_argument("root", nargs="?", type=pathlib.Path, default=repo_path("deploy/k8s"),
                        help="the directory searched for manifests, recursively "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)

    lists = {name: [] for name in SORTS}
    try:
        for path in sorted(args.root.rglob("*.y*ml")):
            lists[sort_of(path)].append(str(path))
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    for name, files in lists.items():
        (args.output_dir / name).write_text("".join(f + "\n" for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
