"""What a training run is: its configuration, checked up front, and what a resume may change."""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    check_float,
    check_int,
    check_seed,
    parse_energy_range,
)

Precision = Literal["fp32", "bf16"]
MAX_WIDTH = 16.0  # conv2d channel-width multiplier: 16 is already 256 times the paper's weights
MAX_EPOCHS = 100_000

# Settings that define the trajectory of a run: a resume must keep them. Everything else
# (epochs, checkpoint interval, threads, logging) may change when a run is continued.
TRAJECTORY_KEYS = (
    "model",
    "width",
    "init",
    "batch",
    "precision",
    "channels_last",
    "seed",
    "data",
    "val_data",
    "val_fraction",
    "val_n",
    "shuffle_buffer",
    "ecal_fit",
    "energy_range",
    "energy_stage",
    "ema",
    "d_input_power",
    "physics_loss",
    "generator_dropout",
    "physics_layers",
    "physics_layer_cells",
)
# trajectory keys added after runs were started: a saved run without one had this value
ADDED_KEYS: dict[str, Any] = {
    "energy_stage": False,
    "ema": 0.0,
    "d_input_power": 1.0,
    "physics_loss": 0.0,
    "generator_dropout": True,
    "physics_layers": False,
    "physics_layer_cells": False,
}


@dataclass
class TrainConfig:
    """One training run. ``batch`` is the global batch: with N processes each takes batch / N."""

    data: list[str]
    out: str
    model: str = "conv2d"
    width: float = 1.0
    init: str | None = None
    epochs: int | None = None  # None: the recipe's number (30 for conv2d, 50 for gan3d)
    batch: int = 128
    precision: Precision = "fp32"
    channels_last: bool | None = None  # None: where measured faster (see default_channels_last)
    seed: int = 0
    # ECAL-sum target of generated showers: "data" fits the authors' form to the training data
    # (their fit describes their detector), "recipe" keeps the published constants
    ecal_fit: str = "data"
    # two-stage model (caloquant.models.two_stage): Ecal/Ep from a conditional flow fitted to the
    # training showers (frozen), the shape from the GAN; False: the authors' single generator
    energy_stage: bool = True
    # the incident energies the training data were made for (LO, HI GeV), hence the model's valid
    # range; None: as the data's generator declared it (train.data.declared_energy_range), else
    # the lowest and highest training energy. "LO:HI" (the CLI) or a pair, checked by the shared
    # options.parse_energy_range (0 < LO < HI <= 10 TeV) and stored as a pair
    energy_range: tuple[float, float] | str | None = None
    resume: bool = False
    val_data: str | None = None
    val_fraction: float = 0.1  # without val_data: the last 10 % of every training file
    val_n: int = 2000  # showers of the held-out set used for the per-epoch validation
    checkpoint_every: int = 500  # optimizer steps (batches) between RUN_DIR/last.pt writes
    shuffle_buffer: int = 2048  # showers held in memory for shuffling
    threads: int | None = None  # None: the cores divided by the processes on this node
    tensorboard: bool = False
    log_every: int = 1
    # decay of the exponential moving average of the generator that is validated and exported
    # (0: the raw generator); 0.995 averages over ~200 steps. It steadied the authors' loss, but
    # with the physics term the average of the weights is not an average generator: at step
    # 600 of the conv2d-g4 run its showers were 7-28 % narrow where the raw generator's were
    # within 7 % of Geant4 (docs/training.md), so the default is off
    ema: float = 0.0
    # the discriminator sees cells ** d_input_power (training units): below 1 the low-energy cells
    # that make most of a shower's hits weigh more against the core; 1: the authors' raw cells
    d_input_power: float = 1.0
    # weight of the generator's physics term (train.physics_loss: the batch means of the cell
    # spectrum, shower centres and widths pulled towards the real batch's); 0: the authors' loss
    physics_loss: float = 5.0
    # the physics term also matches each layer's energy fraction, transverse centres and widths
    physics_layers: bool = False
    # ... and each layer's count of cells above 1 keV and radial width (physics_loss.py)
    physics_layer_cells: bool = False
    # the generator's dropout layers in its training updates (the authors' recipe: on); off, the
    # trained network is the deployed one (train.weights.remove_dropout says why)
    generator_dropout: bool = False

    def __post_init__(self) -> None:
        # imported here: the command line reads this class's defaults without loading torch
        from caloquant.models import model_ref
        from caloquant.train.recipes import get_recipe

        recipe = get_recipe(self.model)
        if self.epochs is None:
            self.epochs = recipe.default_epochs
        if self.channels_last is None:
            self.channels_last = default_channels_last(self.model, self.precision)
        # numbers: the shared checks and limits (caloquant.options), errors naming the flags
        self.width = check_float(self.width, "--width", positive=True)
        if self.model == "gan3d" and self.width != 1.0:
            raise CaloquantError(
                "--width applies to the conv2d model only (the Conv3D 3DGAN has one size)"
            )
        self.seed = check_seed(self.seed)
        self.val_fraction = check_float(self.val_fraction, "--val-fraction")
        self.ema = check_float(self.ema, "--ema")
        self.d_input_power = check_float(self.d_input_power, "--d-input-power")
        self.physics_loss = check_float(self.physics_loss, "--physics-loss")
        for name, flag, lo, hi in (
            ("epochs", "--epochs", 1, MAX_EPOCHS),
            ("batch", "--batch (BatchNorm needs 2)", 2, MAX_BATCH),
            ("val_n", "--val-n", 2, MAX_SHOWERS_PER_CALL),
            ("checkpoint_every", "--checkpoint-every", 1, None),
            ("shuffle_buffer", "--shuffle-buffer", 1, MAX_SHOWERS_PER_CALL),
            ("threads", "--threads", 1, MAX_THREADS),
            ("log_every", "log_every", 1, None),
        ):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(getattr(self, name), flag, lo, hi))
        checks = [
            (self.width <= MAX_WIDTH, f"--width must be at most {MAX_WIDTH:g}, got {self.width}"),
            (
                self.precision in ("fp32", "bf16"),
                f"--precision must be fp32 or bf16, got '{self.precision}'",
            ),
            (
                self.ecal_fit in ("data", "recipe"),
                f"--ecal-fit must be data or recipe, got '{self.ecal_fit}'",
            ),
            (
                0.0 < self.val_fraction < 1.0,
                f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}",
            ),
            (0.0 <= self.ema < 1.0, f"--ema must be in [0, 1) (0: off), got {self.ema}"),
            (
                0.0 < self.d_input_power <= 1.0,
                f"--d-input-power must be in (0, 1], got {self.d_input_power}",
            ),
            (
                0.0 <= self.physics_loss <= 1e4,
                f"--physics-loss must be in [0, 10000] (0: off), got {self.physics_loss}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise CaloquantError(msg)
        if self.energy_range is not None:
            self.energy_range = parse_energy_range(self.energy_range)
        self.data = expand_data(self.data)
        self.out = str(Path(self.out))
        if self.init is not None:
            # a file (made absolute) or a built-in model name, resolved as every --model is
            model_ref(self.init).require_float()
            if Path(self.init).exists():
                self.init = str(Path(self.init).resolve())
        if self.val_data is not None:
            self.val_data = str(Path(self.val_data).resolve())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_resumable(self, saved: dict[str, Any], run_dir: Path) -> None:
        """Refuse to continue a run directory written with another trajectory-defining setting."""
        for key in TRAJECTORY_KEYS:
            mine, theirs = getattr(self, key), saved.get(key, ADDED_KEYS.get(key))
            if mine == self.__dataclass_fields__[key].default:
                # left at its default: the run keeps the value it was started with (or, for a
                # setting it predates, the one it had), so the command that started a run
                # resumes it after a default changed
                setattr(self, key, theirs)
                continue
            if mine != theirs:
                raise CaloquantError(
                    f"{run_dir} holds a run with {key}={theirs!r} (--{key.replace('_', '-')}), "
                    f"not {mine!r}; resume with the same settings or use another output directory"
                )


def default_channels_last(model: str, precision: str) -> bool:
    """Channels-last where benchmarks/bench_train.py measured it faster on CPUs: fp32 (both models,
    +4 to +60 %) and the Conv3D model in bf16 (+34 %); not the Conv2D model in bf16 (-23 to +17 %,
    median -3 %: no gain)."""
    return not (model == "conv2d" and precision == "bf16")


def expand_data(patterns: list[str]) -> list[str]:
    """Files named directly or by a glob pattern (quoted on the command line), absolute, in
    order."""
    if not patterns:
        raise CaloquantError("no training data given (data files or glob patterns)")
    files: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            hits = sorted(glob.glob(os.path.expanduser(pat)))
            if not hits:
                raise CaloquantError(f"{pat}: no file matches this pattern")
            files += hits
        else:
            files.append(pat)
    out = [str(Path(f).resolve()) for f in files]
    dup = {f for f in out if out.count(f) > 1}
    if dup:
        raise CaloquantError(f"{sorted(dup)[0]}: training file given twice")
    return out
