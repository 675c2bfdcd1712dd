"""Rebuild the vendored schemas in this folder from upstream files (see README.md).

    python tests/infra/schemas/extract.py ray.io_rayclusters.yaml ray.io_rayjobs.yaml \
        compose-spec.json

A CRD (`*.yaml`) gives the `openAPIV3Schema` of its served `v1` version, written to
`<kind>.v1.json.gz`; a JSON schema (`*.json`) is written as it is, to `<name>.json.gz`. Both as
compact JSON with sorted keys, gzip'd without a timestamp, so a rebuild from the same input gives
the same bytes.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def crd_schema(crd: dict, version: str = "v1") -> tuple[str, dict]:
    assert crd.get("kind") == "CustomResourceDefinition", "not a CRD"
    served = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served")]
    assert served, f"{crd['metadata']['name']} does not serve {version}"
    return crd["spec"]["names"]["kind"].lower(), served[0]["schema"]["openAPIV3Schema"]


def write(name: str, schema: dict) -> Path:
    path = HERE / name
    text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    return path


def main(argv: list[str]) -> int:
    for arg in argv:
        source = Path(arg)
        if source.suffix in (".yaml", ".yml"):
            kind, schema = crd_schema(yaml.safe_load(source.read_text()))
            path = write(f"{kind}.v1.json.gz", schema)
        else:
            path = write(f"{source.stem}.json.gz", json.loads(source.read_text()))
        print(f"{source} -> {path.relative_to(HERE)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
