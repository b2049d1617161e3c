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
