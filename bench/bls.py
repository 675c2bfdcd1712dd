"""Streaming BLS fit vs scikit-learn Ridge on the in-memory matrix: time, peak memory, ratios.

    .venv/bin/python bench/bls.py            # n = 10k, 100k, 1M (1M alone is ~10-30 min on 2 cores)
    .venv/bin/python bench/bls.py --quick    # n = 10k, 40k
    .venv/bin/python bench/bls.py --extrapolate-1m   # 1M estimated from the 100k throughput

Synthetic pooled features (non-negative, correlated through a 16-d latent), d = 3072, C = 20,
generated in float32 chunks of 8192 rows. Every (method, n) runs in its own subprocess so that
its peak RSS (ru_maxrss) is clean. Measured:
- ``stream``: camflow.bls.BLS partial_fit over the chunks (the O(n d^2) float64 scatter) and
  finalize (the O(d^3) solve, enhancement on), which keeps O(d^2) memory whatever n is;
- ``sklearn``: StandardScaler + Ridge(alpha * n) on the whole float32 matrix held in memory (the
  enhance=False model; the baseline of the ratios), only where it fits (n <= 100k by default).
The agreement of the two (stream re-solved with enhance=False from the same sums) is printed too.
Time excludes generating the data. Checks: peak memory independent of n (< 1 GiB at 1M) and time
linear in n (seconds per row at the largest n within 2x of the smallest). The load average is
printed: on a CPU shared with other work absolute figures are inflated, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

D, C, CHUNK, LATENT = 3072, 20, 8192, 16
ALPHA = 50.0


def make_chunk(index: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``index`` of the synthetic stream (the same whatever the process)."""
    mixing_rng = np.random.default_rng(12345)
    mixing = mixing_rng.standard_normal((LATENT, D), dtype=np.float32)
    label_map = mixing_rng.standard_normal((LATENT, C), dtype=np.float32)
    rng = np.random.default_rng([7, index])
    latent = rng.standard_normal((rows, LATENT), dtype=np.float32)
    X = latent @ mixing
    X += 0.5 * rng.standard_normal((rows, D), dtype=np.float32)
    np.abs(X, out=X)
    scores = latent @ label_map + rng.standard_normal((rows, C), dtype=np.float32)
    Y = (scores > 1.0).astype(np.float32)  # ~25 % positives per class
    return X, Y


def chunk_sizes(n: int) -> list[int]:
    return [min(CHUNK, n - start) for start in range(0, n, CHUNK)]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_stream(n: int, out: str) -> dict:
    from camflow.bls import BLS

    bls = BLS(alpha=ALPHA)
    fit_s = 0.0
    for i, rows in enumerate(chunk_sizes(n)):
        X, Y = make_chunk(i, rows)
        start = time.perf_counter()
        bls.partial_fit(X, Y)
        fit_s += time.perf_counter() - start
        del X, Y
    start = time.perf_counter()
    bls.finalize()
    solve_s = time.perf_counter() - start
    nodes = bls.nodes_per_class_
    bls.enhance = False
    np.save(out, bls.finalize().coef_)
    return {"fit_s": fit_s, "solve_s": solve_s, "peak_mb": peak_mb(), "nodes_per_class": nodes}


def child_sklearn(n: int, out: str) -> dict:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    X = np.empty((n, D), dtype=np.float32)
    Y = np.empty((n, C), dtype=np.float32)
    start_row = 0
    for i, rows in enumerate(chunk_sizes(n)):
        X[start_row : start_row + rows], Y[start_row : start_row + rows] = make_chunk(i, rows)
        start_row += rows
    start = time.perf_counter()
    scaler = StandardScaler()
    Z = scaler.fit_transform(X)
    ridge = Ridge(alpha=ALPHA * n, solver="cholesky").fit(Z, Y)
    fit_s = time.perf_counter() - start
    np.save(out, ridge.coef_.T.astype(np.float64) / scaler.scale_[:, None])
    return {"fit_s": fit_s, "solve_s": 0.0, "peak_mb": peak_mb()}


def run_child(method: str, n: int, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--out", out]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 10k, 40k only")
    parser.add_argument("--extrapolate-1m", action="store_true",
                        help="estimate 1M from the measured throughput instead of running it")
    parser.add_argument("--sklearn-max", type=int, default=100_000,
                        help="largest n for the in-memory sklearn baseline")
    parser.add_argument("--child", choices=("stream", "sklearn"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = (child_stream if args.child == "stream" else child_sklearn)(args.n, args.out)
        print(json.dumps(result))
        return 0

    sizes = [10_000, 40_000] if args.quick else [10_000, 100_000, 1_000_000]
    measured = [n for n in sizes if not (args.extrapolate_1m and n == 1_000_000)]
    print(f"BLS fit, d={D}, C={C}, alpha={ALPHA}, chunks of {CHUNK} float32 rows; "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in measured:
            stream = run_child("stream", n, f"{tmp}/stream_{n}.npy")
            base = agreement = None
            if n <= args.sklearn_max:
                base = run_child("sklearn", n, f"{tmp}/sklearn_{n}.npy")
                ours, theirs = np.load(f"{tmp}/stream_{n}.npy"), np.load(f"{tmp}/sklearn_{n}.npy")
                agreement = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            rows.append((n, stream, base, agreement))
            print(f"  measured n={n}: stream {stream['fit_s'] + stream['solve_s']:.1f} s", flush=True)

    print()
    print(f"{'n':>9} | {'stream fit s':>12} | {'solve s':>7} | {'peak MiB':>8} | "
          f"{'sklearn s':>9} | {'peak MiB':>8} | {'time x':>6} | {'mem x':>6} | "
          f"{'us/row':>7} | {'nodes':>5} | coef rel diff")
    for n, s, b, agree in rows:
        total = s["fit_s"] + s["solve_s"]
        print(f"{n:>9} | {s['fit_s']:>12.2f} | {s['solve_s']:>7.2f} | {s['peak_mb']:>8.0f} | "
              f"{fmt(b and b['fit_s'], '9.2f'):>9} | {fmt(b and b['peak_mb'], '8.0f'):>8} | "
              f"{fmt(b and total / b['fit_s'], '6.2f'):>6} | "
              f"{fmt(b and s['peak_mb'] / b['peak_mb'], '6.2f'):>6} | "
              f"{1e6 * s['fit_s'] / n:>7.1f} | {s['nodes_per_class']:>5} | {fmt(agree, '.1e')}")
    print("(time x, mem x: stream / sklearn in-memory; coef rel diff: stream enhance=False vs "
          "sklearn, float32 in sklearn)")

    ok = True
    if args.extrapolate_1m:
        n0, s0, _, _ = rows[-1]
        per_row = s0["fit_s"] / n0
        print(f"\nEXTRAPOLATED, NOT MEASURED: 1M rows ~ {per_row * 1e6 + s0['solve_s']:.0f} s "
              f"(from {1e6 * per_row:.1f} us/row at n={n0}); peak memory not measured at 1M")
    peaks = [s["peak_mb"] for _, s, _, _ in rows]
    spread = max(peaks) / min(peaks)
    print(f"\npeak memory: {min(peaks):.0f}..{max(peaks):.0f} MiB over n = "
          f"{rows[0][0]}..{rows[-1][0]} (max/min {spread:.2f}; independent of n: "
          f"{'yes' if spread < 1.25 else 'NO'})")
    ok &= spread < 1.25
    big = [s for n, s, _, _ in rows if n == 1_000_000]
    if big:
        under = big[0]["peak_mb"] < 1024
        print(f"peak memory at 1M rows: {big[0]['peak_mb']:.0f} MiB (< 1 GiB: "
              f"{'yes' if under else 'NO'})")
        ok &= under
    per_row = [s["fit_s"] / n for n, s, _, _ in rows]
    linear = per_row[-1] / per_row[0]
    print(f"time per row, largest n / smallest n: {linear:.2f} (linear in n: "
          f"{'yes' if 0.5 <= linear <= 2.0 else 'NO'})")
    ok &= 0.5 <= linear <= 2.0
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
