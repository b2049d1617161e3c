"""scripts/install-system-deps.sh with stand-ins for apt-get and sudo on PATH: it waits for an apt
lock held by another process, gets promtool from the package without installing it (no
Prometheus service), and is idempotent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server_process import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "install-system-deps.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian/Ubuntu)")

# apt-get stand-in: `update` fails with a lock error the first LOCKED_UPDATES times (another apt
# holds the lock), `download` works only after a successful update (no package lists before).
FAKE_APT_GET = """#!/bin/sh
echo "$*" >> "$FAKE/calls"
case "$*" in
  *" update"*)
    n=$(cat "$FAKE/update_attempts" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$FAKE/update_attempts"
    if [ "$n" -le "$LOCKED_UPDATES" ]; then
      echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100
    fi
    touch "$FAKE/lists"; exit 0 ;;
  "download -q prometheus")
    [ -e "$FAKE/lists" ] || { echo "E: Unable to locate package prometheus" >&2; exit 100; }
    cp "$FAKE/prometheus_2.42.0_amd64.deb" . ; exit 0 ;;
  *) echo "unexpected apt-get $*" >&2; exit 1 ;;
esac
"""


def _fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path]:
    fake = tmp_path / "fake"
    bin_dir = fake / "bin"
    bin_dir.mkdir(parents=True)
    package = fake / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: prometheus\nVersion: 2.42.0\nArchitecture: amd64\nMaintainer: t <t@example.com>\nDescription: t\n"
    )
    (package / "usr" / "bin").mkdir(parents=True)
    promtool = package / "usr" / "bin" / "promtool"
    promtool.write_text("#!/bin/sh\necho 'promtool, version 2.42.0 (stand-in)'\n")
    promtool.chmod(0o755)
    (package / "lib" / "systemd" / "system").mkdir(parents=True)
    (package / "lib" / "systemd" / "system" / "prometheus.service").write_text("[Service]\n")
    subprocess.run(["dpkg-deb", "--build", str(package), str(fake / "prometheus_2.42.0_amd64.deb")],
                   check=True, capture_output=True)
    for name, text in (("apt-get", FAKE_APT_GET), ("sudo", '#!/bin/sh\nexec "$@"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE": str(fake),
           "LOCKED_UPDATES": "2", "APT_LOCK_RETRY_SECS": "0.2"}
    return env, fake


def test_waits_for_the_apt_lock_and_extracts_promtool_without_installing_a_service(tmp_path) -> None:
    env, fake = _fake_apt(tmp_path)
    target = tmp_path / "venv" / "bin"
    run = subprocess.run(["bash", str(SCRIPT), "--force", str(target)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "waiting" in run.stderr  # the lock was waited for, not a failure
    assert (fake / "update_attempts").read_text().strip() == "3"
    output = subprocess.run([str(target / "promtool"), "--version"], capture_output=True, text=True)
    assert "stand-in" in output.stdout
    calls = (fake / "calls").read_text()
    assert " install" not in calls  # never `apt-get install prometheus`: no server, no port 9090
    assert "DPkg::Lock::Timeout=" in calls

    again = subprocess.run(["bash", str(SCRIPT), "--force", str(target)], env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "already installed" in again.stderr
    assert (fake / "calls").read_text() == calls  # idempotent: apt was not touched again


def test_gives_up_with_a_clear_error_when_the_lock_is_never_released(tmp_path) -> None:
    env, fake = _fake_apt(tmp_path)
    env.update(LOCKED_UPDATES="1000", APT_LOCK_TIMEOUT="1")
    run = subprocess.run(["bash", str(SCRIPT), "--force", str(tmp_path / "bin")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert "Could not get lock" in run.stderr and "apt-get update failed" in run.stderr
    assert not (tmp_path / "bin" / "promtool").exists()
