"""A training run: data, trainer, checkpoints, logs, per-epoch validation, the selected model.

The run directory (``cfg.out``) holds

* ``last.pt``: everything needed to continue (weights in training units, optimizer states,
  every rank's torch / numpy / python generator states, epoch and batch position, validation
  history), written atomically every ``checkpoint_every`` steps and at each epoch's end;
* ``model.pt``: the selected epoch's generator and discriminator as a caloquant checkpoint
  (GeV), which ``sample``, ``quantize``, ``bench`` and ``validate`` take;
* ``config.json`` (the run's settings, recipe and data), ``log.csv`` (one row per step),
  ``validation.json`` (one record per epoch, with the selected epoch), ``summary.json``;
  ``tensorboard/`` with ``tensorboard=True``.

Only rank 0 writes; with several machines the run directory must be on a shared file system
(every rank reads ``last.pt`` on resume).
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant.errors import CaloquantError, reason
from caloquant.fileio import atomic_path, file_sha256, write_json
from caloquant.models import Checkpoint, model_ref, save_checkpoint
from caloquant.train import ddp, selection
from caloquant.train.config import TrainConfig
from caloquant.train.data import (
    FileRows,
    ShowerStream,
    data_sources,
    declared_energy_range,
    describe_files,
    ecal_and_energy,
    scan_files,
    split_rows,
)
from caloquant.train.logs import CsvLog, TensorBoardLog
from caloquant.train.recipes import Recipe, fit_ecal, get_recipe
from caloquant.train.rng import rng_state, set_rng_state
from caloquant.train.trainer import LOSS_NAMES, Trainer

STATE_VERSION = 1
LOG_FIELDS = ["step", "epoch", "batch", *LOSS_NAMES, "lr_g", "lr_d", "showers_per_s", "elapsed_s"]


@dataclass
class TrainResult:
    run_dir: Path
    model: Path | None  # RUN_DIR/model.pt, the selected epoch (None before the first epoch ends)
    best_epoch: int | None  # 1-based
    best_metric: float | None
    steps: int
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    selected_by: str = ""  # what selected the epoch: "selection metric 3.21", "the last epoch"


ProgressFn = Callable[[dict[str, Any]], None]
LogFn = Callable[[str], None]


def train(
    cfg: TrainConfig, progress: ProgressFn | None = None, log: LogFn | None = None
) -> TrainResult:
    """Train (or, with ``cfg.resume``, continue) a run; one process, or each rank under torchrun."""
    d = ddp.init()
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _Run(cfg, d, progress if d.main else None, log if d.main else None).run()
    finally:
        torch.set_num_threads(previous)
        ddp.shutdown(d)


def load_run_state(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle before refusing it
            warnings.simplefilter("ignore")
            st = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CaloquantError(
            f"{path}: corrupt or unreadable training checkpoint ({reason(exc)})"
        ) from None
    except Exception as exc:  # pickle errors of a damaged file
        raise CaloquantError(
            f"{path}: corrupt or unreadable training checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(st, dict) or st.get("caloquant_train_state") != STATE_VERSION:
        raise CaloquantError(f"{path}: not a caloquant training checkpoint")
    return st


class _Run:
    def __init__(
        self, cfg: TrainConfig, d: ddp.Dist, progress: ProgressFn | None, log: LogFn | None
    ) -> None:
        self.cfg, self.d = cfg, d
        self.progress, self.log = progress, log or (lambda m: None)
        self.dir = Path(cfg.out)
        self.last, self.model_path = self.dir / "last.pt", self.dir / "model.pt"

    # -- set-up ---------------------------------------------------------------------------
    def _data(self, grid: tuple[int, ...], cell_scale: float, threshold: float) -> None:
        cfg = self.cfg
        counts = scan_files(cfg.data, grid)
        if cfg.val_data is not None:
            if cfg.val_data in cfg.data:
                raise CaloquantError(f"{cfg.val_data}: the validation file is also a training file")
            self.train_parts, _ = split_rows(cfg.data, counts, None)
            (n_val,) = scan_files([cfg.val_data], grid)
            self.val_parts = [FileRows(cfg.val_data, n_val, 0, n_val)]
        else:
            self.train_parts, self.val_parts = split_rows(cfg.data, counts, cfg.val_fraction)
        self.stream = ShowerStream(
            self.train_parts,
            cfg.batch,
            cfg.seed,
            self.d.rank,
            self.d.world,
            cfg.shuffle_buffer,
            cell_scale,
            threshold,
        )

    def _saved_state(self) -> dict[str, Any] | None:
        if not self.cfg.resume:
            if self.last.exists():
                raise CaloquantError(
                    f"{self.dir} already holds a training run (last.pt); "
                    "resume it or choose another output directory"
                )
            return None
        if not self.last.exists():
            raise CaloquantError(f"{self.dir}: no last.pt to resume from")
        st = load_run_state(self.last)
        self.cfg.check_resumable(st["config"], self.dir)
        if st["world"] != self.d.world:
            raise CaloquantError(
                f"{self.dir} was trained with {st['world']} processes; "
                f"resume with the same number, not {self.d.world}"
            )
        if st["files"] != describe_files(self.train_parts):
            raise CaloquantError(
                f"{self.dir}: the training files changed since the run started "
                "(shower counts differ)"
            )
        return st

    # -- checkpoints ----------------------------------------------------------------------
    def _save_state(self, trainer: Trainer) -> None:
        """Collective: every rank contributes its generator states; rank 0 writes atomically."""
        rngs = ddp.gather(rng_state(), self.d)
        if not self.d.main:
            return
        payload = {
            "caloquant_train_state": STATE_VERSION,
            "config": self.cfg.to_dict(),
            "world": self.d.world,
            "files": describe_files(self.train_parts),
            "rng": rngs,
            "history": self.history,
            "elapsed_s": self.elapsed(),
            "init_sha256": self.init_sha256,
            **trainer.state(),
        }
        with atomic_path(self.last, suffix=".pt") as tmp:
            torch.save(payload, tmp)

    def _save_model(self, trainer: Trainer, record: dict[str, Any]) -> None:
        g, disc = trainer.export()
        prov = {
            "trained_by": "caloquant train",
            "recipe": trainer.recipe.name,
            "epoch": record["epoch"],
            "selected_by": self.rule,
            **{k: record[k] for k in ("selection_metric", "authors_metric")},
            "steps": trainer.step_count,
            "precision": self.cfg.precision,
            "seed": self.cfg.seed,
            "data": [p.path for p in self.train_parts],
            "run_dir": str(self.dir.resolve()),
            "data_sources": data_sources(self.train_parts),
            "energy_range": self.range_note,
        }
        if self.cfg.init is not None:
            prov["init"] = {"model": self.cfg.init, "sha256": self.init_sha256}
        if trainer.energy_fit is not None:
            prov["energy_stage_fit"] = trainer.energy_fit.to_dict()
        save_checkpoint(self.model_path, Checkpoint(trainer.spec, g, disc, prov))

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    # -- the run --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, d = self.cfg, self.d
        r = get_recipe(cfg.model)
        self._data(r.spec(cfg.width).grid, r.cell_scale, r.cell_threshold_gev)
        saved = self._saved_state()
        # the --init model as the run started from it (a built-in name changes meaning when a
        # model is shipped; runs saved before this record hash the file when resumed)
        self.init_sha256 = (saved or {}).get("init_sha256") or (
            file_sha256(model_ref(cfg.init).path) if cfg.init is not None else None
        )
        r = self._recipe_for_data(r)
        if saved is not None:
            self._check_recipe(r)
        val = self._validation_set() if d.main else None  # only rank 0 validates
        # checks --init before anything is said; fits a two-stage model's energy stage
        trainer = Trainer(cfg, d, r, energy_data=(self.energies, self.ecal))
        if trainer.energy_fit is not None:
            self.fit_note = trainer.energy_fit.note()  # the ECAL target is unused then
        if d.main:
            for note in (self.range_note, self.fit_note):
                if note:
                    self.log(note)
        self.history: list[dict[str, Any]] = []
        self.elapsed0, self.t0 = 0.0, time.perf_counter()
        if saved is not None:
            trainer.load_state(saved)
            set_rng_state(saved["rng"][d.rank])
            self.history, self.elapsed0 = saved["history"], saved["elapsed_s"]
            self.log(
                f"resuming {self.dir} at step {trainer.step_count} "
                f"(epoch {trainer.epoch + 1}, batch {trainer.next_batch})"
            )
        self.rule = selection.BY_LAST  # only rank 0 validates and selects
        if val is not None:
            self.rule, notes = selection.selection_rule(val.plan, self.history)
            for note in notes:
                self.log(note)
        csv = tb = None
        if d.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            if saved is None:
                write_json(
                    self.dir / "config.json",
                    {
                        **cfg.to_dict(),
                        "recipe": asdict(r),
                        "spec": trainer.spec.to_dict(),
                        "world": d.world,
                        "files": describe_files(self.train_parts),
                        "data_sources": data_sources(self.train_parts),
                        "validation": {
                            "files": describe_files(self.val_parts),
                            "plan": val.plan.to_dict(),  # type: ignore[union-attr]
                        },
                    },
                )
            resume_step = trainer.step_count if saved is not None else None
            csv = CsvLog(self.dir / "log.csv", LOG_FIELDS, resume_step)
            tb = TensorBoardLog(self.dir / "tensorboard", resume_step) if cfg.tensorboard else None
        try:
            self._epochs(trainer, val, csv, tb)
        finally:
            for lg in (csv, tb):
                if lg is not None:
                    lg.close()
        return self._finish(trainer)

    def _check_recipe(self, r: Recipe) -> None:
        """A resumed run continues with the recipe it started with (``config.json``): a caloquant
        whose recipe differs (say, another update rule) must not switch it mid-run."""
        path = self.dir / "config.json"
        if not path.exists():
            return
        started = json.loads(path.read_text()).get("recipe")
        now = json.loads(json.dumps(asdict(r)))
        if started is not None and started != now:
            diff = sorted(k for k in now if started.get(k) != now[k])
            raise CaloquantError(
                f"{self.dir} was started with another recipe ({', '.join(diff)} differ); "
                "finish it with the caloquant version that started it, "
                "or start a new run directory"
            )

    def _recipe_for_data(self, r: Recipe) -> Recipe:
        """The recipe on this data: generated energies within the data's, and with
        ``ecal_fit="data"`` the ECAL target fitted to the training showers (every rank computes
        the same from the same files)."""
        ecal, e = ecal_and_energy(self.train_parts, r.cell_threshold_gev)
        self.ecal, self.energies = ecal, e
        fit = fit_ecal(ecal, e) if self.cfg.ecal_fit == "data" else None
        (lo, hi), source = self._energy_range(e)
        out = r.for_data((lo, hi), fit)
        self.range_note = f"training energies {lo:g}-{hi:g} GeV: {source}"
        self.fit_note = ""
        if fit is not None:
            resid = ecal / (np.polyval(fit, e / 100.0) * e / 100.0) - 1
            self.fit_note = (
                f"ECAL target fitted to {len(e)} training showers "
                f"({e.min():.0f}-{e.max():.0f} GeV): "
                f"100 Ecal/Ep = polyval({', '.join(f'{c:.4g}' for c in fit)}; Ep/100), "
                f"per-shower spread {np.std(resid):.3f}"
            )
        return out

    def _energy_range(self, e: np.ndarray) -> tuple[tuple[float, float], str]:
        """The incident energies the model is trained for, hence its valid range: those the
        data were made for (``--energy-range``, else as their generator declared it), not the
        extreme energies that happened to be drawn (those are the fallback, said so)."""
        lo_e, hi_e = float(e.min()), float(e.max())
        if self.cfg.energy_range is not None:
            lo, hi = self.cfg.energy_range
            if lo_e < lo * (1 - 1e-6) or hi_e > hi * (1 + 1e-6):
                raise CaloquantError(
                    f"the training data hold energies of {lo_e:g}-{hi_e:g} GeV, outside "
                    f"--energy-range {lo:g}:{hi:g}"
                )
            return (lo, hi), "--energy-range"
        declared = declared_energy_range(self.train_parts)
        if declared is not None:
            (lo, hi), source = declared
            return (min(lo, lo_e), max(hi, hi_e)), source
        return (lo_e, hi_e), (
            "the lowest and highest training energy (the files declare no range; "
            "give the range they were made for with --energy-range)"
        )

    def _validation_set(self) -> selection.ValidationSet:
        """The held-out showers the epochs are scored on, and how the run selects."""
        return selection.load_validation(self.val_parts, self.cfg.val_n)

    def _finish(self, trainer: Trainer) -> TrainResult:
        best = next((h for h in self.history if h.get("selected")), None)
        result = TrainResult(
            self.dir,
            self.model_path if best else None,
            best["epoch"] if best else None,
            best["metric"] if best else None,
            trainer.step_count,
            trainer.epoch,
            self.history,
            selection.selected_by(self.rule, best),
        )
        if self.d.main:
            write_json(
                self.dir / "summary.json",
                {
                    "model": str(result.model) if result.model else None,
                    "best_epoch": result.best_epoch,
                    "best_metric": result.best_metric,
                    "selected_by": self.rule,
                    "selection": result.selected_by,
                    "steps": result.steps,
                    "epochs_done": result.epochs_done,
                    "elapsed_s": self.elapsed(),
                },
            )
        return result

    def _epochs(
        self,
        trainer: Trainer,
        val: selection.ValidationSet | None,
        csv: CsvLog | None,
        tb: TensorBoardLog | None,
    ) -> None:
        cfg, stream = self.cfg, self.stream
        per_epoch = stream.batches_per_epoch
        rate = 0.0
        if val is not None and cfg.init is not None and not self.history:
            self._validate(trainer, val, -1, tb)  # "epoch 0": the starting model is a candidate
        for epoch in range(trainer.epoch, cfg.epochs):  # type: ignore[arg-type]
            trainer.set_epoch(epoch)
            t_last = time.perf_counter()
            for showers, energies in stream.epoch(epoch, trainer.next_batch):
                losses = trainer.step(showers, energies)
                now = time.perf_counter()
                inst = cfg.batch / max(now - t_last, 1e-9)  # real showers per second, all ranks
                rate = inst if rate == 0 else 0.9 * rate + 0.1 * inst
                t_last = now
                if csv is not None and trainer.step_count % cfg.log_every == 0:
                    row = {
                        "step": trainer.step_count,
                        "epoch": epoch + 1,
                        "batch": trainer.next_batch,
                        **losses,
                        "lr_g": trainer.opt_g.param_groups[0]["lr"],
                        "lr_d": trainer.opt_d.param_groups[0]["lr"],
                        "showers_per_s": inst,
                        "elapsed_s": self.elapsed(),
                    }
                    csv.write(row)
                    if tb is not None:
                        tb.write(
                            trainer.step_count,
                            {f"loss/{k}": v for k, v in losses.items()} | {"showers_per_s": inst},
                        )
                if self.progress is not None:
                    self.progress(
                        {
                            "epoch": epoch + 1,
                            "epochs": cfg.epochs,
                            "batch": trainer.next_batch,
                            "batches": per_epoch,
                            "step": trainer.step_count,
                            "total_steps": per_epoch * cfg.epochs,  # type: ignore[operator]
                            "losses": losses,
                            "showers_per_s": rate,
                        }
                    )
                if trainer.step_count % cfg.checkpoint_every == 0:
                    self._save_state(trainer)
            trainer.epoch, trainer.next_batch = epoch + 1, 0
            if val is not None:
                self._validate(trainer, val, epoch, tb)
            self._save_state(trainer)

    def _validate(
        self,
        trainer: Trainer,
        val: selection.ValidationSet,
        epoch: int,
        tb: TensorBoardLog | None,
    ) -> None:
        """Score the epoch (both metrics, selection.py), select it or not, record and log it."""
        g, _ = trainer.export()
        record = {
            "epoch": epoch + 1,
            "step": trainer.step_count,
            **selection.validate_epoch(trainer.spec, g, val, self.rule),
        }
        if selection.choose(self.history, record, self.rule):
            self._save_model(trainer, record)
        self.history.append(record)
        write_json(
            self.dir / "validation.json",
            selection.validation_json(self.history, val.plan, self.rule),
        )
        if tb is not None:
            names = [k for k in ("selection_metric", "authors_metric") if record[k] is not None]
            tb.write(trainer.step_count, {f"validation/{k}": record[k] for k in names})
        self.log(selection.epoch_line(record))
