"""Settings as frozen msgspec Structs, and the loader that builds them.

Precedence: defaults < TOML file (``config/tierdb.toml`` or ``TIERDB_CONFIG``) < ``TIERDB_*``
environment variables < CLI flags.  ``load_settings`` validates every value against its field
type and a table of semantic rules; an invalid value raises ``ConfigError`` naming the key and
where the value came from.  ``redacted`` is the only form in which settings may be logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from .errors import TierDBError
from .models import DEFAULT_MAX_NESTING_DEPTH
from .tiering import DEFAULT_POLICY, POLICY_NAMES, normalize_policy, policy_of

MiB = 1024 * 1024
MIN_TOKEN_LENGTH = 16


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * MiB
    max_batch: int = 10_000          # documents per upsert / ids per get or delete
    max_k: int = 1_000
    max_query_vectors: int = 1_000
    max_dimension: int = 4_096       # largest vector dimension a collection may declare (hard cap 4096)
    max_nesting_depth: int = DEFAULT_MAX_NESTING_DEPTH  # objects/arrays in one metadata value or filter
    shutdown_timeout_secs: float = 30.0
    body_read_timeout_secs: float = 60.0   # a request body must arrive within this (else 408)
    keep_alive_timeout_secs: float = 5.0   # idle connections (also new, silent ones) are closed after this
    max_connections: int = 1_000           # concurrent connections; beyond it requests get 503


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    data_dir: str = "./data"
    tiering_policy: str = DEFAULT_POLICY   # memory | memory_s3 | s3_only (aliases Memory, MemoryS3, S3Only)
    fsync: bool = True               # fsync the WAL before acknowledging (never disable in production)


class IndexSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    threshold: int = 10_000          # segments with fewer rows are searched by brute force
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128
    build_threads: int = 0           # 0 = all cores


class CompactionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_secs: float = 5.0       # how often the worker checks thresholds
    threshold_ops: int = 10_000      # flush the memtable after this many documents written or deleted
    threshold_bytes: int = 100 * MiB # ... or this many bytes
    max_age_secs: float = 300.0      # ... or when its oldest write is this old
    merge_min_segments: int = 4      # merge when this many segments of similar size exist
    merge_max_rows: int = 2_000_000  # never merge into a segment larger than this
    # A merge grows the largest segment's index (keeping its dead rows as tombstones) and
    # rebuilds from scratch only once this fraction of its rows is dead.
    rebuild_dead_fraction: float = 0.2
    # A flush big enough for an index grows the largest indexed segment instead of writing its
    # own, while that segment has at most this many rows per flushed row (0 = never).
    flush_grow_ratio: float = 64.0


class S3Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str = ""               # empty = AWS default endpoint
    bucket: str = ""
    prefix: str = "tierdb"
    region: str = "us-east-1"
    path_style: bool = True          # MinIO / SeaweedFS need path-style addressing
    connect_timeout_secs: float = 5.0
    read_timeout_secs: float = 30.0
    # Objects larger than this (partitioned segments) are uploaded in parts of this size, one
    # part in RAM at a time.
    multipart_part_bytes: int = 64 * MiB


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_retries: int = 5
    base_backoff_secs: float = 1.0
    max_backoff_secs: float = 64.0


class UploaderSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_secs: float = 1.0
    # memory_s3: after a failed upload run the next one waits a capped exponential backoff with
    # full jitter (never gives up); a permanent failure is re-probed on the same schedule.
    backoff_base_secs: float = 1.0
    backoff_max_secs: float = 30.0
    group_commit_ms: float = 15.0    # s3_only: concurrent writers share one WAL PUT in this window


class CacheSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dir: str = ""                    # empty = {data_dir}/cache
    disk_bytes: int = 2 * 1024 * MiB
    ram_bytes: int = 512 * MiB


class PartitionsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Partitioned (IVF) segments, the segment layout of s3_only (engine/partitioned.py)."""

    rows_per_partition: int = 1000   # one partition ~ one range GET (~1.5 MB at 384 dimensions)
    nprobe: int = 96                 # partitions probed per query in a one-segment collection (scaled up with segments)
    rerank: int = 320                # candidates (by their scan codes) re-ranked with exact vectors
    max_segment_rows: int = 1_000_000  # merges stop here (a merge holds its rows' ids and metadata in RAM)
    build_memory_bytes: int = 256 * MiB  # working set of one segment build (k-means, assignment)


class GcSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_secs: float = 60.0
    keep_manifests: int = 10
    grace_secs: float = 600.0


class SecuritySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    admin_token: str = ""            # TIERDB_ADMIN_TOKEN; prefer the env var over the file
    api_keys: list[str] = []
    protect_status: bool = False     # /health and /metrics need an API key or the admin token too

    def __repr__(self) -> str:
        token = "***" if self.admin_token else "''"
        return (
            f"SecuritySettings(admin_token={token}, api_keys=[{len(self.api_keys)} redacted], "
            f"protect_status={self.protect_status})"
        )


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: str = "INFO"
    format: str = "text"             # text | json
    file: str = ""                   # also write to this file (rotated); empty = stderr only
    file_max_bytes: int = 100 * MiB  # rotate the log file at this size
    file_backups: int = 5            # rotated files kept
    access_log: bool = True          # one line per HTTP request (method, route, status, duration)


class NodeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str = "writer"             # writer | reader (TIERDB_NODE_ROLE, serve --role)
    writer_url: str = ""             # where writes go; named in a reader's read_only errors
    # writer: claim every s3_only collection from the previous writer at start (handover;
    # TIERDB_NODE_TAKEOVER, serve --takeover); the previous writer is fenced at its next write
    takeover: bool = False
    # reader: poll the next WAL object/manifest at once while objects arrive, every poll_min_secs
    # for busy_window_secs after the last one, then back off by doubling to poll_max_secs.
    poll_min_secs: float = 0.1
    poll_max_secs: float = 25.0
    busy_window_secs: float = 10.0
    discover_interval_secs: float = 300.0  # reader: LIST the prefix for new/dropped collections


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    node: NodeSettings = NodeSettings()
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    index: IndexSettings = IndexSettings()
    compaction: CompactionSettings = CompactionSettings()
    s3: S3Settings = S3Settings()
    retry: RetrySettings = RetrySettings()
    uploader: UploaderSettings = UploaderSettings()
    cache: CacheSettings = CacheSettings()
    partitions: PartitionsSettings = PartitionsSettings()
    gc: GcSettings = GcSettings()
    security: SecuritySettings = SecuritySettings()
    log: LogSettings = LogSettings()


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

DEFAULT_CONFIG_PATH = "config/tierdb.toml"
ENV_PREFIX = "TIERDB_"
ENV_CONFIG = "TIERDB_CONFIG"

# Short names for the settings operators touch most; TIERDB_<SECTION>_<KEY> works for every key
# and wins when both spellings are set.
ENV_SHORTCUTS: dict[str, str] = {
    "TIERDB_HOST": "server.host",
    "TIERDB_PORT": "server.port",
    "TIERDB_DATA_DIR": "storage.data_dir",
    "TIERDB_TIERING_POLICY": "storage.tiering_policy",
    "TIERDB_ADMIN_TOKEN": "security.admin_token",
    "TIERDB_LOG_FORMAT": "log.format",
    "TIERDB_LOG_LEVEL": "log.level",
}

# Settings never shown by ``redacted``: by name, so a secret added to any section later is covered.
_SECRET_WORDS = ("token", "secret", "password", "api_key", "access_key", "credential")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("text", "json")
NODE_ROLES = ("writer", "reader")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the source."""


SECTION_TYPES: dict[str, type[msgspec.Struct]] = {f.name: f.type for f in msgspec.structs.fields(Settings)}

# Every setting as ``section.key`` -> its annotated type.
FIELD_TYPES: dict[str, Any] = {
    f"{section}.{field.name}": field.type
    for section, struct in SECTION_TYPES.items()
    for field in msgspec.structs.fields(struct)
}


def _flatten(settings: Settings) -> dict[str, Any]:
    nested = msgspec.to_builtins(settings)
    return {f"{section}.{key}": value for section, table in nested.items() for key, value in table.items()}


def _unflatten(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return nested


def _explain(exc: msgspec.ValidationError, value: Any) -> str:
    """'Expected `int`, got `str`' -> "expected int, got 'abc'": msgspec knows the type, we the value."""
    text = str(exc)
    match = re.match(r"^Expected `(?P<expected>[^`]+)`, got `[^`]+`(?: - at `\$(?P<at>[^`]*)`)?$", text)
    if match:
        where = f" at {match['at']}" if match["at"] else ""
        return f"expected {match['expected']}{where}, got {value!r}"
    return f"{text.replace('`', '')}, got {value!r}"


def _convert(key: str, value: Any, source: str, *, from_text: bool) -> Any:
    """Coerce one value to its field type; text (env, CLI strings) is parsed leniently."""
    tp = FIELD_TYPES[key]
    if from_text and isinstance(value, str) and tp == list[str]:
        value = [item.strip() for item in value.split(",") if item.strip()]
    try:
        return msgspec.convert(value, tp, strict=not from_text)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{key}: {_explain(exc, value)} ({source})") from None


class _Layers:
    """Values by dotted key plus where each one came from, merged in precedence order."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = _flatten(Settings())
        self.sources: dict[str, str] = {key: "default" for key in self.values}

    def set(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source

    def fail(self, key: str, requirement: str) -> ConfigError:
        return ConfigError(f"{key}: {requirement}, got {self.values[key]!r} ({self.sources[key]})")


# -- sources ----------------------------------------------------------------------------------


def _config_path(config_path: str | None, env: Mapping[str, str]) -> tuple[Path, str] | None:
    if config_path:
        return Path(config_path), "--config"
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]), f"env {ENV_CONFIG}"
    default = Path(DEFAULT_CONFIG_PATH)
    return (default, "default location") if default.is_file() else None


def _read_toml(path: Path, origin: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found (from {origin})") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read: {exc.strerror} (from {origin})"
        ) from None
    try:
        data = msgspec.toml.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return data


def _apply_file(layers: _Layers, path: Path, origin: str) -> None:
    source = f"from file {path}"
    for section, table in _read_toml(path, origin).items():
        if section not in SECTION_TYPES:
            raise ConfigError(
                f"unknown section [{section}] ({source}); known sections: {', '.join(SECTION_TYPES)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a table ([{section}]), got {table!r} ({source})")
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted not in FIELD_TYPES:
                raise ConfigError(f"unknown setting {dotted} ({source})")
            layers.set(dotted, _convert(dotted, value, source, from_text=False), source)


def _env_key(name: str) -> str | None:
    """TIERDB_COMPACTION_THRESHOLD_OPS -> compaction.threshold_ops; None if no section matches."""
    rest = name[len(ENV_PREFIX):].lower()
    for section in SECTION_TYPES:
        if rest.startswith(section + "_"):
            return f"{section}.{rest[len(section) + 1:]}"
    return None


def _apply_env(layers: _Layers, env: Mapping[str, str]) -> None:
    for name, key in ENV_SHORTCUTS.items():
        if name in env:
            layers.set(key, _convert(key, env[name], f"from env {name}", from_text=True), f"from env {name}")
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in ENV_SHORTCUTS or name == ENV_CONFIG:
            continue
        key = _env_key(name)
        if key is None:
            continue  # not a settings variable (no known section): leave it to other tools
        source = f"from env {name}"
        if key not in FIELD_TYPES:
            raise ConfigError(f"unknown setting {key} ({source})")
        layers.set(key, _convert(key, env[name], source, from_text=True), source)


def _apply_overrides(layers: _Layers, overrides: Mapping[str, Any]) -> None:
    source = "from command line"
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in FIELD_TYPES:
            raise ConfigError(f"unknown setting {key} ({source})")
        layers.set(key, _convert(key, value, source, from_text=isinstance(value, str)), source)


# -- semantic rules ---------------------------------------------------------------------------


def _positive(value: Any) -> bool:
    return value > 0


def _non_negative(value: Any) -> bool:
    return value >= 0


# (key, predicate, requirement): checked after all sources are merged.
_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("server.host", bool, "must not be empty"),
    ("server.port", lambda v: 1 <= v <= 65535, "must be between 1 and 65535"),
    ("server.max_body_bytes", _positive, "must be positive"),
    ("server.max_batch", _positive, "must be positive"),
    ("server.max_k", _positive, "must be positive"),
    ("partitions.rows_per_partition", _positive, "must be positive"),
    ("partitions.nprobe", _positive, "must be positive"),
    ("partitions.rerank", _positive, "must be positive"),
    ("partitions.max_segment_rows", _positive, "must be positive"),
    ("partitions.build_memory_bytes", _positive, "must be positive"),
    ("server.max_query_vectors", _positive, "must be positive"),
    ("server.max_dimension", lambda v: 1 <= v <= 4096, "must be between 1 and 4096"),
    # Stored metadata is decoded, compared and encoded recursively (Python recursion limit 1000).
    ("server.max_nesting_depth", lambda v: 1 <= v <= 256, "must be between 1 and 256"),
    ("server.shutdown_timeout_secs", _non_negative, "must not be negative"),
    ("server.body_read_timeout_secs", _positive, "must be positive"),
    ("server.keep_alive_timeout_secs", _positive, "must be positive"),
    ("server.max_connections", _positive, "must be positive"),
    ("storage.data_dir", bool, "must not be empty"),
    ("index.threshold", _non_negative, "must not be negative"),
    ("index.m", lambda v: 2 <= v <= 128, "must be between 2 and 128"),
    ("index.ef_construction", lambda v: 1 <= v <= 4096, "must be between 1 and 4096"),
    ("index.ef_search", lambda v: 1 <= v <= 4096, "must be between 1 and 4096"),
    ("index.build_threads", _non_negative, "must not be negative (0 = all cores)"),
    ("compaction.interval_secs", _positive, "must be positive"),
    ("compaction.threshold_ops", _positive, "must be positive"),
    ("compaction.threshold_bytes", _positive, "must be positive"),
    ("compaction.max_age_secs", _positive, "must be positive"),
    ("compaction.merge_min_segments", lambda v: v >= 2, "must be at least 2"),
    ("compaction.merge_max_rows", _positive, "must be positive"),
    ("compaction.rebuild_dead_fraction", lambda v: 0 <= v < 1, "must be at least 0 and below 1"),
    ("compaction.flush_grow_ratio", _non_negative, "must not be negative (0 = flushes never grow a segment)"),
    ("s3.connect_timeout_secs", _positive, "must be positive"),
    ("s3.read_timeout_secs", _positive, "must be positive"),
    ("s3.multipart_part_bytes", lambda v: 5 * MiB <= v <= 5 * 1024 * MiB, "must be 5 MiB to 5 GiB (S3's part limits)"),
    ("retry.max_retries", _non_negative, "must not be negative"),
    ("retry.base_backoff_secs", _positive, "must be positive"),
    ("retry.max_backoff_secs", _positive, "must be positive"),
    ("uploader.interval_secs", _positive, "must be positive"),
    ("uploader.group_commit_ms", _non_negative, "must not be negative"),
    ("uploader.backoff_base_secs", _non_negative, "must not be negative"),
    ("uploader.backoff_max_secs", _positive, "must be positive"),
    ("cache.disk_bytes", _positive, "must be positive"),
    ("cache.ram_bytes", _positive, "must be positive"),
    ("gc.interval_secs", _positive, "must be positive"),
    ("gc.keep_manifests", lambda v: v >= 1, "must be at least 1"),
    ("gc.grace_secs", _non_negative, "must not be negative"),
    ("node.role", lambda v: v in NODE_ROLES, "must be one of " + ", ".join(NODE_ROLES)),
    ("node.poll_min_secs", _positive, "must be positive"),
    ("node.poll_max_secs", _positive, "must be positive"),
    ("node.busy_window_secs", _non_negative, "must not be negative"),
    ("node.discover_interval_secs", _positive, "must be positive"),
    ("log.file_max_bytes", _positive, "must be positive"),
    ("log.file_backups", _non_negative, "must not be negative"),
)


def _normalize(layers: _Layers) -> None:
    """Canonical spellings: policy aliases, log level case, log format case."""
    values = layers.values
    try:
        values["storage.tiering_policy"] = normalize_policy(values["storage.tiering_policy"])
    except TierDBError:
        choices = ", ".join(POLICY_NAMES)
        requirement = f"must be one of {choices} (or Memory, MemoryS3, S3Only)"
        raise layers.fail("storage.tiering_policy", requirement) from None
    level = values["log.level"].upper()
    if level not in _LOG_LEVELS:
        raise layers.fail("log.level", f"must be one of {', '.join(_LOG_LEVELS)}")
    values["log.level"] = level
    fmt = values["log.format"].lower()
    if fmt not in _LOG_FORMATS:
        raise layers.fail("log.format", f"must be one of {', '.join(_LOG_FORMATS)}")
    values["log.format"] = fmt


def _check(layers: _Layers) -> None:
    values = layers.values
    for key, predicate, requirement in _RULES:
        if not predicate(values[key]):
            raise layers.fail(key, requirement)
    # Secrets are checked without echoing them.
    if any(not key for key in values["security.api_keys"]):
        raise ConfigError(f"security.api_keys: empty keys are not allowed ({layers.sources['security.api_keys']})")
    if values["security.admin_token"] and len(values["security.admin_token"]) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"security.admin_token: must be at least {MIN_TOKEN_LENGTH} characters "
            f"({layers.sources['security.admin_token']})"
        )
    if values["security.protect_status"] and not (values["security.api_keys"] or values["security.admin_token"]):
        raise ConfigError(
            "security.protect_status: needs security.api_keys or security.admin_token, or nobody could "
            f"read /health and /metrics ({layers.sources['security.protect_status']})"
        )
    if values["retry.max_backoff_secs"] < values["retry.base_backoff_secs"]:
        raise layers.fail("retry.max_backoff_secs", "must be at least retry.base_backoff_secs")
    if values["uploader.backoff_max_secs"] < values["uploader.backoff_base_secs"]:
        raise layers.fail("uploader.backoff_max_secs", "must be at least uploader.backoff_base_secs")
    if values["node.poll_max_secs"] < values["node.poll_min_secs"]:
        raise layers.fail("node.poll_max_secs", "must be at least node.poll_min_secs")
    if values["node.role"] == "reader" and not values["s3.bucket"]:
        raise ConfigError(f"s3.bucket: required when node.role is 'reader' ({layers.sources['node.role']})")
    policy = values["storage.tiering_policy"]
    if policy_of(policy).needs_s3 and not values["s3.bucket"]:
        source = layers.sources["storage.tiering_policy"]
        raise ConfigError(f"s3.bucket: required when storage.tiering_policy is {policy!r} ({source})")


def load_settings(
    config_path: str | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated Settings: defaults < TOML file < TIERDB_* env < overrides.

    ``overrides`` maps dotted keys to values (``{"server.port": 9000}``); None values are
    ignored so CLI flags that were not given can be passed through unchanged.

    >>> load_settings(env={}, overrides={"server.port": "9000"}).server.port
    9000
    """
    layers = _Layers()
    located = _config_path(config_path, env)
    if located is not None:
        _apply_file(layers, *located)
    _apply_env(layers, env)
    _apply_overrides(layers, overrides or {})
    _normalize(layers)
    _check(layers)
    return msgspec.convert(_unflatten(layers.values), Settings)


def is_secret(dotted_key: str) -> bool:
    """True for settings whose value must never be logged or printed (``security.admin_token``)."""
    key = dotted_key.split(".", 1)[-1]
    return any(word in key for word in _SECRET_WORDS)


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with every secret replaced by '***' (empty secrets stay empty)."""
    nested = msgspec.to_builtins(settings)
    for section, table in nested.items():
        for key, value in table.items():
            if not is_secret(f"{section}.{key}"):
                continue
            if isinstance(value, list):
                table[key] = ["***"] * len(value)
            elif value:
                table[key] = "***"
    return nested
