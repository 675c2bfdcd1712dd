from __future__ import annotations

import pytest

from flows.config import ConfigError, RunConfig, dump_config, load_config, parse_config


def test_defaults_run_the_embedded_benchmark():
    config = load_config()
    assert config.data.kind == "embedded"
    assert config.train.proportions == [0.05, 1.0]
    assert "broadcam" in config.cams.methods


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: s3://bucket/camflow\ncams:\n  methods: [cam, gradcam]\n")
    config = load_config(path, {"cluster.workers": 2})
    assert config.output == "s3://bucket/camflow" and config.cams.methods == ("cam", "gradcam")
    assert config.cluster.workers == 2
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_unknown_key_names_the_key_with_a_hint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cams:\n  method: [cam]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'cams\.method'") as info:
        load_config(path)
    assert "camflow config" in info.value.hint


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"cams": {"methods": ["nope"]}}, "unknown CAM method"),
        ({"train": {"proportions": [0]}}, "proportions"),
        ({"data": {"kind": "voc"}}, "data.root is required"),
        ({"cluster": {"gpu_fraction": 2}}, "gpu_fraction"),
    ],
)
def test_bad_values_are_one_clear_line(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cams: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_schema_is_frozen():
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        RunConfig().name = "x"


def test_pretrained_defaults_to_the_source_backbone_for_the_embedded_benchmark_only(tmp_path):
    assert load_config().model.pretrained == "embedded"
    assert "pretrained: embedded" in dump_config(load_config())
    voc = parse_config({"data": {"kind": "voc", "root": str(tmp_path)}})
    assert voc.model.pretrained is False
    assert RunConfig().model.pretrained == "embedded"  # the Python defaults agree with YAML's


@pytest.mark.parametrize("form", [False, True, "imagenet", "embedded", "s3://b/r18.safetensors",
                                  "/weights/r18.pth"])
def test_every_pretrained_form_is_accepted(form):
    assert parse_config({"model": {"pretrained": form}}).model.pretrained == form


def test_an_empty_pretrained_and_bad_sweep_seeds_are_named():
    with pytest.raises(ConfigError, match="model.pretrained"):
        parse_config({"model": {"pretrained": " "}})
    with pytest.raises(ConfigError, match="sweep.seeds"):
        parse_config({"sweep": {"seeds": [1, 1]}})


def test_the_pretrain_section_composes_the_core_recipe():
    from camflow.pretrain import PretrainConfig

    cfg = parse_config({"pretrain": {"epochs": 2, "source_train": 500}})
    recipe = cfg.pretrain.recipe("resnet34")
    assert recipe.backbone == "resnet34" and recipe.epochs == 2 and recipe.source.train == 500
    assert parse_config({}).pretrain.recipe("resnet18") == PretrainConfig()


def test_sections_are_the_library_option_types_with_its_defaults():
    import camflow.cams as cams
    from camflow.options import BoxOptions, CamOptions, MaskOptions
    from camflow.postprocess.boxes import BOX_TAU
    from camflow.postprocess.masks import BG_THRESHOLD

    config = parse_config({"postprocess": {"mask": {"crf": True}, "box": {"method": "pas"}}})
    assert isinstance(config.cams, CamOptions)
    assert isinstance(config.postprocess.mask, MaskOptions) and config.postprocess.mask.crf
    assert isinstance(config.postprocess.box, BoxOptions) and config.postprocess.box.method == "pas"
    assert config.cams.scales == cams.SCALES and config.postprocess.box.tau == BOX_TAU
    assert config.postprocess.mask.calibrated and config.postprocess.mask.threshold == BG_THRESHOLD


def test_allowed_values_come_from_the_registries():
    from camflow.cams import METHODS
    from camflow.models import HEADS, OUTPUT_STRIDES
    from camflow.train.config import SCHEDULES

    assert parse_config({"cams": {"methods": sorted(METHODS)}}).cams.methods == tuple(sorted(METHODS))
    for schedule in SCHEDULES:  # onecycle included
        assert parse_config({"train": {"schedule": schedule}}).train.schedule == schedule
    for head in HEADS:
        assert parse_config({"model": {"head": head}}).model.head == head
    for stride in OUTPUT_STRIDES:
        assert parse_config({"model": {"output_stride": stride}}).model.output_stride == stride
    for bad, match in (({"train": {"schedule": "step"}}, "unknown schedule"),
                       ({"model": {"head": "mlp"}}, "unknown head"),
                       ({"model": {"output_stride": 4}}, "unknown output stride"),
                       ({"postprocess": {"box": {"tau": 0}}}, "tau must lie"),
                       ({"postprocess": {"mask": {"bg_alpha": 0}}}, "bg_alpha"),
                       ({"postprocess": {"bg_threshold": 0.3}}, "unknown key 'postprocess.bg_threshold'")):
        with pytest.raises(ConfigError, match=match):
            parse_config(bad)


def test_the_full_pipeline_config_validates():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "full.yaml")
    assert cfg.cams.split == "train" and cfg.refine.enabled and cfg.segment.enabled
    assert cfg.refined_method == "broadcam" and cfg.data.kind == "embedded"
