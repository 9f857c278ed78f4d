"""The data directory: where each store keeps its files."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """`root/jobs.sqlite3`, `root/datasets/`, `root/models/`, `root/checkpoints/`, and
    `root/quarantine/` for files start-up repairs moved aside instead of deleting."""

    root: Path

    @property
    def jobs_db(self) -> Path:
        return self.root / "jobs.sqlite3"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def checkpoint(self, job_id: str) -> Path:
        """Where job `job_id` checkpoints at each epoch end."""
        return self.checkpoints / f"{job_id}.npz"

    def create(self) -> None:
        """Make the directories if they are missing."""
        for directory in (self.datasets, self.models, self.checkpoints):
            directory.mkdir(parents=True, exist_ok=True)
