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

    def checkpoint(self, job_id: str, attempt: int) -> Path:
        """Where attempt `attempt` of job `job_id` checkpoints: a file per attempt, so a worker
        that was taken over can never overwrite the checkpoint of the run that replaced it."""
        return self.checkpoints / f"{job_id}.{attempt}.npz"

    def latest_checkpoint(self, job_id: str) -> Path | None:
        """The checkpoint of the job's latest attempt that wrote one, or None."""
        found = [(int(p.name.split(".")[1]), p) for p in self.checkpoints.glob(f"{job_id}.*.npz")]
        return max(found)[1] if found else None

    def remove_checkpoints(self, job_id: str) -> None:
        """Remove every checkpoint of the job (it has ended), with the temp files a writer
        killed while it checkpointed left (`.<name>.*`, as cnn_core's writer names them)."""
        for path in [
            *self.checkpoints.glob(f"{job_id}.*.npz"),
            *self.checkpoints.glob(f".{job_id}.*"),
        ]:
            path.unlink(missing_ok=True)

    @staticmethod
    def checkpoint_job(path: Path) -> str:
        """The id of the job a checkpoint file belongs to."""
        return path.name.split(".")[0]

    def create(self) -> None:
        """Make the directories if they are missing."""
        for directory in (self.datasets, self.models, self.checkpoints):
            directory.mkdir(parents=True, exist_ok=True)
