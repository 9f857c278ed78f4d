"""Service settings, read from `CNN_*` environment variables."""

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    """Everything an operator can tune; each field is also the env var `CNN_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="CNN_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Jobs, datasets, models, checkpoints.")
    host: str = Field("127.0.0.1", description="Address `make run` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `make run` binds.")
    workers: int = Field(1, ge=1, le=64, description="Training jobs that run at once.")
    train_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="Threads each job trains with (default min(2, CPUs)); recorded on the job "
        "and reused when it resumes, as the weights depend on it.",
    )
    worker_memory_mb: int = Field(
        4096,
        ge=0,
        description="Address-space limit of each training worker (MB); a job that "
        "needs more fails with 'out of memory'. 0: no limit.",
    )
    api_key: SecretStr | None = Field(
        None, description="When set (and not empty), required as a Bearer token."
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Host names (besides loopback names and IP addresses) that requests may "
        "name in their Host header when no API key is set, e.g. '[\"cnn.lan\"]'.",
    )

    max_upload_mb: int = Field(100, ge=1, description="Largest dataset upload (MB).")
    max_predict_mb: int = Field(10, ge=1, description="Largest predict request body (MB).")
    max_json_kb: int = Field(256, ge=1, description="Largest JSON body on other routes (KB).")
    max_queue: int = Field(16, ge=1, description="Queued jobs accepted before 429.")
    max_images_per_request: int = Field(64, ge=1, description="Files or instances per predict.")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="Largest decoded image (pixels).")
    max_request_pixels: int = Field(
        2 * 4096 * 4096, ge=1, description="Pixels all images of one predict may declare."
    )
    predict_concurrency: int = Field(4, ge=1, description="Predictions in flight before 503.")
    model_cache_size: int = Field(8, ge=1, description="Loaded models kept in memory.")
    database_url: str | None = Field(
        None,
        repr=False,  # it may hold a password
        description="Job database: unset for SQLite in the data directory, or "
        "postgresql://user:password@host:port/db for a server shared by many machines.",
    )
    redis_url: str | None = Field(
        None,
        repr=False,
        description="Unset: jobs train in worker processes of the server. redis://host:port/0: "
        "jobs go through an RQ queue on that Redis to `make worker` processes, and the server "
        "trains nothing itself.",
    )
    max_concurrent_uploads: int = Field(
        2, ge=1, description="Dataset uploads received at once before 503."
    )
    header_timeout: float = Field(
        10, gt=0, description="Seconds a connection may take to send a request's headers."
    )
    body_timeout: float = Field(
        30, gt=0, description="Seconds a request body may pause before the request fails (408)."
    )
    poll_interval: float = Field(0.25, gt=0, le=5, description="Seconds between job-state polls.")

    @field_validator("api_key", mode="after")
    @classmethod
    def _empty_key_is_unset(cls, key: SecretStr | None) -> SecretStr | None:
        """`CNN_API_KEY=` (empty) means no key, never "the empty string is the key"."""
        return key if key and key.get_secret_value() else None

    @property
    def max_upload_bytes(self) -> int:
        """Dataset upload cap in bytes."""
        return self.max_upload_mb * MB

    @property
    def max_predict_bytes(self) -> int:
        """Predict body cap in bytes."""
        return self.max_predict_mb * MB

    @property
    def max_json_bytes(self) -> int:
        """JSON body cap in bytes."""
        return self.max_json_kb * 1024
