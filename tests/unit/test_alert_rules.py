"""Alert rules and dashboards: valid, unit-tested with promtool, and only on metrics we export.

promtool ships in the Debian package ``prometheus``; ``scripts/install-system-deps.sh`` extracts
it into the virtualenv's bin directory (``make test`` runs that script first); one on PATH works too. These tests fail, not skip, without it: an untested
alert is a pager that may never ring.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tierdb import metrics

from .ops_metric_names import (
    ALERT_RULES,
    ROOT,
    SYNTHETIC_NAMES,
    alert_expressions,
    dashboard_expressions,
    dashboard_files,
    metric_names_by_source,
    metric_names_used,
    promql_metric_names,
)

ALERT_TESTS = ROOT / "config" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"

REQUIRED_ALERTS = {
    "HighDLQSize", "LowS3SuccessRate", "S3UploadLagHigh", "LowCacheHitRate", "CompactionStalled",
    "HighQueryLatencyP95", "HighErrorRate", "WriterFenced", "InstanceDown", "ReplicaLagHigh",
}


def _promtool() -> str:
    beside_python = Path(sys.executable).parent / "promtool"  # where install-system-deps.sh puts it
    path = shutil.which("promtool") or (str(beside_python) if beside_python.is_file() else None)
    if path is None:
        pytest.fail(
            "promtool is not installed (Debian package 'prometheus'). "
            "Run scripts/install-system-deps.sh .venv/bin (make test does) and re-run the tests.",
            pytrace=False,
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([_promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} failed (exit {proc.returncode})\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return proc


def test_promtool_check_rules():
    _run("check", "rules", str(ALERT_RULES.relative_to(ROOT)))


def test_promtool_test_rules():
    out = _run("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_check_config():
    _run("check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))


def _alerts() -> dict[str, dict]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_every_required_alert_is_complete():
    alerts = _alerts()
    assert REQUIRED_ALERTS <= alerts.keys()
    docs = (ROOT / "docs" / "operations.md").read_text() if (ROOT / "docs" / "operations.md").exists() else ""
    anchors = {_github_anchor(h) for h in re.findall(r"^#+\s+(.+?)\s*$", docs, re.M)}
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name}: no 'for'"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        ann = rule.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{name}: summary and description required"
        link = f"docs/operations.md#{name.lower()}"
        assert link in ann["description"], f"{name}: description must link {link}"
        assert name.lower() in anchors, f"{name}: docs/operations.md has no heading for #{name.lower()}"


def test_every_alert_has_a_promtool_test():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {
        case["alertname"]
        for group in tests["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for group in tests["tests"]
        for case in group.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert set(_alerts()) <= fired, f"alerts never tested firing: {set(_alerts()) - fired}"
    assert set(_alerts()) <= silent, f"alerts never tested silent: {set(_alerts()) - silent}"


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- static check: every metric used is defined in tierdb.metrics ------------------------------


def test_extractor_finds_names():
    expr = (
        'histogram_quantile(0.95, sum by (collection, le) (rate(a_bucket{op="query", x=~"$c"}[$__rate_interval])))'
        ' > 0.5 unless on (collection) (increase(b_total[30m]) > 0) and c == bool 1 or rec:name:rate5m'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c", "rec:name:rate5m"}
    assert promql_metric_names('up{job="tierdb"} == 0') == {"up"}
    assert promql_metric_names("time() - max by (c) (g > 0)") == {"g"}


def test_alerts_and_dashboards_only_use_defined_metrics():
    defined = metrics.exposed_metric_names() | SYNTHETIC_NAMES
    unknown = {
        where: sorted(names - defined) for where, names in metric_names_by_source().items() if names - defined
    }
    assert not unknown, f"metrics used but not defined in tierdb/metrics.py: {unknown}"
    # Sanity: the check really looked at both files.
    used = metric_names_used()
    assert "storage_dlq_size" in used and "storage_inserts_total" in used
    assert "up" not in used and "up" in metric_names_used(include_synthetic=True)


def test_dashboard_is_complete_json():
    files = dashboard_files()
    assert files, "no dashboard in config/grafana/dashboards"
    for path in files:
        dash = json.loads(path.read_text())
        assert dash.get("uid") and dash.get("title")
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in dash["panels"]:
            if p["type"] != "row":
                assert p.get("targets"), f"{path.name}: panel {p['title']!r} has no query"


def test_dashboard_expressions_are_valid_promql(tmp_path: Path):
    """Every panel query parses: wrapped as recording rules and checked by promtool."""
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*", "$collection": ".*"}
    rules = []
    for i, (where, expr) in enumerate(dashboard_expressions()):
        if "variable" in where:
            continue
        for k, v in subst.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, f"{where}: unhandled Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:check_{i}", "expr": expr})
    assert len(rules) > 10
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run("check", "rules", str(path))


def test_alert_expressions_are_listed():
    names = dict(alert_expressions())
    assert REQUIRED_ALERTS <= names.keys()
