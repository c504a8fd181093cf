"""Training logs: one CSV row per logged step (flushed, so a killed run keeps its log), and
TensorBoard scalars when asked for and installed."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError


class CsvLog:
    """Append-only CSV with a fixed header; on resume, rows after the checkpoint are dropped
    (they are trained again, and the log must show every step once)."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None = None) -> None:
        self.path, self.fields = path, fields
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                rows = [
                    r
                    for r in csv.DictReader(f)
                    if r.get("step", "").isdigit() and int(r["step"]) <= resume_step
                ]
            tmp = path.with_suffix(".csv.part")
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, path)
        new = not path.exists()
        self._f = path.open("a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")
        if new:
            self._w.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardLog:
    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CaloquantError(
                "TensorBoard logging needs the 'tensorboard' package (pip install tensorboard)"
            ) from None
        self._w = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self._w.add_scalar(k, v, step)

    def close(self) -> None:
        self._w.close()
