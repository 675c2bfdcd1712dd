"""``make demo``: build the embedded benchmark (and its contact sheet) into a run directory.

Prints the run directory as its last line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camflow.data import embedded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_dir = Path(args.out).resolve()
    data = embedded.build(run_dir / "data" / "embedded", seed=args.seed)
    print(f"contact sheet: {data / embedded.CONTACT_SHEET}")
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
