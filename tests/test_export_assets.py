"""Deployment assets in export/: models.config generator, batching file, compose, Kubernetes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from mmkeras.serving.deploy import (
    BATCHING_PARAMETERS,
    ModelEntry,
    batching_parameters,
    models_config,
)

EXPORT = Path(__file__).parents[1] / "export"


def _parse(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_models_config_for_several_models_parses_as_tf_serving_config():
    entries = [ModelEntry.parse("machine=/models/machine,policy=latest:2,label=stable:3"),
               ModelEntry.parse("avdigits=/models/avdigits,policy=specific:1,2,label=canary:2"),
               ModelEntry.parse("mobifall=/models/mobifall,policy=all")]
    configs = _parse(models_config(entries)).model_config_list.config
    assert [c.name for c in configs] == ["machine", "avdigits", "mobifall"]
    assert configs[0].model_version_policy.latest.num_versions == 2
    assert dict(configs[0].version_labels) == {"stable": 3}
    assert list(configs[1].model_version_policy.specific.versions) == [1, 2]
    assert configs[2].model_version_policy.WhichOneof("policy_choice") == "all"
    assert all(c.model_platform == "tensorflow" for c in configs)


@pytest.mark.parametrize("entries, message", [
    ([], "at least one"),
    ([ModelEntry("a", "/m/a"), ModelEntry("a", "/m/b")], "unique"),
    ([ModelEntry("a", "/m/a", "newest")], "version policy 'newest'"),
    ([ModelEntry("a", "/m/a", "specific:1", {"stable": 2})], "does not serve"),
])
def test_models_config_refuses_bad_entries(entries, message):
    with pytest.raises(ValueError, match=message):
        models_config(entries)


def test_committed_files_are_valid():
    config = _parse((EXPORT / "models.config").read_text()).model_config_list.config
    assert [c.name for c in config] == ["mmkeras_model"]
    assert config[0].base_path == "/models/mmkeras_model"
    batching = (EXPORT / "batching_parameters.txt").read_text()
    assert batching == batching_parameters()
    assert set(BATCHING_PARAMETERS) == {line.split()[0] for line in batching.splitlines()}

    compose = yaml.safe_load((EXPORT / "docker-compose.yml").read_text())
    service = compose["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving:")
    assert {"8500:8500", "8501:8501"} <= set(service["ports"])
    assert "--model_config_file=/config/models.config" in service["command"]
    assert "--batching_parameters_file=/config/batching_parameters.txt" in service["command"]
    assert any(v.endswith(":/models:ro") for v in service["volumes"])

    deployment, service = yaml.safe_load_all((EXPORT / "k8s.yaml").read_text())
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v1/models/mmkeras_model", "port": "rest"}
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}


def test_generator_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(EXPORT.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = str(EXPORT / "make_models_config.py")
    proc = subprocess.run([sys.executable, script, "--model", "m=/models/m,policy=latest:3",
                           "--batching", str(tmp_path / "b.txt"), "--max-batch-size", "16"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _parse(proc.stdout).model_config_list.config[0].model_version_policy.latest \
        .num_versions == 3
    assert "max_batch_size { value: 16 }" in (tmp_path / "b.txt").read_text()
    bad = subprocess.run([sys.executable, script, "--model", "m=/models/m,policy=newest"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "version policy 'newest'" in bad.stderr
