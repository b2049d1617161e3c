"""Packaging and deployment files: checked by reading them (no Docker engine in the test run)."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.server_process import REPO_ROOT


def test_license_is_an_spdx_string_understood_by_the_required_setuptools() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # a TOML table is deprecated (warns on every install)
    setuptools = next(r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert minimum and int(minimum[1]) >= 77, setuptools  # PEP 639 license expressions


def _builder_stage(dockerfile: str) -> list[str]:
    stage = dockerfile.split(" AS builder", 1)[1].split("\nFROM ", 1)[0]
    # One instruction per entry (continuation lines joined).
    return [line for line in stage.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    steps = _builder_stage((REPO_ROOT / "Dockerfile").read_text())
    copy_source = next(i for i, s in enumerate(steps) if re.match(r"COPY\s+tierdb\b", s))
    copy_pyproject = next(i for i, s in enumerate(steps) if re.match(r"COPY\s+pyproject\.toml\b", s))
    install_deps = next(i for i, s in enumerate(steps) if s.startswith("RUN") and "requirements" in s)
    assert copy_pyproject < install_deps < copy_source
    assert "tierdb" not in steps[copy_pyproject].split()[1:-1]  # the dependency layer sees pyproject.toml only
    install_package = next(i for i, s in enumerate(steps) if s.startswith("RUN") and "install --no-deps ." in s)
    assert install_package > copy_source


def test_compose_pulls_minio_from_quay_not_docker_hub() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.minio.yml").read_text())
    images = {name: service["image"] for name, service in compose["services"].items() if "image" in service}
    minio = {name: image for name, image in images.items() if "minio/" in image}
    assert set(minio) == {"minio", "minio-init"}
    for name, image in minio.items():
        assert image.startswith("quay.io/minio/"), (name, image)  # Docker Hub stopped serving minio/*


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.minio.yml").read_text())


def test_compose_reader_service_scales_and_follows_the_writer() -> None:
    services = _compose()["services"]
    writer, reader = services["tierdb"], services["tierdb-reader"]
    assert reader["image"] == writer["image"]  # the same build as the writer
    # `--scale tierdb-reader=N` works only without a fixed host port, a fixed container name,
    # or a named volume the replicas would share (each needs its own data directory).
    assert "ports" not in reader, reader.get("ports")
    assert "container_name" not in reader
    named_volumes = set(_compose().get("volumes") or {})
    for mount in reader.get("volumes", []):
        source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source")
        assert source not in named_volumes, f"tierdb-reader shares the named volume {source}"
    env = reader["environment"]
    assert env["TIERDB_NODE_ROLE"] == "reader"
    assert env["TIERDB_NODE_WRITER_URL"] == "http://tierdb:8080"
    assert writer["environment"]["TIERDB_NODE_ROLE"] == "writer"
    shared = {k: v for k, v in writer["environment"].items() if k != "TIERDB_NODE_ROLE"}
    assert shared.items() <= env.items(), "reader and writer must use the same bucket, prefix, policy"
    assert "tierdb" not in reader.get("depends_on", {}), "readers must start while the writer is down"


def test_prometheus_scrapes_every_tierdb_node() -> None:
    config = yaml.safe_load((REPO_ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tierdb")
    assert "static_configs" not in job  # a fixed list would miss scaled replicas
    names = {name for sd in job["dns_sd_configs"] for name in sd["names"]}
    assert names == {"tierdb", "tierdb-reader"} <= set(_compose()["services"])
    assert all(sd["port"] == 8080 for sd in job["dns_sd_configs"])
