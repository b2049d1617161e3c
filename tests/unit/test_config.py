"""tierdb.config.load_settings: precedence, conversion, validation, redaction, shipped files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tierdb.config import (
    DEFAULT_CONFIG_PATH,
    FIELD_TYPES,
    ConfigError,
    Settings,
    is_secret,
    load_settings,
    redacted,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_default_file(tmp_path, monkeypatch):
    """Run every test from an empty directory so config/tierdb.toml of the repo is not picked up."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# -- sources and precedence -------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    assert load_settings(env={}) == Settings()


def test_file_is_read_from_the_argument(tmp_path) -> None:
    path = write(tmp_path / "a.toml", "[server]\nport = 9001\n[compaction]\nthreshold_ops = 5\n")
    settings = load_settings(path, env={})
    assert settings.server.port == 9001
    assert settings.compaction.threshold_ops == 5
    assert settings.server.host == "127.0.0.1"


def test_file_is_read_from_tierdb_config(tmp_path) -> None:
    path = write(tmp_path / "b.toml", "[server]\nport = 9002\n")
    assert load_settings(env={"TIERDB_CONFIG": path}).server.port == 9002


def test_default_location_is_used_when_present(tmp_path) -> None:
    write(tmp_path / DEFAULT_CONFIG_PATH, "[server]\nport = 9003\n")
    assert load_settings(env={}).server.port == 9003


def test_argument_beats_tierdb_config(tmp_path) -> None:
    first = write(tmp_path / "first.toml", "[server]\nport = 1111\n")
    second = write(tmp_path / "second.toml", "[server]\nport = 2222\n")
    assert load_settings(first, env={"TIERDB_CONFIG": second}).server.port == 1111


def test_precedence_is_file_then_env_then_overrides(tmp_path) -> None:
    path = write(tmp_path / "c.toml", '[server]\nport = 1000\nhost = "file-host"\n[storage]\ndata_dir = "/file"\n')
    env = {"TIERDB_PORT": "2000", "TIERDB_DATA_DIR": "/env"}
    settings = load_settings(path, env=env, overrides={"server.port": 3000, "server.host": None})
    assert settings.server.port == 3000  # CLI beats env beats file
    assert settings.storage.data_dir == "/env"  # env beats file
    assert settings.server.host == "file-host"  # None override = flag not given


def test_generic_env_names_reach_every_key() -> None:
    env = {
        "TIERDB_COMPACTION_THRESHOLD_OPS": "50000",
        "TIERDB_S3_ENDPOINT": "http://127.0.0.1:9000",
        "TIERDB_S3_PATH_STYLE": "false",
        "TIERDB_STORAGE_FSYNC": "0",
        "TIERDB_RETRY_BASE_BACKOFF_SECS": "0.5",
        "TIERDB_SECURITY_API_KEYS": "k1, k2,,",
        "TIERDB_SERVER_MAX_BODY_BYTES": "1024",
    }
    settings = load_settings(env=env)
    assert settings.compaction.threshold_ops == 50000
    assert settings.s3.endpoint == "http://127.0.0.1:9000"
    assert settings.s3.path_style is False
    assert settings.storage.fsync is False
    assert settings.retry.base_backoff_secs == 0.5
    assert settings.security.api_keys == ["k1", "k2"]
    assert settings.server.max_body_bytes == 1024


def test_shortcut_env_names() -> None:
    env = {
        "TIERDB_HOST": "0.0.0.0",
        "TIERDB_PORT": "9999",
        "TIERDB_DATA_DIR": "/srv/tierdb",
        "TIERDB_TIERING_POLICY": "memory",
        "TIERDB_ADMIN_TOKEN": "tok-0123456789abcdef",
        "TIERDB_LOG_FORMAT": "json",
        "TIERDB_LOG_LEVEL": "debug",
    }
    settings = load_settings(env=env)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9999)
    assert settings.storage.data_dir == "/srv/tierdb"
    assert settings.security.admin_token == "tok-0123456789abcdef"
    assert (settings.log.format, settings.log.level) == ("json", "DEBUG")


def test_long_env_name_beats_the_shortcut() -> None:
    assert load_settings(env={"TIERDB_PORT": "1", "TIERDB_SERVER_PORT": "2"}).server.port == 2


def test_unrelated_tierdb_variables_are_ignored() -> None:
    assert load_settings(env={"TIERDB_TEST_SOMETHING": "x", "PATH": "/bin"}) == Settings()


@pytest.mark.parametrize(
    ("spelling", "policy"),
    [("memory", "memory"), ("Memory", "memory"), ("MemoryS3", "memory_s3"), ("S3Only", "s3_only"), ("s3_only", "s3_only")],
)
def test_policy_aliases(spelling: str, policy: str) -> None:
    settings = load_settings(env={"TIERDB_TIERING_POLICY": spelling, "TIERDB_S3_BUCKET": "b"})
    assert settings.storage.tiering_policy == policy


def test_overrides_accept_strings_from_the_command_line() -> None:
    assert load_settings(env={}, overrides={"server.port": "8181"}).server.port == 8181


# -- errors name the key and the source -------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TIERDB_COMPACTION_THRESHOLD_OPS": "abc"},
            "compaction.threshold_ops: expected int, got 'abc' (from env TIERDB_COMPACTION_THRESHOLD_OPS)",
        ),
        ({"TIERDB_PORT": "http"}, "server.port: expected int, got 'http' (from env TIERDB_PORT)"),
        ({"TIERDB_STORAGE_FSYNC": "maybe"}, "storage.fsync: expected bool, got 'maybe' (from env TIERDB_STORAGE_FSYNC)"),
        ({"TIERDB_PORT": "0"}, "server.port: must be between 1 and 65535, got 0 (from env TIERDB_PORT)"),
        ({"TIERDB_SERVER_PORT": "65536"}, "server.port: must be between 1 and 65535, got 65536 (from env TIERDB_SERVER_PORT)"),
        ({"TIERDB_TIERING_POLICY": "tape"}, "storage.tiering_policy: must be one of memory, memory_s3, s3_only"),
        ({"TIERDB_LOG_FORMAT": "xml"}, "log.format: must be one of text, json, got 'xml' (from env TIERDB_LOG_FORMAT)"),
        ({"TIERDB_LOG_LEVEL": "LOUD"}, "log.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"TIERDB_COMPACTION_THRESHOLD_OPS": "0"}, "compaction.threshold_ops: must be positive, got 0"),
        ({"TIERDB_COMPACTION_THRESHOLD_BYTES": "-1"}, "compaction.threshold_bytes: must be positive, got -1"),
        ({"TIERDB_INDEX_M": "1"}, "index.m: must be between 2 and 128, got 1"),
        ({"TIERDB_SERVER_MAX_K": "0"}, "server.max_k: must be positive"),
        ({"TIERDB_RETRY_MAX_BACKOFF_SECS": "0.5"}, "retry.max_backoff_secs: must be at least retry.base_backoff_secs"),
        (
            {"TIERDB_TIERING_POLICY": "MemoryS3"},
            "s3.bucket: required when storage.tiering_policy is 'memory_s3' (from env TIERDB_TIERING_POLICY)",
        ),
        ({"TIERDB_COMPACTION_THRESHOLD_OP": "5"}, "unknown setting compaction.threshold_op (from env TIERDB_COMPACTION_THRESHOLD_OP)"),
    ],
)
def test_env_errors_name_the_key_and_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nport = "eighty"\n', "server.port: expected int, got 'eighty' (from file "),
        ("[server]\nprot = 80\n", "unknown setting server.prot (from file "),
        ("[servers]\nport = 80\n", "unknown section [servers]"),
        ("server = 80\n", "server: must be a table"),
        ("[security]\napi_keys = [1]\n", "security.api_keys: expected str at [0], got [1]"),
        ("[server\nport = 80\n", "is not valid TOML"),
        ("[compaction]\ninterval_secs = 0\n", "compaction.interval_secs: must be positive, got 0.0 (from file "),
        ('[storage]\ntiering_policy = "S3Only"\n', "s3.bucket: required when storage.tiering_policy is 's3_only'"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert message in str(info.value)


def test_missing_file_names_its_origin(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope.toml' not found \(from --config\)"):
        load_settings(str(tmp_path / "nope.toml"), env={})
    with pytest.raises(ConfigError, match=r"not found \(from env TIERDB_CONFIG\)"):
        load_settings(env={"TIERDB_CONFIG": str(tmp_path / "nope.toml")})


def test_override_errors_say_command_line() -> None:
    with pytest.raises(ConfigError, match=r"server.port: must be between 1 and 65535, got 70000 \(from command line\)"):
        load_settings(env={}, overrides={"server.port": 70000})
    with pytest.raises(ConfigError, match="unknown setting server.colour"):
        load_settings(env={}, overrides={"server.colour": "red"})


def test_a_bad_file_value_fixed_by_env_is_still_an_error(tmp_path) -> None:
    """Every source is validated on its own: a typo in the file never goes unnoticed."""
    path = write(tmp_path / "d.toml", '[server]\nport = "x"\n')
    with pytest.raises(ConfigError, match="from file"):
        load_settings(path, env={"TIERDB_PORT": "8080"})


# -- secrets ----------------------------------------------------------------------------------


def test_redacted_hides_secrets_and_keeps_everything_else() -> None:
    settings = load_settings(env={"TIERDB_ADMIN_TOKEN": "hunter2-hunter2-hunter2", "TIERDB_SECURITY_API_KEYS": "a1,b2"})
    shown = redacted(settings)
    assert shown["security"] == {"admin_token": "***", "api_keys": ["***", "***"], "protect_status": False}
    assert shown["server"]["port"] == 8080
    assert "hunter2" not in repr(shown) and "a1" not in str(shown)
    assert msgspec.json.encode(shown)  # plain data, loggable as JSON


def test_secrets_are_recognised_by_name() -> None:
    secret = {key for key in FIELD_TYPES if is_secret(key)}
    assert secret == {"security.admin_token", "security.api_keys"}
    assert is_secret("s3.secret_access_key") and is_secret("s3.session_token")
    assert not is_secret("compaction.threshold_ops")


def test_empty_secrets_stay_visibly_empty() -> None:
    assert redacted(Settings())["security"] == {"admin_token": "", "api_keys": [], "protect_status": False}


def test_repr_of_settings_never_shows_secrets() -> None:
    settings = load_settings(env={"TIERDB_ADMIN_TOKEN": "hunter2-hunter2-hunter2", "TIERDB_SECURITY_API_KEYS": "key-abc"})
    for text in (repr(settings), str(settings), repr(settings.security)):
        assert "hunter2" not in text and "key-abc" not in text
    assert settings.security.admin_token == "hunter2-hunter2-hunter2"


# -- the shipped config files -----------------------------------------------------------------


def test_shipped_default_config_is_memory_data_8080() -> None:
    settings = load_settings(str(REPO_ROOT / "config" / "tierdb.toml"), env={})
    assert settings.storage.tiering_policy == "memory"
    assert settings.storage.data_dir == "./data"
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)


def test_example_config_sets_every_key_to_its_default() -> None:
    path = REPO_ROOT / "config" / "tierdb.example.toml"
    data = msgspec.toml.decode(path.read_bytes())
    keys = {f"{section}.{key}" for section, table in data.items() for key in table}
    assert keys == set(FIELD_TYPES), "tierdb.example.toml must list every setting"
    assert load_settings(str(path), env={}) == Settings()


def test_example_config_documents_every_key_with_a_comment() -> None:
    lines = (REPO_ROOT / "config" / "tierdb.example.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_short_admin_token_and_empty_api_key_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"TIERDB_ADMIN_TOKEN": "short-secret"})
    assert "at least 16" in str(err.value) and "short-secret" not in str(err.value)
    with pytest.raises(ConfigError, match="empty keys"):
        load_settings(env={}, overrides={"security.api_keys": ["good-key", ""]})


def test_max_dimension_is_configurable():
    assert load_settings(env={"TIERDB_SERVER_MAX_DIMENSION": "512"}).server.max_dimension == 512
    with pytest.raises(ConfigError, match="server.max_dimension"):
        load_settings(env={"TIERDB_SERVER_MAX_DIMENSION": "5000"})
