"""Streaming CAM generation to object storage: end-to-end against forward-only, 1 and 2 actors.

    .venv/bin/python bench/stream.py [--images N] [--workload demo light] [--workers 1 2] [--repeat 2]

For each workload and actor count it runs, on actors sized the same way and the same shards:
- forward-only: the CAM workers compute every method's maps from pre-decoded shards; nothing
  is post-processed or written (the model's share of the work);
- end-to-end: decode -> CAM workers -> seeds, pseudo masks, boxes and metrics -> Parquet on a
  moto S3 server, with commit markers (cluster.generate.run_generation).
Workloads: ``demo`` is what ``make demo`` generates (broadcam, cam, gradcam, layercam at the
demo's scales, flows/demo.py); ``light`` is the cheapest useful one (cam and gradcam at one scale), where the
model's share is smallest and post-processing and I/O weigh most.
Throughput is measured in steady state, from the moment every actor has returned its first
shard to the last shard (actor start-up is printed apart), each run starting on a quiet machine;
each measurement is the best of ``--repeat`` runs, since a 2-core machine's figures vary by
10-20 % from run to run. moto runs as its own process, as
object storage does in production: in-process it would share the driver's GIL.
It prints images/s, MB/s written, bytes per image per table, the S3 server's CPU per image (it
shares this machine's cores), and end-to-end / forward-only
throughput (target >= 0.7: I/O and post-processing overlap with compute instead of adding to it).

First, for each workload, the CAM compute alone in this process (all CPUs' threads): every
method's maps of the decoded images from one shared pass per batch (``class_maps`` over all
methods) against one pass per method, interleaved, best of ``--repeat``; target: the shared pass
<= 55 % of the per-method time per image. ``--compute-only`` stops after that comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from s3server import start_moto  # noqa: E402

from camflow.data import embedded  # noqa: E402
from camflow.data.voc import read_voc  # noqa: E402
from camflow.generate import CamMethod, class_maps  # noqa: E402
from camflow.models import build, save_checkpoint  # noqa: E402
from camflow.options import CamOptions, GenerateOptions  # noqa: E402
from camflow.shards import ShardStore  # noqa: E402
from cluster.connect import connect, torch_threads_for, worker_cpus  # noqa: E402
from cluster.generate import CheckpointModel, GenerationJob, plan_shards, run_generation  # noqa: E402
from cluster.stages import _decode_stage, _images_of  # noqa: E402
from flows.demo import DEMO  # noqa: E402


class ForwardOnly:
    """The CAM worker's compute alone: maps of every method, discarded."""

    def __init__(self, factory, methods, options, num_threads):
        torch.set_num_threads(num_threads)
        self.model = factory().eval()
        self.methods, self.options = methods, options

    def __call__(self, batch):
        for i in range(len(batch["shard"])):
            images = _images_of({key: values[i] for key, values in batch.items()})
            class_maps(self.model, images, self.methods, self.options)
        return {"shard": list(batch["shard"])}


def shared_against_per_method(model, decoded_rows, methods, options, repeat: int
                              ) -> tuple[float, float]:
    """Seconds per image of every method's maps: (one shared pass per batch, a pass per method)."""
    images = [im for row in decoded_rows for im in _images_of(row)]
    best = {"shared": float("inf"), "per method": float("inf")}
    runs = {"shared": lambda: class_maps(model, images, methods, options),
            "per method": lambda: [class_maps(model, images, [m], options) for m in methods]}
    for _ in range(repeat):
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            best[key] = min(best[key], (time.perf_counter() - started) / len(images))
    return best["shared"], best["per method"]


def steady_rate(times: list[float], started: float, shard_images: list[int], workers: int
                ) -> tuple[float, float]:
    """(images/s after every actor returned its first shard, seconds until then)."""
    order = sorted(zip(times, shard_images))
    warm = min(workers, len(order) - 1)
    t0 = order[warm - 1][0] if warm else started
    images = sum(n for _, n in order[warm:])
    return images / max(order[-1][0] - t0, 1e-9), t0 - started


def forward_only(job, decoded_rows, factory, workers: int) -> tuple[float, float]:
    """Steady-state images/s of the CAM actors alone, sized exactly as run_generation sizes them."""
    import ray.data

    cpus = worker_cpus(workers)
    ds = ray.data.from_items(decoded_rows, override_num_blocks=len(decoded_rows))
    ds = ds.map_batches(
        ForwardOnly, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"factory": factory, "methods": job.methods,
                               "options": job.options, "num_threads": torch_threads_for(cpus)},
        num_cpus=cpus,
    )
    sizes = {row["shard"]: len(json.loads(row["meta"])) for row in decoded_rows}
    started, times, images = time.perf_counter(), [], []
    for row in ds.iter_rows():
        times.append(time.perf_counter())
        images.append(sizes[row["shard"]])
    _wait_for_free_cpus()
    return steady_rate(times, started, images, workers)


def end_to_end(job, manifest, factory, workers: int) -> tuple[float, float]:
    """Steady-state images/s of run_generation: decode, CAMs, post-processing, S3 commits."""
    sizes = {s.name: s.stop - s.start for s in plan_shards(len(manifest), job.shard_size)}
    times, images = [], []

    def committed(row):
        times.append(time.perf_counter())
        images.append(sizes[row["shard"]])

    started = time.perf_counter()
    run_generation(job, manifest, factory, workers=workers, on_shard=committed)
    _wait_for_free_cpus()
    return steady_rate(times, started, images, workers)


def _wait_for_free_cpus(timeout: float = 60.0) -> None:
    """The next run must not start while the previous run's actors still hold CPUs."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        if time.monotonic() > deadline:
            raise RuntimeError("the previous run's actors did not release their CPUs")
        time.sleep(0.2)


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (Linux /proc/stat; zeros elsewhere)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def wait_until_quiet(busy_below: float = 0.15, timeout: float = 90.0) -> None:
    """Wait for a second in which the CPUs were mostly idle: worker processes of the previous
    run still exiting, or new ones still importing, would otherwise eat into the next one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy0, total0 = _cpu_ticks()
        time.sleep(1.0)
        busy1, total1 = _cpu_ticks()
        if total1 == total0 or (busy1 - busy0) / (total1 - total0) < busy_below:
            return
    print(f"(the machine stayed busy for {timeout:.0f}s; measuring anyway)", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workload(name: str, num_classes: int, feature_dim: int) -> tuple[tuple[CamMethod, ...], GenerateOptions]:
    if name == "demo":
        # broadcam's weights come from a fitted BLS; random ones cost exactly the same.
        weights = np.random.default_rng(0).standard_normal((num_classes, feature_dim)).astype(np.float32)
        methods = (CamMethod("broadcam", ("stage4", "stage5"), weights=weights),
                   CamMethod("cam", ("stage5",)), CamMethod("gradcam", ("stage5",)),
                   CamMethod("layercam", ("stage4", "stage5")))
        assert [m.name for m in methods] == DEMO["cams"]["methods"]
        scales = tuple(DEMO["cams"]["scales"])
    elif name == "light":
        methods = (CamMethod("cam", ("stage5",)), CamMethod("gradcam", ("stage5",)))
        scales = (1.0,)
    else:
        raise ValueError(f"unknown workload {name!r}: demo or light")
    return methods, GenerateOptions(num_classes=num_classes, image_size=112,
                                    cam=CamOptions(scales=scales, flip=False, batch_size=16))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, help="per workload (default: demo 1024, light 2048, "
                        "about 40 s of steady state each)")
    parser.add_argument("--workload", nargs="+", default=["demo", "light"])
    parser.add_argument("--shard-size", type=int, default=64, help="the pipeline default")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each measurement; the best is kept (default 2)")
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random resnet18)")
    parser.add_argument("--quick", action="store_true", help="64 images, 1 actor, light, once")
    parser.add_argument("--compute-only", action="store_true",
                        help="only the shared-pass against per-method-pass comparison")
    parser.add_argument("--compute-images", type=int, default=256,
                        help="images of that comparison (default 256)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.workers, args.workload, args.repeat = 64, [1], ["light"], 1
    counts = {name: args.images or DEFAULT_IMAGES[name] for name in args.workload}

    work = Path(tempfile.mkdtemp(prefix="camflow-bench-stream-"))
    root = embedded.build(work / "data", train=0, val=max(*counts.values(), args.compute_images))
    every = read_voc(root, "val")
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = str(work / "model.safetensors")
        save_checkpoint(build("resnet18", len(embedded.CLASSES)), ckpt, {})
    factory = CheckpointModel(ckpt)

    model = factory().eval()
    print(f"CAM compute in this process, {torch.get_num_threads()} threads, "
          f"{args.compute_images} images of 112 px, best of {args.repeat}")
    print(f"{'workload':>8} {'shared ms/img':>14} {'per-method ms/img':>18} {'shared/per-method':>18}")
    for name in args.workload:
        manifest = every.slice(0, min(args.compute_images, len(every)))
        records = manifest.to_pylist()
        decoded = [_decode_stage({"shard": s.name}, records[s.start:s.stop], len(embedded.CLASSES), None)
                   for s in plan_shards(len(records), args.shard_size)]
        methods, options = workload(name, len(embedded.CLASSES), 256 + 512)
        one, apart = shared_against_per_method(model, decoded, methods, options, args.repeat)
        target = " (target <= 0.55)" if name == "demo" else ""
        print(f"{name:>8} {one * 1e3:>14.2f} {apart * 1e3:>18.2f} {one / apart:>18.2f}{target}",
              flush=True)
    del model
    if args.compute_only:
        return 0

    moto = start_moto()
    connect(num_cpus=os.cpu_count())

    print(f"\nimages of 112 px in shards of {args.shard_size}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; best of {args.repeat} runs each")
    header = (f"{'workload':>8} {'images':>6} {'actors':>6} {'fwd img/s':>10} {'e2e img/s':>10} "
              f"{'e2e/fwd':>8} {'MB/s':>7} {'start s':>7} {'S3 ms/img':>9} "
              + " ".join(f"{t + ' B/img':>13}" for t in TABLES))
    rows = []
    try:
        for name in args.workload:
            manifest = every.slice(0, counts[name])
            n = len(manifest)
            records = manifest.to_pylist()
            decoded = [_decode_stage({"shard": s.name}, records[s.start:s.stop], len(embedded.CLASSES), None)
                       for s in plan_shards(len(records), args.shard_size)]
            methods, options = workload(name, len(embedded.CLASSES), 256 + 512)
            for workers in args.workers:
                fwd = e2e = 0.0
                for rep in range(args.repeat):
                    job = GenerationJob(output=f"s3://bench/{name}-w{workers}-{rep}", run_id="bench",
                                        methods=methods, options=options, shard_size=args.shard_size)
                    wait_until_quiet()
                    fwd = max(fwd, forward_only(job, decoded, factory, workers)[0])
                    wait_until_quiet()
                    moto_cpu = cpu_seconds(moto.pid)
                    rate, startup = end_to_end(job, manifest, factory, workers)
                    moto_ms = (cpu_seconds(moto.pid) - moto_cpu) / n * 1e3
                    e2e = max(e2e, rate)
                store = ShardStore(job.output, job.run_id)
                table_bytes = dict.fromkeys(TABLES, 0)
                for commit in store.commits():
                    for table, info in commit.files.items():
                        if table in table_bytes:
                            table_bytes[table] += info["bytes"]
                per_image = {t: b / n / len(methods) for t, b in table_bytes.items()}
                rows.append(f"{name:>8} {n:>6} {workers:>6} {fwd:>10.2f} {e2e:>10.2f} "
                            f"{e2e / fwd:>8.2f} {sum(table_bytes.values()) / n * e2e / 1e6:>7.3f} "
                            f"{startup:>7.1f} {moto_ms:>9.1f} "
                            + " ".join(f"{per_image[t]:>13.0f}" for t in TABLES))
                print(rows[-1], flush=True)
    finally:
        moto.kill()
    print(header)
    print("\n".join(rows))
    print("(steady state; bytes per image are per method; S3 ms/img: CPU of the moto server "
          "per image; e2e/fwd >= 0.70 is the target)")
    ray.shutdown()
    return 0


TABLES = ("seeds", "masks", "boxes")
DEFAULT_IMAGES = {"demo": 1024, "light": 2048}

if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
