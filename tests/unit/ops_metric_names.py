"""Which metric names do the alert rules and Grafana dashboards use?

Shared by the static check (tests/unit/test_alert_rules.py: every name is defined in
tierdb.metrics) and the live check (a scrape of a running TierDB after real traffic must contain
every name), so no panel or alert can watch a metric that is never exposed.

    >>> sorted(promql_metric_names('sum by (le) (rate(foo_bucket{op="query"}[5m])) > bar'))
    ['bar', 'foo_bucket']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD_DIR = ROOT / "config" / "grafana" / "dashboards"

#: Series Prometheus makes itself; they are never in a TierDB scrape.
SYNTHETIC_NAMES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
#: Exported only by a node in the reader role (replica lag panels, ReplicaLagHigh): a writer's
#: scrape never has them, so the live check of a writer leaves them out.
READER_ONLY_NAMES = frozenset({"replica_lag_seconds", "replica_applied_wal_seq", "replica_poll_requests_total"})

_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "bool", "offset", "atan2", "inf", "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$__\w+|\$\w+")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by one PromQL expression (functions, keywords, labels removed).

    Names containing ``:`` are recording-rule outputs and are included; callers drop them.
    """
    text = _GRAFANA_VAR.sub("1", expr)        # $__rate_interval, ${collection}: not names
    text = _STRING.sub('""', text)             # label values, regexes
    text = _MATCHERS.sub(" ", text)            # {label="value", ...}
    text = _RANGE.sub(" ", text)               # [5m], [5m:1m]
    text = _GROUPING.sub(" ", text)            # by (job, le), on (collection) ...
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue                           # a function/aggregation call or an operator
        names.add(name)
    return names


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    """Series produced by recording rules in alerts.yml (not in any scrape)."""
    return {rule["record"] for rule in _alert_rules() if "record" in rule}


def alert_expressions() -> Iterator[tuple[str, str]]:
    """(rule name, expr) for every alerting and recording rule."""
    for rule in _alert_rules():
        yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target and templating query of every dashboard."""
    for path in dashboard_files():
        dash = json.loads(path.read_text())

        def walk(node, where):
            if isinstance(node, dict):
                title = node.get("title", where)
                for target in node.get("targets", []) or []:
                    if isinstance(target, dict) and target.get("expr"):
                        yield f"{path.name}: {title}", target["expr"]
                for key, value in node.items():
                    if key != "targets":
                        yield from walk(value, title)
            elif isinstance(node, list):
                for item in node:
                    yield from walk(item, where)

        yield from walk(dash.get("panels", []), path.name)
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            if var.get("type") == "query" and query:
                for name in _LABEL_VALUES.findall(query):
                    yield f"{path.name}: variable {var.get('name')}", name
                if "label_values(" not in query:
                    yield f"{path.name}: variable {var.get('name')}", query


def metric_names_by_source() -> dict[str, set[str]]:
    """{where: names} over alerts.yml and the dashboards, minus the outputs of its recording rules."""
    recorded = recorded_names()
    out: dict[str, set[str]] = {}
    for where, expr in [*(("alerts.yml: " + n, e) for n, e in alert_expressions()), *dashboard_expressions()]:
        names = promql_metric_names(expr) - recorded
        if names:
            out.setdefault(where, set()).update(names)
    return out


def metric_names_used(include_synthetic: bool = False) -> set[str]:
    """Every metric (sample) name the alert rules and dashboards read, as written there.

    Histogram series keep their suffix (``..._bucket``), which is exactly what a scrape shows.
    ``up`` and other series Prometheus makes itself are left out unless ``include_synthetic``.
    """
    names: set[str] = set().union(*metric_names_by_source().values())
    return names if include_synthetic else names - SYNTHETIC_NAMES
