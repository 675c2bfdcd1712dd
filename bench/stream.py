"""Streaming CAM generation to object storage: end-to-end against forward-only, 1 and 2 actors.

    .venv/bin/python bench/stream.py [--images 256] [--methods cam gradcam] [--scales 1.0]

For each actor count it runs, on the same Ray actors and shards:
- forward-only: the CAM workers compute every method's maps from pre-decoded shards; nothing
  is post-processed or written (the model's share of the work);
- end-to-end: decode -> CAM workers -> seeds, pseudo masks, boxes and metrics -> Parquet on a
  moto S3 server, with commit markers (cluster.generate.run_generation).
It prints images/s, MB/s written, bytes per image per table, and end-to-end / forward-only
throughput (target >= 0.7: I/O and post-processing overlap with compute instead of adding to it).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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

from camflow.data import embedded  # noqa: E402
from camflow.data.voc import read_voc  # noqa: E402
from camflow.generate import CamMethod, GenerateOptions, class_maps  # noqa: E402
from camflow.models import build, save_checkpoint  # noqa: E402
from camflow.shards import ShardStore  # noqa: E402
from cluster.connect import connect, torch_threads_for  # noqa: E402
from cluster.generate import (  # noqa: E402
    CheckpointModel,
    GenerationJob,
    _decode_stage,
    _unpack_images,
    plan_shards,
    run_generation,
)


class ForwardOnly:
    """The CAM worker's compute alone: maps of every method, discarded."""

    def __init__(self, factory, methods, options, num_threads):
        torch.set_num_threads(num_threads)
        self.model = factory().eval()
        self.methods, self.options = methods, options

    def __call__(self, batch):
        for i in range(len(batch["shard"])):
            images = _unpack_images(batch["images"][i], batch["meta"][i])
            for method in self.methods:
                class_maps(self.model, images, method, self.options)
        return {"shard": list(batch["shard"])}


def forward_only(job, decoded_rows, factory, workers: int) -> float:
    import ray.data

    ds = ray.data.from_items(decoded_rows, override_num_blocks=len(decoded_rows))
    ds = ds.map_batches(
        ForwardOnly, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"factory": factory, "methods": job.methods,
                               "options": job.options, "num_threads": torch_threads_for(1)},
        num_cpus=1,
    )
    started = time.perf_counter()
    for _ in ds.iter_rows():
        pass
    return time.perf_counter() - started


def start_moto() -> str:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(CAMFLOW_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    return endpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=["cam", "gradcam"])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0])
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random resnet18)")
    parser.add_argument("--quick", action="store_true", help="64 images, 1 actor")
    args = parser.parse_args()
    if args.quick:
        args.images, args.workers = 64, [1]

    work = Path(tempfile.mkdtemp(prefix="camflow-bench-stream-"))
    root = embedded.build(work / "data", train=0, val=args.images)
    manifest = read_voc(root, "val")
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = str(work / "model.safetensors")
        save_checkpoint(build("resnet18", len(embedded.CLASSES)), ckpt, {})
    start_moto()
    connect(num_cpus=os.cpu_count())
    options = GenerateOptions(num_classes=len(embedded.CLASSES), image_size=112,
                              scales=tuple(args.scales), flip=False, batch_size=16)
    methods = tuple(CamMethod(m, ("stage4", "stage5") if m == "layercam" else ("stage5",))
                    for m in args.methods)
    factory = CheckpointModel(ckpt)
    shards = plan_shards(manifest, args.shard_size)
    decoded = [_decode_stage({"shard": s, "records": json.dumps(r)}, None) for s, r in shards]

    print(f"\n{len(manifest)} images of 112 px, methods {args.methods}, scales {args.scales}, "
          f"shards of {args.shard_size}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    header = (f"{'actors':>6} {'fwd img/s':>10} {'e2e img/s':>10} {'e2e/fwd':>8} {'MB/s':>7} "
              + " ".join(f"{t + ' B/img':>13}" for t in ("seeds", "masks", "boxes")))
    rows = []
    for workers in args.workers:
        job = GenerationJob(output=f"s3://bench/w{workers}", run_id="bench", methods=methods,
                            options=options, shard_size=args.shard_size)
        fwd = forward_only(job, decoded, factory, workers)
        started = time.perf_counter()
        run_generation(job, manifest, factory, workers=workers)
        e2e = time.perf_counter() - started
        store = ShardStore(job.output, job.run_id)
        table_bytes = {t: 0 for t in ("seeds", "masks", "boxes")}
        for commit in store.commits():
            for table, info in commit.files.items():
                if table in table_bytes:
                    table_bytes[table] += info["bytes"]
        n = len(manifest)
        per_image = {t: b / n / len(methods) for t, b in table_bytes.items()}
        rows.append(f"{workers:>6} {n / fwd:>10.1f} {n / e2e:>10.1f} {fwd / e2e:>8.2f} "
                    f"{sum(table_bytes.values()) / e2e / 1e6:>7.3f} "
                    + " ".join(f"{per_image[t]:>13.0f}" for t in ("seeds", "masks", "boxes")))
    print(header)
    print("\n".join(rows))
    print("(bytes per image are per method; e2e/fwd >= 0.70 is the target)")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
