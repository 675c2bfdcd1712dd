"""``make demo``: the whole pipeline on the embedded benchmark, on this machine.

Pretrains the source backbone on first use (once per machine: it is cached), fine-tunes
classifiers from it on 5 % and 100 % of the training images, fits BroadCAM, makes seeds for
broadcam, cam, gradcam and layercam, pseudo masks and boxes, evaluates them against the
benchmark's masks and boxes, and writes report.md, metrics.json, plots and overlay grids into the
run directory, whose path is the last line printed.
"""

from __future__ import annotations

import argparse
import atexit
import sys
from typing import Any

DEMO: dict[str, Any] = {
    "name": "demo",
    # The fine-tuning preset reads CAMs at output stride 16 (sharper seeds, chosen on training
    # images by bench/cam_resolution.py); at 16 this demo took 7.5 minutes with the backbone
    # cached, so it keeps stride 32 (4 x 4 stage5 maps at 112 px) to stay within 6.
    "model": {"output_stride": 32},
    "train": {"proportions": [0.05, 1.0]},
    "cams": {
        "methods": ["broadcam", "cam", "gradcam", "layercam"],
        # Digits are not mirror-symmetric (the classifier never sees flips). Two scales keep the
        # demo inside its 10-minute budget on two CPU cores: adding 1.5 costs 2.8x the CAM
        # compute and made the demo take 10m40s.
        "scales": [1.0, 0.5],
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
    finished: list[str] = []
    # Prefect stops its temporary API server at exit and logs that; exit handlers run last
    # registered first, so one registered before the flow prints the run directory after it.
    atexit.register(lambda: finished and print(finished[0], flush=True))
    result = pipeline(parse_config(config))
    from camflow.report import markdown_table, metrics_rows

    print(markdown_table(metrics_rows(result["results"])))
    print(f"report: {result['report']}")
    import ray

    ray.shutdown()  # the demo's local Ray: tearing it down here is quicker than at exit
    finished.append(result["run_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
