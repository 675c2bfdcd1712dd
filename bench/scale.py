"""The driver's cost at scale, and generation's time per image as a run grows.

    .venv/bin/python bench/scale.py [--rows 10000 100000 1000000] [--baseline REV]
                                    [--growth 2000 20000] [--budget 600]

Part 1, on a moto S3 server: a run whose shards (64 images each) are all committed, as a
rerun of a finished or crashed run finds it. For each manifest size it measures, each step in a
fresh process:
- **plan + resume check**: what the driver does before streaming (read the manifest or its
  footer, plan the shards, list the committed ones, build the stream's items); its time and the
  growth of the process's peak RSS over the RSS after imports;
- **merge**: the metrics of every committed shard merged into the run's figures, from the totals
  the driver saved (a finished run) and, to show the worst case, from every shard's own states
  (a run that crashed before it saved any).

The synthetic run is written by each code's own serializers (markers, metric states, saved
totals); the current code's per-method markers, which none of these steps reads, are written
for one shard only, to keep the setup short. ``--baseline REV`` measures the same steps with the code of revision REV (checked out in a git
worktree; its synthetic run is written in its own format by its own code) in the same table,
each size only while the baseline's steps stay within ``--budget`` seconds in all.
Four methods and 20 classes (the demo's) make the metric states.

Part 2, on local disk: ``run_generation`` with a tiny model (resnet18 at 32 px, one method, one
scale) over ``--growth`` images (one small PNG, listed under distinct image ids); it prints
seconds per image, over the whole run, from the first to the last committed shard, and over the
middle half of the shards (without the pipeline's fill and drain: at the end, shards buffered
between the stages are committed back to back, which flatters a short run's first-to-last
figure), and the ratios of the largest run's to the smallest's (target <= 1.1: nothing in the
driver grows per image). The first and last quarters of each run are printed too: a cost that
grew with the shards done would show as a slower last quarter.
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

HERE = Path(__file__).resolve()
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
# The code under test: this checkout, or a baseline worktree (set by the parent process).
sys.path.insert(0, os.environ.get("CAMFLOW_BENCH_CODE", str(HERE.parents[1])))
sys.path.insert(1, str(HERE.parent))

METHODS = ("broadcam", "cam", "gradcam", "layercam")
NUM_CLASSES = 20
SHARD = 64
DECODE = "decode"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _manifest_table(rows: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    from camflow.data.manifest import MANIFEST_SCHEMA

    ids = pa.array([f"im{i:08d}" for i in range(rows)])
    labels = pa.array([[i % NUM_CLASSES] for i in range(rows)], MANIFEST_SCHEMA.field("labels").type)
    columns = {"image_id": ids, "uri": pc.binary_join_element_wise(
        "s3://bench/images/", ids, ".jpg", ""), "split": pa.array(["val"] * rows),
        "width": pa.array([500] * rows, pa.int32()), "height": pa.array([375] * rows, pa.int32()),
        "labels": labels}
    return pa.table({f.name: columns[f.name] if f.name in columns else pa.nulls(rows, f.type)
                     for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)


# -- one step of part 1, in its own process ------------------------------------------------------

def step_setup(impl: str, prefix: str, rows: int) -> dict:
    """The manifest and a run with every shard committed, written in ``impl``'s own format."""
    from camflow import storage
    from camflow.data.manifest import write_manifest
    from camflow.shards import ShardCommit, ShardStore

    started = time.perf_counter()
    write_manifest(_manifest_table(rows), f"{prefix}/manifests/val.parquet",
                   storage_options=storage.options_for(prefix))
    store = ShardStore(f"{prefix}/outputs", "p1", storage_options=storage.options_for(prefix))
    shards = [f"shard-{i // SHARD:05d}" for i in range(0, rows, SHARD)]
    entry = {"path": "x", "rows": SHARD, "bytes": 40_000, "sha256": "0" * 64,
             "image_ids": ["im00000000", "im00000063"]}
    objects: dict[str, bytes] = {}
    if impl == "current":
        from camflow.run_metrics import RunTotals, new_metrics, states_to_bytes
        from cluster.generate import TOTALS
        from cluster.stages import METRIC_STATES

        states = states_to_bytes({m: new_metrics(NUM_CLASSES) for m in METHODS}, rejects=0)
        totals = RunTotals()
        for shard in shards:
            path = store.file_path(METRIC_STATES, DECODE, shard)
            objects[path] = states
            objects[store.marker_path(DECODE, shard)] = ShardCommit(
                "p1", DECODE, shard, {"rejects": {**entry, "rows": 0}, METRIC_STATES: {
                    "path": path, "bytes": len(states), "sha256": "0" * 64}}).to_json()
            # The methods' own markers are never read by these steps (they only name data
            # files now); one shard's stand for their size, and the rest are left out.
            if shard == shards[0]:
                objects[store.marker_path("cam", shard)] = ShardCommit(
                    "p1", "cam", shard, {t: entry for t in ("seeds", "masks", "boxes")},
                    {"images": SHARD}).to_json()
            totals.add(shard, states)
        store.put_run_file(TOTALS, totals.to_bytes())
    else:  # the baseline: metric states as hex in every method's marker
        from camflow import generate as gen

        hexed = gen.metrics_to_json(gen.new_metrics(NUM_CLASSES))
        for shard in shards:
            objects[store.marker_path(DECODE, shard)] = ShardCommit(
                "p1", DECODE, shard, {"rejects": {**entry, "rows": 0}}).to_json()
            for method in METHODS:
                objects[store.marker_path(method, shard)] = ShardCommit(
                    "p1", method, shard, {t: entry for t in ("seeds", "masks", "boxes")},
                    {"metrics": hexed, "images": SHARD}).to_json()
    marker = max(len(v) for k, v in objects.items() if k.endswith(".json") and "/method=cam/" in k)
    paths = list(objects)
    for start in range(0, len(paths), 2000):
        store.fs.pipe({p: objects[p] for p in paths[start:start + 2000]})
    return {"seconds": time.perf_counter() - started, "objects": len(paths), "marker_bytes": marker}


def step_plan(impl: str, prefix: str, rows: int) -> dict:
    """What the driver does before it streams: plan, resume check, the stream's items."""
    from camflow import storage
    from camflow.data import manifest
    from camflow.shards import ShardStore
    from cluster import generate

    options = storage.options_for(prefix)
    store = ShardStore(f"{prefix}/outputs", "p1", storage_options=options)
    uri = f"{prefix}/manifests/val.parquet"
    rss0, started = _current_rss_mib(), time.perf_counter()  # after every import
    if impl == "current":
        shards = generate.plan_shards(manifest.manifest_rows(uri, storage_options=options), SHARD)
        done = store.committed(DECODE)
        # Every shard's item, as a fresh run streams them (a resumed run streams fewer).
        items = [{"shard": s.name, "start": s.start, "stop": s.stop} for s in shards]
        payload = len(json.dumps(items))
    else:
        shards = generate.plan_shards(manifest.read_manifest(uri, storage_options=options), SHARD)
        done = store.committed(DECODE)
        # Every shard's records, as the baseline driver streams them in a fresh run.
        items = [{"shard": s, "records": json.dumps(recs, default=generate._json_default)}
                 for s, recs in shards]
        payload = sum(len(i["records"]) for i in items)
    seconds = time.perf_counter() - started
    assert len(done) == len(shards), (len(done), len(shards))
    return {"seconds": seconds, "rss_growth_mib": _rss_mib() - rss0, "shards": len(shards),
            "stream_payload_mib": payload / 2**20}


def step_merge(impl: str, prefix: str, rows: int, saved: bool) -> dict:
    """The run's figures merged from every committed shard."""
    from camflow import storage
    from camflow.generate import CamMethod
    from camflow.options import GenerateOptions
    from camflow.shards import ShardStore
    from cluster import generate

    store = ShardStore(f"{prefix}/outputs", "p1", storage_options=storage.options_for(prefix))
    if impl == "current" and not saved:
        store.fs.rm_file(store._p("_runs", "run=p1", generate.TOTALS))
    started = time.perf_counter()
    if impl == "current":
        totals = generate._resumed_totals(store, sorted(store.committed(DECODE)))
        figures, merged = totals.summary(METHODS[0]), len(totals.shards)
    else:
        methods = tuple(CamMethod(m, ("stage5",)) for m in METHODS)
        job = generate.GenerationJob(f"{prefix}/outputs", "p1", methods,
                                     GenerateOptions(NUM_CLASSES))
        result = generate.collect(store, job, shards_total=0, shards_skipped=0)
        figures, merged = result.metrics[METHODS[0]], len(store.committed(DECODE))
    return {"seconds": time.perf_counter() - started, "shards": merged,
            "figures": sorted(figures)}


# -- part 2 ---------------------------------------------------------------------------------------

def growth(counts: list[int]) -> list[dict]:
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from camflow.data.manifest import MANIFEST_SCHEMA
    from camflow.generate import CamMethod
    from camflow.models import build, save_checkpoint
    from camflow.options import CamOptions, GenerateOptions
    from cluster.connect import connect
    from cluster.generate import CheckpointModel, GenerationJob, run_generation

    connect(num_cpus=os.cpu_count())
    tmp = Path(tempfile.mkdtemp(prefix="camflow-scale-"))
    image = tmp / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(image)
    checkpoint = str(tmp / "tiny.safetensors")
    save_checkpoint(build("resnet18", num_classes=3), checkpoint)
    options = GenerateOptions(3, image_size=32, cam=CamOptions(scales=(1.0,), flip=False))
    out = []
    for n in counts:
        table = pa.table({"image_id": [f"im{i:07d}" for i in range(n)], "uri": [str(image)] * n,
                          "split": ["val"] * n, "width": pa.array([32] * n, pa.int32()),
                          "height": pa.array([32] * n, pa.int32()),
                          "labels": [[i % 3] for i in range(n)]})
        table = pa.table({f.name: table[f.name] if f.name in table.column_names
                          else pa.nulls(n, f.type) for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)
        job = GenerationJob(str(tmp / f"out-{n}"), "p1", (CamMethod("cam", ("stage5",)),),
                            options, shard_size=SHARD)
        times: list[float] = []
        started = time.perf_counter()
        run_generation(job, table, CheckpointModel(checkpoint),
                       on_shard=lambda row, t=times: t.append(time.perf_counter()))
        whole = (time.perf_counter() - started) / n
        steady = (times[-1] - times[0]) / (n - SHARD) if len(times) > 1 else float("nan")
        # Within the run: a cost that grows with the shards done shows as a slower last quarter.
        q = max(1, len(times) // 4)
        first, last = ((t[q] - t[0]) / (q * SHARD) if len(t) > q else float("nan")
                       for t in (times, times[-q - 1:]))
        # The middle half: neither the pipeline's fill (before the first commit) nor its drain
        # (buffered shards committed back to back at the end) weighs on it.
        a, b = len(times) // 4, (3 * len(times)) // 4
        middle = (times[b] - times[a]) / ((b - a) * SHARD) if b > a else float("nan")
        out.append({"images": n, "whole_ms": whole * 1e3, "steady_ms": steady * 1e3,
                    "middle_ms": middle * 1e3})
        print(f"{n:>8} images: {whole * 1e3:6.2f} ms/image whole, {steady * 1e3:6.2f} first to "
              f"last commit, {middle * 1e3:6.2f} middle half ({first * 1e3:.2f} in the first "
              f"quarter of shards, {last * 1e3:.2f} in the last)", flush=True)
    return out


# -- the parent: runs each step in a fresh process ----------------------------------------------

def _run_step(impl: str, code: str, step: str, prefix: str, rows: int, timeout: float,
              extra: list[str] | None = None) -> dict | None:
    env = {**os.environ, "CAMFLOW_BENCH_CODE": code}
    cmd = [sys.executable, str(HERE), "--step", step, "--impl", impl, "--prefix", prefix,
           "--rows", str(rows), *(extra or [])]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {step} {rows}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worktree(rev: str) -> str:
    path = Path(tempfile.gettempdir()) / f"camflow-baseline-{rev[:12]}"
    if not path.exists():
        subprocess.run(["git", "-C", str(HERE.parents[1]), "worktree", "add", "--detach",
                        str(path), rev], check=True, capture_output=True)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline", help="a git revision to measure beside this checkout")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds the baseline's steps may take in all")
    parser.add_argument("--growth", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--step", choices=["setup", "plan", "merge", "merge-unsaved"])
    parser.add_argument("--impl", default="current")
    parser.add_argument("--prefix")
    args = parser.parse_args()

    if args.step:  # a child: one step, its figures as the last line of stdout
        steps = {"setup": step_setup, "plan": step_plan,
                 "merge": lambda *a: step_merge(*a, saved=True),
                 "merge-unsaved": lambda *a: step_merge(*a, saved=False)}
        print(json.dumps(steps[args.step](args.impl, args.prefix, args.rows[0])))
        return 0

    from s3server import start_moto

    moto = start_moto()
    impls = {"current": str(HERE.parents[1])}
    if args.baseline:
        impls["baseline"] = _worktree(args.baseline)
    print(f"part 1: moto S3, shards of {SHARD}, {len(METHODS)} methods, {NUM_CLASSES} classes, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'code':>8} {'rows':>9} {'setup s':>8} {'marker B':>8} {'plan s':>7} "
          f"{'RSS+ MiB':>8} {'items MiB':>9} {'merge s':>8} {'no-saved merge s':>16}")
    spent = {impl: 0.0 for impl in impls}
    try:
        for rows in args.rows:
            for impl, code in impls.items():
                left = args.budget - spent[impl] if impl == "baseline" else 3600.0
                if left <= 0:
                    print(f"{impl:>8} {rows:>9}  (not run: the {args.budget:.0f} s budget is spent)")
                    continue
                if impl == "baseline" and rows * len(METHODS) * 2500 > 4 * 2**30:
                    # Its markers hold every method's states as hex: about 160 KB per shard and
                    # method, 10 GB at 1M rows, more than moto and this machine hold.
                    print(f"{impl:>8} {rows:>9}  (not run: {rows // SHARD * len(METHODS)} markers "
                          f"of 160 KB would not fit in the S3 server's memory)")
                    continue
                prefix = f"s3://bench/{impl}-{rows}"
                began = time.perf_counter()
                setup = _run_step(impl, code, "setup", prefix, rows, left)
                plan = setup and _run_step(impl, code, "plan", prefix, rows, left)
                merge = plan and _run_step(impl, code, "merge", prefix, rows, left)
                unsaved = merge and impl == "current" and _run_step(
                    impl, code, "merge-unsaved", prefix, rows, left)
                spent[impl] += time.perf_counter() - began - (setup or {}).get("seconds", 0)

                def cell(d, key, fmt):
                    return format(d[key], fmt) if d else "timeout"

                print(f"{impl:>8} {rows:>9} {cell(setup, 'seconds', '8.1f')} "
                      f"{cell(setup, 'marker_bytes', '8d')} {cell(plan, 'seconds', '7.2f')} "
                      f"{cell(plan, 'rss_growth_mib', '8.1f')} "
                      f"{cell(plan, 'stream_payload_mib', '9.1f')} {cell(merge, 'seconds', '8.2f')} "
                      f"{cell(unsaved, 'seconds', '16.2f') if impl == 'current' else '-':>16}",
                      flush=True)
    finally:
        moto.kill()
    print("targets at 1M rows: RSS growth <= 200 MiB, resume check <= 10 s, merge <= 60 s")
    if args.growth:
        print(f"\npart 2: run_generation, tiny model, local disk, {os.cpu_count()} CPUs")
        runs = growth(args.growth)
        big, small = runs[-1], runs[0]
        print(f"time per image, {big['images']} against {small['images']} images (target "
              f"<= 1.1): first to last commit {big['steady_ms'] / small['steady_ms']:.2f}, "
              f"middle half {big['middle_ms'] / small['middle_ms']:.2f}, whole run "
              f"{big['whole_ms'] / small['whole_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
