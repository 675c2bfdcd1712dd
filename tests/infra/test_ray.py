"""infra/ray/cluster.yaml: Ray's schema and checks, EC2's RunInstances shape, and what camflow needs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.infra.common import drop, put, rename
from tests.infra.validators import ec2_node_config_problems, kuberay_problems, ray_cluster_problems


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_ray_cluster_yaml(ray_cfg):
    assert ray_cluster_problems(ray_cfg) == []


def test_ray_cluster_yaml_validates_against_rays_schema(ray_cfg):
    jsonschema = pytest.importorskip("jsonschema")

    jsonschema.validate(ray_cfg, _ray_schema())
    # And Ray's own checks (the schema plus node-type consistency), after its default filling.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(ray_cfg)))


def test_node_configs_are_valid_ec2_run_instances_calls(ray_cfg):
    """Ray's schema leaves node_config open: botocore's model of RunInstances closes it."""
    assert ray_cfg["available_node_types"]
    assert ec2_node_config_problems(ray_cfg) == []


# ---------------------------------------------------------------------------------------------
# negative controls


@pytest.mark.parametrize("key", ["head_node_type", "available_node_types.gpu-worker",
                                 "docker.run_options", "provider"])
def test_ray_validator_catches(ray_cfg, key):
    assert ray_cluster_problems(drop(ray_cfg, key))


def test_validators_catch_a_head_that_takes_work(ray_cfg, kuberay_doc):
    working = copy.deepcopy(ray_cfg)
    working["available_node_types"]["head"]["resources"] = {}
    assert any("head advertises CPUs" in p for p in ray_cluster_problems(working))
    assert any("num-cpus" in p for p in kuberay_problems(
        drop(kuberay_doc, "spec.headGroupSpec.rayStartParams.num-cpus")))


def test_ray_schema_catches_unknown_key(ray_cfg):
    jsonschema = pytest.importorskip("jsonschema")

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ray_cfg, "head_node": {"typo": 1}, "max_worker": 3}, _ray_schema())


def test_ec2_validator_catches_a_typod_field(ray_cfg):
    node = "available_node_types.gpu-worker.node_config"
    typo = rename(ray_cfg, f"{node}.InstanceType", "InstanceTyp")
    # Ray's own schema does not see it: node_config is provider-specific and left open.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(typo)))
    problems = ec2_node_config_problems(typo)
    assert len(problems) == 1 and "InstanceTyp" in problems[0] and "gpu-worker" in problems[0]
    nested = rename(ray_cfg, f"{node}.IamInstanceProfile.Arn", "ARN")
    assert any("ARN" in p for p in ec2_node_config_problems(nested))


def test_ec2_validator_catches_a_wrongly_typed_field(ray_cfg):
    size = "available_node_types.head.node_config.BlockDeviceMappings.0.Ebs.VolumeSize"
    problems = ec2_node_config_problems(put(ray_cfg, size, "200GiB"))
    assert len(problems) == 1 and "VolumeSize" in problems[0] and "head" in problems[0]
    mappings = "available_node_types.gpu-worker.node_config.BlockDeviceMappings"
    assert ec2_node_config_problems(put(ray_cfg, mappings, {"DeviceName": "/dev/sda1"}))


def test_ec2_validator_takes_rays_own_keys(ray_cfg):
    """SubnetIds is Ray's (it picks one SubnetId); MinCount/MaxCount are Ray's to add."""
    subnets = put(ray_cfg, "available_node_types.head.node_config.SubnetIds", ["subnet-0abc"])
    assert ec2_node_config_problems(subnets) == []
