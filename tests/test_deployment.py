"""The deployment files: Kubernetes manifests rendered by kustomize and validated against
the Kubernetes schemas (kubernetes-validate, offline), KEDA's ScaledObject, the Compose
specification; and the promises they make checked against the code (every projector has
a worker, every setting they pass is one the gateway reads and accepts)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from core.settings import Settings
from ops.k8s import generate
from projections.registry import PROJECTORS
from streams.faust_app import app_id

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "ops" / "k8s"
SCHEMAS = Path(__file__).parent / "data" / "schemas"
#: the Kubernetes release the manifests are checked against (the oldest we support)
KUBERNETES = "1.33"
OVERLAYS = ["base", "overlays/production"]


def render(target: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize built in) is needed: `make kubectl` installs it"
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_generated_worker_manifests_are_current() -> None:
    assert generate.main(["--check"]) == 0, "run: python -m ops.k8s.generate"


def test_every_resource_is_valid_kubernetes_or_keda(rendered: list[dict[str, Any]]) -> None:
    keda = json.loads((SCHEMAS / "keda-scaledobject.json").read_text())
    for doc in rendered:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.Draft202012Validator(keda).validate(doc)
            continue
        try:
            # strict: an unknown or misspelt field fails instead of being dropped
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None
        assert doc["metadata"].get("namespace") in (None, "media-gateway") or doc["kind"] == (
            "Namespace"
        ), where


def test_the_validators_refuse_what_a_cluster_refuses() -> None:
    [deploy] = [d for d in render("base") if d["kind"] == "Deployment"][:1]
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, KUBERNETES, strict=True)
    keda = json.loads((SCHEMAS / "keda-scaledobject.json").read_text())
    scaler = next(d for d in render("overlays/production") if d["kind"] == "ScaledObject")
    scaler["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 100  # not a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(keda).validate(scaler)


def test_every_projector_runs_as_a_worker_with_probes_and_a_budget(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = by_kind(rendered, "Deployment")
    budgets = by_kind(rendered, "PodDisruptionBudget")
    for p in PROJECTORS:
        name = generate.k8s_name(p.name)
        spec = deployments[name]["spec"]["template"]["spec"]
        [c] = spec["containers"]
        args = c["args"]
        assert args[:4] == ["mgw", "worker", "--projector", p.name]
        port = int(args[args.index("--health-port") + 1])
        assert {"name": "probes", "containerPort": port} in c["ports"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert "replicas" not in deployments[name]["spec"]  # the autoscaler's to set
        assert (
            budgets[name]["spec"]["selector"]["matchLabels"]
            == (deployments[name]["spec"]["selector"]["matchLabels"])
        )
    api = deployments["mgw-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "mgw-api" in budgets and "mgw-api" in by_kind(rendered, "HorizontalPodAutoscaler")
    service = by_kind(rendered, "Service")["mgw-api"]
    assert service["spec"]["selector"].items() <= (
        deployments["mgw-api"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_production_scales_each_worker_on_its_consumer_group_lag() -> None:
    docs = render("overlays/production")
    scalers = by_kind(docs, "ScaledObject")
    deployments = by_kind(docs, "Deployment")
    assert {generate.k8s_name(p.name) for p in PROJECTORS} == set(scalers)
    for p in PROJECTORS:
        s = scalers[generate.k8s_name(p.name)]["spec"]
        assert s["scaleTargetRef"]["name"] in deployments
        [trigger] = s["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == app_id(p.name)  # the group it commits
        # more consumers than partitions would sit idle
        assert 1 <= s["minReplicaCount"] <= s["maxReplicaCount"] == generate.partitions(p)
    images = {
        c["image"]
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ghcr.io/media-gateway/mgw:0.1.0"}


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert re.fullmatch(r"mgw-config-[a-z0-9]+", config["metadata"]["name"])  # rolls pods
    return dict(config["data"])


def test_the_config_and_secret_files_are_settings_the_gateway_accepts(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    env = _config(rendered)
    deployments = by_kind(rendered, "Deployment")
    # every *_FILE names a file inside the mounted Secret, in every pod
    for d in deployments.values():
        spec = d["spec"]["template"]["spec"]
        secret = next(v for v in spec["volumes"] if v.get("secret"))
        assert secret["secret"]["secretName"] == "mgw-secrets"
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == secret["name"]]
        assert mount["readOnly"] and all(
            v.startswith(mount["mountPath"] + "/") for k, v in env.items() if k.endswith("_FILE")
        )
    # the values read as the gateway reads them: the Secret's files stand in here
    files = {}
    for key, path in env.items():
        if key.endswith("_FILE"):
            local = tmp_path / Path(path).name
            local.write_text(
                {
                    "database-url": "postgresql://mgw:pw@postgres:5432/mgw",
                    "redis-url": "redis://redis:6379/0",
                    "secret-key": "q7dMOnvW6p0Sm0xZPZ6FkV6n3kGmXr2v2Vd2lJh0VbA=",
                }.get(local.name, "a-secret")
                + "\n"
            )
            files[key] = str(local)
    s = Settings.from_env({**env, **files})
    assert s.log_backend == "kafka" and s.vector_store == "qdrant" and not s.run_projectors
    assert s.database_url == "postgresql://mgw:pw@postgres:5432/mgw"
    known = (ROOT / "core" / "settings.py").read_text()
    for key in env:
        bare = key.removesuffix("_FILE")
        if not key.startswith(("OTEL_", "XDG_", "MGW_WORKER_RUNTIME")):
            assert f'"{bare}"' in known, f"{key} is not a setting core/settings.py reads"
    assert env["MGW_WORKER_RUNTIME"] in ("faust", "confluent")


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    services = compose["services"]
    # the API leaves projectors to the workers service, which runs every one of them
    assert services["api"]["environment"]["MGW_RUN_PROJECTORS"] == "false"
    assert services["workers"]["command"][:2] == ["mgw", "worker"]
    assert "--projector" not in services["workers"]["command"]
    # every secret a service names is declared, and read through a *_FILE setting
    for name in ("api", "workers"):
        for secret in services[name]["secrets"]:
            assert secret in compose["secrets"]
            assert f"/run/secrets/{secret}" in services[name]["environment"].values()
    broken = {**compose, "services": {**services, "api": {**services["api"], "ports": 8080}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_every_deployment_the_docs_name_exists() -> None:
    deployments = set(by_kind(render("base"), "Deployment"))
    for doc in ("runbook.md", "deployment.md"):
        text = (ROOT / "docs" / doc).read_text()
        named = set(re.findall(r"deploy/([a-z0-9-]+)(?![a-z0-9<-])", text))
        assert named, doc
        assert named <= deployments, f"{doc} names {sorted(named - deployments)}"
        for pattern in re.findall(r"deploy/(mgw-worker-)<projector>", text):
            assert any(d.startswith(pattern) for d in deployments)
