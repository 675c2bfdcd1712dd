"""``make demo``: the whole pipeline on the embedded benchmark, on this machine.

Trains on 5 % and 100 % of the training images, fits BroadCAM, makes seeds for broadcam, cam,
gradcam and layercam, pseudo masks and boxes, evaluates them against the benchmark's masks and
boxes, and writes report.md, metrics.json, plots and overlay grids into the run directory, whose
path is the last line printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEMO: dict[str, Any] = {
    "name": "demo",
    "train": {"proportions": [0.05, 1.0]},
    "cams": {
        "methods": ["broadcam", "cam", "gradcam", "layercam"],
        # Digits are not mirror-symmetric (the classifier never sees flips), and three scales
        # keep the demo inside its time budget on two CPU cores.
        "scales": [1.0, 0.5, 1.5],
        "flip": False,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output root (default: runs/demo)")
    parser.add_argument("--run-id", help="resume this run instead of starting a new one")
    args = parser.parse_args(argv)

    from flows.config import parse_config
    from flows.pipeline import pipeline

    config = {**DEMO, "output": args.out, "run_id": args.run_id}
    result = pipeline(parse_config(config).model_dump(mode="json"))
    from camflow.report import markdown_table, metrics_rows

    print(markdown_table(metrics_rows(result["results"])))
    print(f"report: {result['report']}")
    print(result["run_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
