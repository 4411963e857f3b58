"""Settings from environment variables and `.env`, with documented defaults.

Every stage reads its own prefix (STT_, LLM_, TTS_, ...) in its own module; this holds what
all workers share.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Not 4222: the project's embedded server must not collide with a system NATS.
DEFAULT_NATS_URL = "nats://127.0.0.1:4223"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    nats_url: str = DEFAULT_NATS_URL
    """NATS_URL: where the bus is: one server, or a comma-separated list of the servers of
    a cluster (a worker connects to any that answers and moves to another when it dies).
    If nothing listens at a single local URL, `just nats`/`just demo` start one."""
    nats_user: str | None = None
    """NATS_USER / NATS_PASSWORD: credentials; default: the worker role's user (see
    NATS_AUTH), its password from NATS_PASSWORD_<ROLE> or DATA_DIR/nats/credentials.env."""
    nats_password: str | None = None
    nats_auth: bool = True
    """NATS_AUTH: the embedded server requires one user per worker role, each allowed only
    its own subjects (workers.runtime.security); passwords are generated on first start."""
    nats_role: str = ""
    """NATS_ROLE: whose credentials to use (default: from WORKER_ID, e.g. stt-2 -> stt;
    CLIs and unknown names are the operator, "cli")."""
    data_dir: Path = Path("data")
    """DATA_DIR: SQLite log, JetStream store, reply WAVs, benchmark reports."""
    database_url: str | None = None
    """DATABASE_URL: SQLAlchemy URL of the event log; default sqlite:///<DATA_DIR>/voice.db."""
    stream_name: str = "VOICE"
    """JETSTREAM: name of the stream holding voice.> events."""
    stream_max_age_s: float = 7 * 24 * 3600.0
    """STREAM_MAX_AGE_S: JetStream keeps events this long, recorded or not; the SQL log is
    the record (the recorder warns long before an unrecorded event gets this old)."""
    stream_max_bytes: int = 2 * 1024**3
    """STREAM_MAX_BYTES: size cap of the stream; when full, new events are refused (an error
    to the publisher), never old ones dropped."""
    stream_replicas: int = Field(default=1, ge=1, le=5)
    """STREAM_REPLICAS: copies JetStream keeps of each stream (1 on one server, 3 on a
    cluster); applied by `just nats-setup`, never by a worker."""
    stream_duplicate_window_s: float = 120.0
    """STREAM_DUPLICATE_WINDOW_S: JetStream drops re-published event ids inside this window."""
    nats_sync_interval: str = "1s"
    """NATS_SYNC_INTERVAL: how often the embedded server fsyncs JetStream ("always" for
    every write; NATS' own default is 2 minutes)."""
    log_level: str = "WARNING"
    """LOG_LEVEL: quiet by default."""
    log_json: bool = False
    """LOG_JSON: one JSON object per log line."""
    worker_id: str = Field(default="")
    """WORKER_ID: instance name, for scale-out (default: the worker's name)."""
    endpoint: str = "device"
    """ENDPOINT: the endpoint a mic or speaker worker is (where its audio is captured and
    heard): "device" for `just up`; tools use their own ("demo-3f2a9c1b")."""
    endpoints: str = "device,web,wyoming"
    """ENDPOINTS: comma-separated endpoints whose conversations the stt, llm, tts and
    recorder serve (the services' default: the local device, the web page and the Wyoming
    bridge). A tool run serves only its own endpoint."""
    pool: str = ""
    """POOL: a separate set of workers (a tool run) with durable consumers of its own; empty
    for the services of `just up`."""

    @field_validator("endpoint", "pool")
    @classmethod
    def _token(cls, v: str) -> str:
        if v and not _TOKEN.match(v):
            raise ValueError(f"{v!r}: 1-64 letters, digits, '-' or '_'")
        return v

    @field_validator("nats_url")
    @classmethod
    def _servers(cls, v: str) -> str:
        urls = [u.strip() for u in v.split(",") if u.strip()]
        if not urls:
            raise ValueError("NATS_URL is empty: give nats://host:port[,nats://host:port...]")
        return ",".join(urls)

    @property
    def nats_servers(self) -> list[str]:
        """NATS_URL as a list of server URLs."""
        return self.nats_url.split(",")

    @field_validator("endpoints")
    @classmethod
    def _tokens(cls, v: str) -> str:
        names = [e.strip() for e in v.split(",") if e.strip()]
        bad = [e for e in names if not _TOKEN.match(e)]
        if bad or not names:
            raise ValueError(f"ENDPOINTS={v!r}: comma-separated names of letters, digits, - or _")
        return ",".join(names)

    @property
    def served_endpoints(self) -> list[str]:
        return self.endpoints.split(",")

    @model_validator(mode="after")
    def _role_credentials(self) -> Settings:
        from workers.runtime.security import credentials_of

        found = credentials_of(self)
        if found is not None:
            # Frozen model: the derived values are set once, here, during validation.
            object.__setattr__(self, "nats_user", found[0])
            object.__setattr__(self, "nats_password", found[1])
        return self

    def for_worker(self, worker_id: str) -> Settings:
        """These settings for another worker instance (its role's NATS credentials)."""
        data = self.model_dump()
        data["worker_id"] = worker_id
        return type(self)(_env_file=None, **data)  # type: ignore[call-arg]

    def for_pool(self, name: str) -> Settings:
        """These settings for a tool run: its own endpoint, served by its own workers."""
        data = self.model_dump()
        data.update(endpoint=name, endpoints=name, pool=name)
        return type(self)(_env_file=None, **data)  # type: ignore[call-arg]

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'voice.db').as_posix()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
