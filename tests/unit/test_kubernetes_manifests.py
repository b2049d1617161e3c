"""deploy/kubernetes/: every manifest against the Kubernetes API schema (offline), plus our invariants.

The schema check uses kubernetes-validate (dev extra), which ships the OpenAPI-derived JSON
schemas of each Kubernetes release; the strict variant rejects unknown fields, so a misspelled
key (``readinesProbe``) fails here instead of being silently dropped by the API server. The
invariants are the ones the schema cannot know: one writer, the reader role and its writer URL,
probes on our health routes, non-root with the image's uid, credentials only from the Secret,
the same image everywhere, and a ConfigMap the real settings loader accepts.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tierdb.config import load_settings

from .ops_metric_names import ROOT

K8S_DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
SECRET_TEMPLATE = "secret.example.yaml"
SECRET_NAME = "tierdb-credentials"
#: Oldest release we promise to validate against, and the newest the package ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
#: Env var names whose value is a credential: they may only come from a Secret.
SECRET_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p != KUSTOMIZATION)


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _resources() -> list[dict]:
    return [doc for path in _manifest_files() for doc in _docs(path)]


def _one(kind: str, name: str) -> dict:
    found = [r for r in _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _workloads() -> dict[str, dict]:
    return {"writer": _one("StatefulSet", "tierdb-writer"), "reader": _one("Deployment", "tierdb-reader")}


def _container(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["tierdb"]
    return containers[0]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _dockerfile_env() -> dict[str, str]:
    """The ENV pairs of the Dockerfile's runtime stage (continuation lines joined)."""
    runtime = (ROOT / "Dockerfile").read_text().split(" AS runtime", 1)[1].replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def _dockerfile_uid() -> int:
    match = re.search(r"useradd\b[^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert match, "Dockerfile creates no user with a fixed uid"
    return int(match[1])


def _schema_errors(resource: dict, version: str) -> str | None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.absolute_path)) or '<root>'}: {exc.message}"
    return None


# --- the Kubernetes schema ----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = _docs(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        error = _schema_errors(doc, version)
        assert error is None, f"{where} is invalid for Kubernetes {version}: {error}"


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.__setitem__("readinesProbe", c.pop("readinessProbe")), id="misspelled-field"),
        pytest.param(lambda c: c["ports"][0].__setitem__("containerPort", "eighty"), id="wrong-type"),
        pytest.param(lambda c: c["livenessProbe"]["httpGet"].pop("port"), id="missing-required"),
    ],
)
def test_schema_check_rejects_a_broken_manifest(breakage) -> None:
    """The check above can fail: the same writer with one mistake is rejected."""
    writer = copy.deepcopy(_workloads()["writer"])
    assert _schema_errors(writer, K8S_VERSIONS[0]) is None
    breakage(_container(writer))
    assert _schema_errors(writer, K8S_VERSIONS[0]) is not None


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {p.name for p in _manifest_files()} - {SECRET_TEMPLATE}
    # The template must never be applied: it would overwrite the real credentials.
    assert set(listed) == expected, f"listed {sorted(listed)}, files {sorted(expected)}"
    assert "namespace" not in kustomization  # namespace-agnostic: the operator picks it
    for resource in _resources():
        assert "namespace" not in resource["metadata"], resource["metadata"]["name"]


# --- our invariants -----------------------------------------------------------------------------


def test_exactly_one_writer_and_readers_scaled_by_the_hpa() -> None:
    writer, reader = _workloads()["writer"], _workloads()["reader"]
    assert writer["spec"]["replicas"] == 1  # a second writer would only be fenced
    assert "replicas" not in reader["spec"], "the HPA owns the reader count; apply would reset it"
    hpa = _one("HorizontalPodAutoscaler", "tierdb-reader")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tierdb-reader"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdb = _one("PodDisruptionBudget", "tierdb-reader")
    assert pdb["spec"]["selector"]["matchLabels"] == reader["spec"]["selector"]["matchLabels"]
    assert not [r for r in _resources() if r["kind"] == "PodDisruptionBudget"
                and r["spec"]["selector"]["matchLabels"] == writer["spec"]["selector"]["matchLabels"]]


def test_roles_and_writer_url() -> None:
    writer_env = _env(_container(_workloads()["writer"]))
    reader_env = _env(_container(_workloads()["reader"]))
    assert writer_env["TIERDB_NODE_ROLE"]["value"] == "writer"
    assert "TIERDB_NODE_WRITER_URL" not in writer_env
    assert reader_env["TIERDB_NODE_ROLE"]["value"] == "reader"
    service = _one("Service", "tierdb-writer")
    port = service["spec"]["ports"][0]["port"]
    assert reader_env["TIERDB_NODE_WRITER_URL"]["value"] == f"http://tierdb-writer:{port}"


def test_services_route_writes_to_the_writer_and_reads_to_the_readers() -> None:
    for service_name, role in (("tierdb-writer", "writer"), ("tierdb-writer-pods", "writer"), ("tierdb-read", "reader")):
        service = _one("Service", service_name)
        workload = _workloads()[role]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = service["spec"]["selector"]
        assert selector.items() <= pod_labels.items(), f"{service_name} does not select the {role} pods"
        other = _workloads()["reader" if role == "writer" else "writer"]
        assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items(), (
            f"{service_name} also selects the other role"
        )
        port_names = {p["name"] for p in _container(workload)["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    assert _workloads()["writer"]["spec"]["serviceName"] == "tierdb-writer-pods"
    assert _one("Service", "tierdb-writer-pods")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_probes_use_the_health_routes_on_the_image_port(role: str) -> None:
    container = _container(_workloads()[role])
    image_port = int(_dockerfile_env()["TIERDB_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": image_port}
    expected = {"livenessProbe": "/health/live", "readinessProbe": "/health/ready", "startupProbe": "/health/live"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{role} {probe}"
        assert ports.get(get["port"], get["port"]) == image_port, f"{role} {probe} port"


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_runs_as_the_images_non_root_user_with_a_read_only_root(role: str) -> None:
    workload = _workloads()[role]
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    uid = _dockerfile_uid()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["fsGroup"] == uid
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # With a read-only root, every directory TierDB writes to must be a volume.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    image_env = _dockerfile_env()
    for path in (image_env["TIERDB_DATA_DIR"], image_env["TIERDB_CACHE_DIR"], "/tmp"):
        assert path in mounts and not mounts[path].get("readOnly"), f"{role}: {path} is not a writable volume"
    for name in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][name].keys(), f"{role}: resources.{name}"
    assert pod["terminationGracePeriodSeconds"] > 30  # server.shutdown_timeout_secs


def test_writer_keeps_data_and_cache_on_persistent_volumes_readers_on_empty_dirs() -> None:
    writer, reader = _workloads()["writer"], _workloads()["reader"]
    image_env = _dockerfile_env()
    claims = {t["metadata"]["name"] for t in writer["spec"]["volumeClaimTemplates"]}
    writer_mounts = {m["mountPath"]: m["name"] for m in _container(writer)["volumeMounts"]}
    for path in (image_env["TIERDB_DATA_DIR"], image_env["TIERDB_CACHE_DIR"]):
        assert writer_mounts[path] in claims, f"writer: {path} must be on a PersistentVolumeClaim"
    reader_volumes = {v["name"]: v for v in reader["spec"]["template"]["spec"]["volumes"]}
    for mount in _container(reader)["volumeMounts"]:
        volume = reader_volumes[mount["name"]]
        assert "emptyDir" in volume or "configMap" in volume, f"reader volume {mount['name']} is not disposable"


def test_same_image_everywhere_and_it_is_this_version_of_the_dockerfile_build() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {_container(w)["image"] for w in _workloads().values()}
    assert images == {f"tierdb:{version}"}, images
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert [i["name"] for i in kustomization["images"]] == ["tierdb"]
    assert kustomization["images"][0]["newTag"] == version
    # The command is the image's (Dockerfile CMD).
    cmd = re.search(r'^CMD (\[.*\])$', (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd and all(_container(w).get("args") == yaml.safe_load(cmd[1]) for w in _workloads().values())


def test_credentials_come_only_from_the_secret() -> None:
    secret_keys = set(_docs(K8S_DIR / SECRET_TEMPLATE)[0]["stringData"])
    for role, workload in _workloads().items():
        env = _env(_container(workload))
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TIERDB_ADMIN_TOKEN"} <= env.keys(), role
        for name, entry in env.items():
            if SECRET_ENV.search(name):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                assert "value" not in entry and ref, f"{role}: {name} must come from a secretKeyRef"
                assert ref["name"] == SECRET_NAME and ref["key"] in secret_keys, f"{role}: {name}"
        assert "envFrom" not in _container(workload)
    for value in _docs(K8S_DIR / SECRET_TEMPLATE)[0]["stringData"].values():
        assert value.startswith("REPLACE-ME"), "the Secret template must hold placeholders only"
    # Nothing secret-looking in the ConfigMap (settings file or extra keys).
    config = _one("ConfigMap", "tierdb-config")["data"]
    settings = tomllib.loads(config["tierdb.toml"])
    flat = {f"{section}.{key}" for section, table in settings.items() for key in table}
    assert not {key for key in flat if SECRET_ENV.search(key.split(".", 1)[1])}, flat
    assert set(config) == {"tierdb.toml"}


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_configmap_loads_with_the_real_settings_loader(role: str, tmp_path: Path) -> None:
    """What the pod starts with: the ConfigMap file under the image's env plus the pod's env."""
    container = _container(_workloads()[role])
    config_file = tmp_path / "tierdb.toml"
    config_file.write_text(_one("ConfigMap", "tierdb-config")["data"]["tierdb.toml"])
    env = dict(_dockerfile_env())
    for name, entry in _env(container).items():
        env[name] = entry.get("value", "placeholder-from-secret")
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    assert env.pop("TIERDB_CONFIG") == f"{mount}/{config_file.name}"
    settings = load_settings(str(config_file), env=env)
    assert settings.storage.tiering_policy in {"s3_only", "memory_s3"}  # readers need S3 to follow
    assert settings.s3.bucket
    assert settings.server.host == "0.0.0.0"
    assert settings.storage.data_dir == env["TIERDB_DATA_DIR"]
