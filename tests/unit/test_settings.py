"""The one Settings object: durations, upstream and key shorthands, env vars and TOML files."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from batchd.errors import ConfigurationError
from batchd.settings import ApiKey, Settings, UpstreamSettings, load_settings, parse_duration


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BATCHD_* variables and no stray batchd.toml leak in from the machine."""
    for name in list(os.environ):
        if name.startswith("BATCHD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "batchd.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


# -- parse_duration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("30m", 1800), ("24h", 86_400), ("7d", 604_800), (" 2 h ", 7200), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    """Durations with an s/m/h/d unit turn into seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "h", "1.5h", "-1h", "10w", "24H", "1h30m"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything but a whole number and one unit is a ValueError."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# -- shorthands ------------------------------------------------------------------------------


def test_upstream_parse_url() -> None:
    """A bare URL serves any model."""
    upstream = UpstreamSettings.parse(" http://localhost:8001/v1 ")
    assert upstream.url == "http://localhost:8001/v1"
    assert upstream.models == []
    assert upstream.label == "http://localhost:8001/v1"


def test_upstream_parse_models_at_url() -> None:
    """``MODEL,MODEL@URL`` names the models the upstream serves."""
    upstream = UpstreamSettings.parse("gpt-a, gpt-b,@http://gpu:8000/v1")
    assert upstream.url == "http://gpu:8000/v1"
    assert upstream.models == ["gpt-a", "gpt-b"]


def test_upstream_parse_url_with_credentials() -> None:
    """The ``@`` of ``user:pass@host`` in a URL is not taken for the model separator."""
    url = "https://user:secret@models.example.com/v1"
    upstream = UpstreamSettings.parse(url)
    assert (upstream.url, upstream.models) == (url, [])


def test_upstream_parse_models_at_url_with_credentials() -> None:
    """Models may precede a URL that itself carries credentials."""
    upstream = UpstreamSettings.parse("gpt-a@https://user:secret@host/v1")
    assert upstream.url == "https://user:secret@host/v1"
    assert upstream.models == ["gpt-a"]


def test_upstream_label_prefers_name() -> None:
    """An upstream's name labels it when given."""
    assert UpstreamSettings(url="http://x", name="gpu-1").label == "gpu-1"


@pytest.mark.parametrize(
    ("text", "project", "key"),
    [
        ("sk-plain", "default", "sk-plain"),
        ("team-a:sk-abc", "team-a", "sk-abc"),
        ("team-a:sk:with:colons", "team-a", "sk:with:colons"),
    ],
)
def test_api_key_parse(text: str, project: str, key: str) -> None:
    """``KEY`` belongs to project default; ``PROJECT:KEY`` to that project."""
    parsed = ApiKey.parse(text)
    assert (parsed.project, parsed.key) == (project, key)


@pytest.mark.parametrize("text", ["", "  ", ":sk-abc", "team-a:"])
def test_an_empty_key_or_project_is_refused_at_start(text: str) -> None:
    """An empty key would let ``Authorization: Bearer`` with nothing after it in."""
    with pytest.raises(ConfigurationError, match="api_keys"):
        load_settings(api_keys=[text])


def test_one_key_for_two_projects_is_refused_at_start() -> None:
    """It used to go silently to the last project named."""
    with pytest.raises(ConfigurationError, match="two projects"):
        load_settings(api_keys=["team-a:sk-1", "team-b:sk-1"])


@pytest.mark.parametrize(
    ("host", "keys", "insecure", "open_to_anyone"),
    [
        ("127.0.0.1", [], False, False),
        ("::1", [], False, False),
        ("localhost", [], False, False),
        ("0.0.0.0", [], False, True),
        ("batchd.internal", [], False, True),
        ("0.0.0.0", ["sk-1"], False, False),
        ("0.0.0.0", [], True, False),
    ],
)
def test_an_api_without_keys_is_open_to_anyone_off_loopback(
    host: str, keys: list[str], insecure: bool, open_to_anyone: bool
) -> None:
    settings = load_settings(host=host, api_keys=keys, insecure_no_auth=insecure)
    assert settings.open_to_anyone is open_to_anyone


# -- Settings --------------------------------------------------------------------------------


def test_defaults() -> None:
    """Without configuration batchd listens locally and keeps data in ./batchd-data."""
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.completion_windows == ["24h"]
    assert settings.max_requests_per_batch == 50_000
    assert settings.resolved_database_url == f"sqlite:///{Path('batchd-data') / 'batchd.db'}"
    assert settings.blob_dir == Path("batchd-data") / "files"


def test_env_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHD_PORT sets the port."""
    monkeypatch.setenv("BATCHD_PORT", "9123")
    assert load_settings().port == 9123


def test_env_bad_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port that is not a number is a ConfigurationError."""
    monkeypatch.setenv("BATCHD_PORT", "eighty")
    with pytest.raises(ConfigurationError):
        load_settings()


def test_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command-line override wins over the environment; None overrides are ignored."""
    monkeypatch.setenv("BATCHD_PORT", "9123")
    assert load_settings(port=7000).port == 7000
    assert load_settings(port=None).port == 9123


def test_env_upstreams_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHD_UPSTREAMS takes a JSON list of shorthand strings."""
    monkeypatch.setenv("BATCHD_UPSTREAMS", '["gpt-a@http://a/v1", "http://b/v1"]')
    monkeypatch.setenv("BATCHD_UPSTREAM_API_KEY", "sk-up")
    upstreams = load_settings().upstreams
    assert [(u.url, u.models, u.api_key) for u in upstreams] == [
        ("http://a/v1", ["gpt-a"], "sk-up"),
        ("http://b/v1", [], "sk-up"),
    ]


CONFIG = """
port = 8100
completion_windows = ["24h", "1h"]
api_keys = ["team-a:sk-a", "sk-default"]
max_concurrency = 16
upstreams = [
    "gpt-a@http://shorthand:8000/v1",
    { url = "http://table:8000/v1", models = ["gpt-b"], api_key = "sk-t", max_concurrency = 4 },
]
"""


def test_toml_config_file(tmp_path: Path) -> None:
    """A TOML config file sets settings, upstreams and keys, shorthand or tables."""
    settings = load_settings(write_config(tmp_path, CONFIG))
    assert settings.port == 8100
    assert settings.completion_windows == ["24h", "1h"]
    assert [(k.project, k.key) for k in settings.api_keys] == [
        ("team-a", "sk-a"),
        ("default", "sk-default"),
    ]
    shorthand, table = settings.upstreams
    assert (shorthand.url, shorthand.models, shorthand.max_concurrency) == (
        "http://shorthand:8000/v1",
        ["gpt-a"],
        16,
    )
    assert (table.url, table.models, table.api_key, table.max_concurrency) == (
        "http://table:8000/v1",
        ["gpt-b"],
        "sk-t",
        4,
    )


def test_env_beats_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment overrides the config file, and flags override both."""
    path = write_config(tmp_path, CONFIG)
    monkeypatch.setenv("BATCHD_PORT", "8200")
    assert load_settings(path).port == 8200
    assert load_settings(path, port=8300).port == 8300


def test_default_config_file_in_working_directory(tmp_path: Path) -> None:
    """Without a path, ./batchd.toml is read."""
    (tmp_path / "batchd.toml").write_text("port = 8400\n")
    assert load_settings().port == 8400


@pytest.mark.parametrize(
    "text",
    ['unknown_setting = "x"\n', 'completion_windows = ["soon"]\n', "max_concurrency = 0\n"],
)
def test_bad_config_file(tmp_path: Path, text: str) -> None:
    """Unknown keys, bad windows and out-of-range values are ConfigurationErrors."""
    with pytest.raises(ConfigurationError):
        load_settings(write_config(tmp_path, text))


def test_window_seconds() -> None:
    """Only offered windows have a length; others are None."""
    settings = Settings(completion_windows=["24h", "30m"])
    assert settings.window_seconds("24h") == 86_400
    assert settings.window_seconds("30m") == 1800
    assert settings.window_seconds("1h") is None
    assert settings.window_seconds("48h") is None


def test_a_local_model_path_that_is_not_a_model_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a sentence-transformers model directory"):
        load_settings(upstreams=[f"local:{tmp_path}"])


def test_a_local_model_directory_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")

    settings = load_settings(upstreams=[f"mini@local:{tmp_path}"])

    assert settings.upstreams[0].local_model_path == str(tmp_path)


def test_a_local_upstream_without_batchd_local_installed_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_sentence_transformers(name: str, *args: Any) -> Any:
        return None if name == "sentence_transformers" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_sentence_transformers)

    with pytest.raises(ConfigurationError, match=r"pip install 'batchd\[local\]'"):
        load_settings(upstreams=["local"])


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://models.internal/v1", "http://"])
def test_an_upstream_that_is_not_an_http_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigurationError, match="give an http:// or https:// URL, or local"):
        load_settings(upstreams=[url])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "https://api.openai.com/v1"])
def test_http_and_https_upstreams_are_accepted(url: str) -> None:
    assert load_settings(upstreams=[url]).upstreams[0].url == url


# -- the API keys file -----------------------------------------------------------------------


def test_api_keys_file_adds_keys(tmp_path: Path) -> None:
    """PROJECT:KEY or KEY a line; blank lines and # comments are skipped."""
    path = tmp_path / "keys"
    path.write_text("# team keys\n\nteam-a:sk-a\n  sk-plain  \r\n   # indented comment\n")
    settings = load_settings(api_keys=["team-b:sk-b"], api_keys_file=path)
    assert [(k.project, k.key) for k in settings.api_keys] == [
        ("team-b", "sk-b"),
        ("team-a", "sk-a"),
        ("default", "sk-plain"),
    ]


def test_api_keys_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    path.write_text("team-a:sk-a\n")
    monkeypatch.setenv("BATCHD_API_KEYS_FILE", str(path))
    assert [k.key for k in load_settings().api_keys] == ["sk-a"]


@pytest.mark.parametrize("bad", ["team-a:", ":sk-secret", "team-a:   "])
def test_a_bad_line_in_the_api_keys_file_is_refused_by_number(tmp_path: Path, bad: str) -> None:
    """The message names the file and the line, and never repeats a key."""
    path = tmp_path / "keys"
    path.write_text(f"# comment\nteam-a:sk-a\n{bad}\n")
    with pytest.raises(ConfigurationError, match=r"line 3: not an API key") as caught:
        load_settings(api_keys_file=path)
    assert str(path) in str(caught.value) and "sk-secret" not in str(caught.value)


def test_a_key_in_the_file_and_a_flag_for_two_projects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("team-a:sk-1\n")
    with pytest.raises(ConfigurationError, match="two projects"):
        load_settings(api_keys=["team-b:sk-1"], api_keys_file=path)


def test_a_missing_api_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read api_keys_file"):
        load_settings(api_keys_file=tmp_path / "nothing")


def test_quotas_default_to_no_limit() -> None:
    settings = load_settings()
    assert (settings.max_active_batches, settings.max_enqueued_lines) == (None, None)
    assert settings.max_stored_bytes is None
    with pytest.raises(ConfigurationError, match="max_active_batches"):
        load_settings(max_active_batches=0)


@pytest.mark.parametrize("url", ["s3://bucket/some/prefix", "s3://bucket", "file:///var/blobs"])
def test_blob_url_names_a_bucket_or_a_folder(url: str) -> None:
    assert load_settings(blob_url=url).blob_url == url


@pytest.mark.parametrize("url", ["bucket/prefix", "gs://bucket", "file://relative"])
def test_a_blob_url_of_another_kind_is_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a blob store"):
        load_settings(blob_url=url)


def test_adaptive_concurrency_is_global_with_an_override_per_upstream(tmp_path: Path) -> None:
    """adaptive_concurrency applies to every HTTP upstream that sets none of its own."""
    text = """
adaptive_concurrency = true
upstreams = [
    "http://inherits:8000/v1",
    { url = "http://fixed:8000/v1", adaptive_concurrency = false },
]
"""
    inherits, fixed = load_settings(write_config(tmp_path, text)).upstreams
    assert (inherits.adaptive_concurrency, fixed.adaptive_concurrency) == (True, False)
    assert load_settings(upstreams=["http://u:8000/v1"]).upstreams[0].adaptive_concurrency is False
