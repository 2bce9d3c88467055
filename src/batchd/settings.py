"""The one Settings object. Read once at the entrypoint (``cli.py``) and passed down.

Precedence, highest first: command-line flags, ``BATCHD_*`` environment variables, the config file
(``batchd.toml``, or the path in ``--config`` / ``BATCHD_CONFIG``), the defaults below.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from batchd.errors import ConfigurationError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"10s"``, ``"30m"``, ``"24h"``, ``"7d"`` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration like 10s, 30m, 24h or 7d: {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


LOCAL = "local"
MODEL_DIR_MARKERS = ("modules.json", "config.json")


class UpstreamSettings(BaseModel):
    """An OpenAI-compatible model server, or a model run in this process (``url`` ``local`` or
    ``local:PATH``). With ``models`` empty it serves any model."""

    url: str
    models: list[str] = Field(default_factory=list)
    api_key: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    adaptive_concurrency: bool | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> UpstreamSettings:
        """``URL`` or ``MODEL[,MODEL…]@URL`` (the command-line form)."""
        head, sep, tail = text.partition("@")
        if sep and "://" not in head:
            models = [m.strip() for m in head.split(",") if m.strip()]
            return cls(url=tail.strip(), models=models)
        return cls(url=text.strip())

    @property
    def label(self) -> str:
        return self.name or self.url

    @model_validator(mode="after")
    def _check_url(self) -> UpstreamSettings:
        """Fail at start-up, with a clear message, rather than at the first request (or, for a
        local model, when it loads)."""
        if self.is_local:
            return self._check_local_model()
        url = urlsplit(self.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"{self.url!r} is not an upstream: give an http:// or https:// URL, or local."
            )
        return self

    def _check_local_model(self) -> UpstreamSettings:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ValueError(
                "The local upstream needs sentence-transformers: pip install 'batchd[local]'"
            )
        path = self.local_model_path
        if path and not any((Path(path) / name).is_file() for name in MODEL_DIR_MARKERS):
            raise ValueError(f"{path} is not a sentence-transformers model directory.")
        return self

    @property
    def is_local(self) -> bool:
        return self.url == LOCAL or self.url.startswith(LOCAL + ":")

    @property
    def local_model_path(self) -> str | None:
        """The model directory of a ``local:PATH`` upstream; None for the packaged model."""
        return self.url.partition(":")[2] or None if self.is_local else None


class ApiKey(BaseModel):
    key: str
    project: str

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        """``KEY`` (project ``default``) or ``PROJECT:KEY``; an empty key or project is refused
        (an empty key would let ``Bearer`` with nothing after it in)."""
        project, sep, key = text.strip().partition(":")
        if not sep:
            project, key = "default", project
        if not project or not key:
            raise ValueError(f"{text!r} is not an API key: give KEY or PROJECT:KEY.")
        return cls(key=key, project=project)


def _check_one_project_per_key(keys: list[ApiKey]) -> None:
    projects: dict[str, str] = {}
    for api_key in keys:
        other = projects.setdefault(api_key.key, api_key.project)
        if other != api_key.project:
            raise ValueError(
                f"one key is given to two projects ({other} and {api_key.project}): "
                "each key names one project"
            )


def read_api_keys_file(path: Path) -> list[ApiKey]:
    """``PROJECT:KEY`` (or ``KEY``) a line; blank lines and ``#`` comments are skipped. A line
    that is not a key is refused with its number."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read api_keys_file {path}: {exc}") from exc
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                keys.append(ApiKey.parse(line))
            except ValueError:
                raise ValueError(
                    f"api_keys_file {path}, line {number}: not an API key: give KEY or PROJECT:KEY."
                ) from None
    return keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHD_", extra="forbid", toml_file="batchd.toml")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("batchd-data")
    database_url: str | None = None
    blob_url: str | None = None
    upstreams: list[UpstreamSettings] = Field(default_factory=list)
    upstream_api_key: str | None = None
    max_concurrency: int = Field(default=64, ge=1)
    adaptive_concurrency: bool = False
    completion_windows: list[str] = Field(default_factory=lambda: ["24h"])
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_keys_file: Path | None = None
    insecure_no_auth: bool = False
    max_active_batches: int | None = Field(default=None, ge=1)
    max_enqueued_lines: int | None = Field(default=None, ge=1)
    max_stored_bytes: int | None = Field(default=None, ge=1)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_batch_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_requests_per_batch: int = Field(default=50_000, ge=1)
    max_embedding_inputs: int = Field(default=50_000, ge=1)
    request_timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    max_retry_after: float = Field(default=60.0, ge=0)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_window: int = Field(default=50, ge=1)
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    breaker_base_cooldown: float = Field(default=1.0, gt=0)
    breaker_max_cooldown: float = Field(default=30.0, gt=0)
    local_batch_size: int = Field(default=64, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=0.5, gt=0)
    run_worker: bool = True
    log_level: str = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_retry_base_delay: float = Field(default=5.0, gt=0)
    webhook_retry_max_delay: float = Field(default=3600.0, gt=0)

    @field_validator("upstreams", mode="before")
    @classmethod
    def _parse_upstreams(cls, value: Any) -> Any:
        return [UpstreamSettings.parse(v) if isinstance(v, str) else v for v in value or []]

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        return [ApiKey.parse(v) if isinstance(v, str) else v for v in value or []]

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: list[ApiKey]) -> list[ApiKey]:
        for api_key in value:
            if not api_key.key.strip() or not api_key.project.strip():
                raise ValueError("an API key and its project must not be empty")
        _check_one_project_per_key(value)
        return value

    @model_validator(mode="after")
    def _read_api_keys_file(self) -> Settings:
        if self.api_keys_file is not None:
            self.api_keys += read_api_keys_file(self.api_keys_file)
            _check_one_project_per_key(self.api_keys)
        return self

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file:///", "s3://")):
            raise ValueError(
                f"{value!r} is not a blob store: give s3://BUCKET/PREFIX or file:///PATH"
            )
        return value

    @field_validator("completion_windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        for window in value:
            parse_duration(window)
        return value

    @model_validator(mode="after")
    def _fill_upstream_defaults(self) -> Settings:
        for upstream in self.upstreams:
            if upstream.api_key is None:
                upstream.api_key = self.upstream_api_key
            if upstream.max_concurrency is None and upstream.is_local:
                # Two micro-batches' worth: one in the model, the next one gathering.
                upstream.max_concurrency = 2 * self.local_batch_size
            if upstream.max_concurrency is None:
                upstream.max_concurrency = self.max_concurrency
            if upstream.adaptive_concurrency is None:
                upstream.adaptive_concurrency = self.adaptive_concurrency and not upstream.is_local
        return self

    @property
    def may_serve_without_keys(self) -> bool:
        """Whether an API with no keys at all may take every caller: on a loopback address, or
        with ``insecure_no_auth`` to say that is meant."""
        if self.insecure_no_auth or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    @property
    def open_to_anyone(self) -> bool:
        """Whether the API would take any caller from other machines, unless the store holds
        keys: no keys in the settings and no leave to serve without them."""
        return not self.api_keys and not self.may_serve_without_keys

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'batchd.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def resolved_blob_url(self) -> str | Path:
        """Where blobs live: ``blob_url``, or the data folder's ``files/``."""
        return self.blob_url or self.blob_dir

    def window_seconds(self, window: str) -> int | None:
        """Seconds in an offered completion window, or None when it is not offered."""
        return parse_duration(window) if window in self.completion_windows else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``), the environment and a TOML file."""
    given = {k: v for k, v in overrides.items() if v is not None and v != ()}
    try:
        if config_file is None:
            return Settings(**given)
        source_cls = type(
            "FileSettings",
            (Settings,),
            {"model_config": {**Settings.model_config, "toml_file": config_file}},
        )
        return source_cls(**given)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from exc
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def _describe(error: ValidationError) -> str:
    """``upstreams.0: /tmp is not a … directory``: where, and what, for each problem."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )
