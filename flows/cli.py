"""The ``camflow`` command: run, sweep, submit, pretrain, predict, serve, show, config.

User mistakes (a bad config key, a missing dataset or run) end in one line and a hint, exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from flows.config import ConfigError, RunConfig, dump_config, load_config


class UserError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--set {pair!r} is not KEY=VALUE", "e.g. --set cams.methods=[cam,gradcam]")
        out[key] = yaml.safe_load(value)
    return out


def _config(args: argparse.Namespace) -> RunConfig:
    overrides = _overrides(args.set)
    if args.output:
        overrides["output"] = args.output
    if args.run_id:
        overrides["run_id"] = args.run_id
    cfg = load_config(args.config, overrides)
    if cfg.data.root and "://" not in cfg.data.root and not Path(cfg.data.root).exists():
        raise UserError(f"dataset path {cfg.data.root} does not exist",
                        "set data.root to the dataset folder, or data.kind: embedded")
    pretrained = cfg.model.pretrained
    if isinstance(pretrained, str) and pretrained not in ("imagenet", "embedded") and \
            "://" not in pretrained and not Path(pretrained).is_file():
        raise UserError(f"model.pretrained: {pretrained} is not a file",
                        "give a torchvision state dict (.safetensors/.pth), or false, imagenet, "
                        "embedded")
    return cfg


def cmd_run(args: argparse.Namespace, *, flow_name: str = "pipeline") -> int:
    from flows import pipeline as pipeline_module

    cfg = _config(args)
    flow = getattr(pipeline_module, flow_name)
    result = flow(cfg)
    _print_metrics(result["results"])
    print(result["report"])
    print(result["run_dir"])
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster.jobs import submit_run, wait_for_job
    from flows.submit import prepare

    env = {}
    for pair in args.env:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--env {pair!r} is not KEY=VALUE", "e.g. --env CAMFLOW_CACHE=/data")
        env[key] = value
    try:
        sub = prepare(_config(args), env)
    except ValueError as err:
        raise UserError(str(err), "give absolute paths that the cluster's machines see, or "
                        "s3:// URIs") from err
    try:
        submitted = submit_run(args.address, command="sweep" if args.sweep else "run",
                               config_yaml=sub.config_yaml, run_id=sub.run_id, name=sub.name,
                               env=sub.env)
    except ConnectionError as err:
        raise UserError(f"no Ray Jobs API at {args.address or 'the default address'}: {err}",
                        "pass --address http://HEAD:8265 (the head's dashboard port)") from err
    except RuntimeError as err:
        raise UserError(str(err), "`ray job list` shows the cluster's jobs") from err
    print(f"submitted run {submitted.run_id} as Ray job {submitted.submission_id}")
    for command in submitted.commands():
        print(f"  {command}")
    if not args.wait:
        return 0
    outcome = wait_for_job(submitted.address, submitted.submission_id,
                           on_status=lambda status: print(f"job {status}", flush=True))
    print(outcome.logs, end="")
    return 0 if outcome.status == "SUCCEEDED" else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from prefect import serve

    cfg = _config(args)
    serve(*deployments(cfg))
    return 0


def deployments(cfg: RunConfig) -> list[Any]:
    """The nightly pipeline and an on-demand sweep, as Prefect deployments of this process."""
    from flows.pipeline import pipeline, sweep

    params = {"config": cfg.model_dump(mode="json")}
    return [
        pipeline.to_deployment(name=f"{cfg.name}-nightly", parameters=params,
                               cron=cfg.schedule.cron, tags=["camflow"]),
        sweep.to_deployment(name=f"{cfg.name}-sweep", parameters=params, tags=["camflow"]),
    ]


def _print_metrics(results: dict[str, dict[str, Any]]) -> None:
    from camflow.report import summary_rows, summary_table

    print(summary_table(summary_rows(results)))


def cmd_show(args: argparse.Namespace) -> int:
    from camflow import report, storage
    from camflow.data.manifest import read_manifest
    from camflow.shards import ShardStore

    run = args.run.rstrip("/")
    metrics_uri = storage.join(run, "metrics.json")
    if not storage.exists(metrics_uri):
        raise UserError(f"no finished run at {storage.redact(run)} (metrics.json is missing)",
                        "pass the run directory that `camflow run` printed last")
    with storage.open_uri(metrics_uri) as f:
        results = json.load(f)
    _print_metrics(results)
    splits = {entry.get("seeds_split", "val") for entry in results.values()}
    split = args.split or (splits.pop() if len(splits) == 1 else "val")
    manifest = read_manifest(storage.join(run, "manifests", f"{split}.parquet"))
    for key, entry in results.items():
        label = entry.get("run") or f"p{float(key):g}"
        stores = {}
        for run_id in (label, f"{label}-recam"):
            store = ShardStore(storage.join(run, "outputs"), run_id)
            # Folder names only: reading every marker to learn them costs a request per shard.
            stores.update({m: store for m in store.methods() if m != report.REJECTS_PARTITION})
        if not stores:
            continue
        # Images that fail to draw are left out with a logged warning, each; a grid that fails
        # altogether is named here, and the other runs still get theirs.
        png, notes = report.draw_overlays(label, stores, manifest, args.images)
        if png is None:
            print(f"camflow: warning: {notes[-1] if notes else f'no overlays of {label}'}",
                  file=sys.stderr)
            continue
        out = storage.join(run, f"show_{label}.png")
        storage.write_bytes(png, out)
        print(f"overlays ({', '.join(stores)}): {out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from flows.pipeline import pretrain

    cfg = _config(args)
    if args.out and not args.out.endswith(".safetensors"):
        raise UserError(f"--out {args.out} is not a .safetensors file",
                        "e.g. --out runs/backbones/resnet18.safetensors (the card goes beside it)")
    result = pretrain(cfg, backbone=args.backbone, out=args.out)
    card = result["card"]
    print(f"source-val mAP {card['val']['mAP']:.3f}, exact match {card['val']['exact_match']:.3f} "
          f"after {card['epochs']} epochs on {len(card['source']['classes'])} source classes "
          f"({card['seconds']:.0f} s)")
    print(result["weights"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from camflow.segment import SegInference
    from camflow.segment.checkpoint import load_segmenter
    from camflow.segment.predict import predict_files

    try:
        model, meta = load_segmenter(args.checkpoint)
    except (OSError, ValueError) as err:
        raise UserError(str(err), "pass a segmentation checkpoint (models/<run>/segmenter"
                        ".safetensors of a run with segment.enabled)") from err
    # The inference the model was scored with (DeepLabV3's, for a checkpoint that names none).
    inference = SegInference(**meta["inference"]) if "inference" in meta else SegInference()
    done = predict_files(model, args.images, args.out, inference=inference)
    for path in done.written:
        print(path)
    for image, reason in done.failed:
        print(f"camflow: error: image {image}: {reason}", file=sys.stderr)
    # Every good image was written; the exit status says whether all were.
    return 1 if done.failed else 0


def cmd_config(args: argparse.Namespace) -> int:
    print(dump_config(_config(args)), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="camflow", description="BroadCAM pipeline for WSSS and WSOL.")
    sub = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("config", nargs="?", help="YAML config (default: the embedded benchmark)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.proportions=[0.05]")
        p.add_argument("--output", help="output root (folder or s3://bucket/prefix)")
        p.add_argument("--run-id", help="resume or name a run (default: <name>-<timestamp>)")
        return p

    with_config(sub.add_parser("run", help="run the pipeline once")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("sweep", help="proportions x methods comparison")).set_defaults(
        func=lambda a: cmd_run(a, flow_name="sweep"))
    submit = with_config(sub.add_parser(
        "submit", help="run on a Ray cluster as a Ray job: returns at once, the run goes on there"))
    submit.add_argument("--address", help="the head's Jobs API, http://HEAD:8265 (default: "
                        "RAY_API_SERVER_ADDRESS, then RAY_ADDRESS)")
    submit.add_argument("--sweep", action="store_true", help="the sweep instead of one run")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable of the run (PREFECT_API_URL goes along)")
    submit.add_argument("--wait", action="store_true",
                        help="wait for the run to end, then print its log; exit 1 if it failed")
    submit.set_defaults(func=cmd_submit)
    pretrain = with_config(sub.add_parser(
        "pretrain", help="pretrain a backbone on the source benchmark (cached, or to --out)"))
    pretrain.add_argument("--backbone", help="default: model.backbone of the config (resnet18)")
    pretrain.add_argument("--out", metavar="URI", help="write the weights to this .safetensors "
                          "file or URI (the card beside it) instead of the cache")
    pretrain.set_defaults(func=cmd_pretrain)
    predict = sub.add_parser("predict", help="segment images with a trained segmentation model")
    predict.add_argument("checkpoint", help="a segmentation checkpoint (.safetensors)")
    predict.add_argument("images", nargs="+", help="image files or URIs")
    predict.add_argument("--out", required=True, help="folder (or URI) for the palette PNGs")
    predict.set_defaults(func=cmd_predict)
    with_config(sub.add_parser("serve", help="serve deployments with the configured cron schedule")
                ).set_defaults(func=cmd_serve)
    with_config(sub.add_parser("config", help="print the resolved config")).set_defaults(
        func=cmd_config)
    show = sub.add_parser("show", help="print a run's metrics and write overlay pictures")
    show.add_argument("run", help="a run directory printed by `camflow run`")
    show.add_argument("--split", help="the split whose seeds the run made (default: the run's)")
    show.add_argument("--images", type=int, default=8)
    show.set_defaults(func=cmd_show)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, UserError) as err:
        print(f"camflow: error: {err}\nhint: {err.hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
