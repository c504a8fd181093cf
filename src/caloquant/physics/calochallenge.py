"""The CaloChallenge 2022 classifier test, on caloquant's grid (docs/validation.md).

The CaloChallenge evaluation (``code/evaluate.py`` of github.com/CaloChallenge/homepage, modes
``cls-low`` and ``cls-high``) asks whether a neural network can tell generated showers from
Geant4 ones. caloquant runs both of its classifiers on the same showers:

* **low level**: every cell divided by the incident energy, with log10(E_inc / MeV) as one
  more input;
* **high level**: the CaloChallenge high-level features per layer (z): log10 of the layer
  energy, the centre of energy and the width in x and in y, the sparsity (fraction of empty
  cells), the centre and width in r = sqrt(x^2 + y^2), plus log10(E_inc) and log10(E_tot).

Structure (as CaloChallenge): each sample is shuffled and split 60 / 20 / 20 into training,
validation (the CaloChallenge's "test" split: choice of the epoch, isotonic calibration) and
test (its "val" split: the final numbers). A fully connected network (LeakyReLU, Adam at
lr 2e-4) learns ref (label 0) against cand (label 1); its output on the test split is
calibrated by the isotonic regression fitted on the validation split, and gives
``auc`` (of the calibrated output, as CaloChallenge reports it; Hanley-McNeil ``auc_err``) and
``jsd`` = (ln 2 - BCE) / ln 2 (``jsd_err``: the standard error of the mean log loss; not
clipped at 0, so two samples of one source scatter around 0).

Where caloquant differs, and why:

* positions and widths are in cells from the grid centre (CaloChallenge: mm / 100 on its
  cylindrical binning); x and y stand for its eta and phi;
* cells are divided by E_inc times one constant, the reference's mean E_tot / E_inc:
  the CaloChallenge data sets 2 and 3 store cells already divided by their sampling fraction
  (0.033), so that cells / E_inc sum to about 1; caloquant's cells are the visible energy
  (about 2 % of E_inc). The constant is the same for both samples, so it hides nothing;
* cells below ``cell_threshold_gev`` (1e-6 GeV, the cut of caloquant's Geant4 data) are set to
  0 in both samples (CaloChallenge: its data's readout threshold, 0.5 keV / 0.033 MeV);
* a few thousand showers instead of 100,000, on two CPU cores: at most ``max_showers`` per
  sample (a seeded random subset), float32, batch 100 (CaloChallenge: 1,000), the epoch with
  the lowest validation BCE (CaloChallenge: the best validation accuracy of all 50 epochs),
  stopping after ``patience`` epochs without an improvement, after ``max_seconds``, or when
  every validation shower is classified right (CaloChallenge stops at validation accuracy 1
  too);
* the networks (CaloChallenge: three hidden layers of 2,048 nodes for both): the low level
  three of 512 (the CaloChallenge default until November 2023), the high level two of 64, run
  in one thread. On 2 x 2,000 Geant4 showers the CaloChallenge-sized high-level network
  overfits from its first epoch and misses a 5 % energy-scale error (AUC 0.51-0.53) that the
  small one sees (0.69-0.73; docs/validation.md);
* the high-level inputs are standardised (mean and std of the training split); CaloChallenge
  feeds them as they are (log10 of MeV, mm / 100), which at this sample size missed a 10 %
  energy-scale shift of synthetic showers (AUC 0.54 against 0.83 standardised).

Deterministic for a given seed and thread count unless ``max_seconds`` stops a training
(``stopped_by`` says so). The classifier sees E_inc: both samples must share the incident
energy distribution (CaloChallenge generates at the reference's energies).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from caloquant.data import MEV_PER_GEV
from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    check_float,
    check_int,
    check_seconds,
    check_seed,
)
from caloquant.physics.classifier import (
    TrainLog,
    auc_error,
    isotonic_calibrate,
    log_loss,
    predict,
    train_early_stopping,
)
from caloquant.physics.features import DEFAULT_HIT_THRESHOLD_GEV, shower_features
from caloquant.runtime import torch_threads

MIN_SHOWERS = 50  # per sample: 10 of each in the test split
CHUNK = 256  # showers per block of feature computation
LEVELS = ("low_level", "high_level")


@dataclass(frozen=True)
class CaloChallengeConfig:
    """Settings of the protocol; the CaloChallenge's value in brackets where ours differs.

    ``max_showers``: per sample (all); ``low_hidden``, ``high_hidden``: nodes per hidden layer
    of the low- and high-level networks (2048); ``low_layers``, ``high_layers``: hidden layers
    after the first (2); ``dropout`` (0, the same); ``lr`` (2e-4, the same);
    ``batch`` (1000); ``max_epochs`` (50, the same); ``patience``: epochs without a lower
    validation loss before stopping (none); ``max_seconds`` per classifier (none);
    ``cell_threshold_gev``: cells below it are set to 0 (0.5 keV visible); ``split``: training,
    validation, test fractions (the same); ``threads``: torch threads of the low-level
    classifier (None: the caller's; the high-level network, a small one, runs in one thread).
    """

    max_showers: int = 2_000
    low_hidden: int = 512
    low_layers: int = 2
    high_hidden: int = 64
    high_layers: int = 1
    dropout: float = 0.0
    lr: float = 2e-4
    batch: int = 100
    max_epochs: int = 50
    patience: int = 8
    max_seconds: float = 240.0
    cell_threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    threads: int | None = None

    def __post_init__(self) -> None:
        name = "CaloChallengeConfig."
        check_int(self.max_showers, name + "max_showers", MIN_SHOWERS, MAX_SHOWERS_PER_CALL)
        for level in ("low", "high"):
            check_int(getattr(self, f"{level}_hidden"), f"{name}{level}_hidden", 1, 65_536)
            check_int(getattr(self, f"{level}_layers"), f"{name}{level}_layers", 0, 16)
        if not 0 <= check_float(self.dropout, name + "dropout") < 1:
            raise CaloquantError(f"{name}dropout must be in [0, 1), got {self.dropout}")
        check_float(self.lr, name + "lr", positive=True)
        check_int(self.batch, name + "batch", 1, MAX_BATCH)
        check_int(self.max_epochs, name + "max_epochs", 1, 10_000)
        check_int(self.patience, name + "patience", 1, 10_000)
        check_seconds(self.max_seconds, name + "max_seconds")
        check_float(self.cell_threshold_gev, name + "cell_threshold_gev", minimum=0.0)
        fr = tuple(check_float(f, name + "split", positive=True) for f in self.split)
        if len(fr) != 3 or not math.isclose(sum(fr), 1.0, abs_tol=1e-9):
            raise CaloquantError(
                f"{name}split must be three positive fractions summing to 1, got {self.split}"
            )
        if self.threads is not None:
            check_int(self.threads, name + "threads", 1, MAX_THREADS)


@dataclass(frozen=True)
class ClassifierScore:
    """One classifier's numbers on the test split."""

    auc: float
    auc_err: float
    auc_uncalibrated: float
    jsd: float
    jsd_err: float
    n_inputs: int
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    best_epoch: int
    stopped_by: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaloChallengeResult:
    """Both classifiers of the protocol; ``to_dict()`` is ``classifier_calochallenge`` in the
    JSON of ``caloquant validate --classifier``."""

    low_level: ClassifierScore
    high_level: ClassifierScore
    n_ref: int
    n_cand: int
    n_per_sample: int
    energy_scale: float
    threads: int
    seed: int
    config: CaloChallengeConfig = field(default_factory=CaloChallengeConfig)

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["split"] = list(self.config.split)
        return {
            "protocol": "CaloChallenge 2022 classifier (evaluate.py cls-low, cls-high)",
            "low_level": self.low_level.to_dict(),
            "high_level": self.high_level.to_dict(),
            "n_ref": self.n_ref,
            "n_cand": self.n_cand,
            "n_per_sample": self.n_per_sample,
            "energy_scale": self.energy_scale,
            "threads": self.threads,
            "seed": self.seed,
            "config": cfg,
        }


class RowSubset:
    """Keeps, from a sample read in chunks, the rows of a seeded random subset of at most ``k``
    of its ``n`` rows (in file order), so that a streamed validation holds only those cells."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.keep = np.sort(rng.choice(n, size=min(n, k), replace=False))
        self._offset = 0
        self._showers: list[np.ndarray] = []
        self._energies: list[np.ndarray] = []

    def add(self, showers: np.ndarray, energies: np.ndarray) -> None:
        lo, hi = self._offset, self._offset + len(energies)
        idx = self.keep[(self.keep >= lo) & (self.keep < hi)] - lo
        if idx.size:
            self._showers.append(np.array(showers[idx], dtype=np.float32))
            self._energies.append(np.asarray(energies[idx], dtype=np.float64))
        self._offset = hi

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept showers and energies; the object keeps nothing afterwards."""
        if not self._showers:
            raise CaloquantError("no shower was kept for the CaloChallenge classifier")
        out = np.concatenate(self._showers), np.concatenate(self._energies)
        self._showers, self._energies = [], []
        return out


def low_level_inputs(showers: np.ndarray, energies: np.ndarray, scale: float) -> np.ndarray:
    """(n, 1 + cells): log10(E_inc / MeV), then each cell / (E_inc * ``scale``)."""
    n = len(energies)
    e = np.asarray(energies, dtype=np.float64)
    cells = showers.reshape(n, -1)
    out = np.empty((n, 1 + cells.shape[1]), np.float32)
    out[:, 0] = np.log10(e * MEV_PER_GEV)
    np.divide(cells, (e * scale)[:, None].astype(np.float32), out=out[:, 1:])
    return out


def high_level_inputs(
    showers: np.ndarray, energies: np.ndarray, scale: float, threshold: float
) -> np.ndarray:
    """(n, 2 + 8 Z): log10(E_inc), log10 E per layer, centre x, centre y, width x, width y,
    log10(E_tot), sparsity, centre r, width r per layer; energies in MeV divided by ``scale``,
    positions in cells from the grid centre (cells above ``threshold`` count as hit).
    Computed in blocks of ``CHUNK`` showers (bounded memory)."""
    if len(energies) > CHUNK:
        return np.concatenate(
            [
                high_level_inputs(showers[i : i + CHUNK], energies[i : i + CHUNK], scale, threshold)
                for i in range(0, len(energies), CHUNK)
            ]
        )
    n, X, Y, Z = showers.shape
    e = np.asarray(energies, dtype=np.float64)
    f = shower_features(showers, e, threshold)
    mev = MEV_PER_GEV / scale
    r = np.hypot(
        *np.meshgrid(np.arange(X) - (X - 1) / 2, np.arange(Y) - (Y - 1) / 2, indexing="ij")
    )
    layer_e = f["layer_e"]
    with np.errstate(invalid="ignore", divide="ignore"):
        r1 = np.einsum("nxyz,xy->nz", showers, r, dtype=np.float64) / layer_e
        r2 = np.einsum("nxyz,xy->nz", showers, r**2, dtype=np.float64) / layer_e
    empty = layer_e <= 0
    r1[empty] = 0.0
    wr = np.sqrt(np.maximum(r2 - r1**2, 0.0))
    wr[empty] = 0.0
    parts = [
        np.log10(e * MEV_PER_GEV)[:, None],
        np.log10(layer_e * mev + 1e-8),
        f["layer_cx"],
        f["layer_cy"],
        f["layer_wx"],
        f["layer_wy"],
        np.log10(f["ecal"] * mev + 1e-8)[:, None],
        1.0 - f["layer_hits"] / (X * Y),
        r1,
        wr,
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def high_level_names(n_layers: int) -> list[str]:
    """The column names of :func:`high_level_inputs` for ``n_layers`` layers, in its order."""
    per = ("logE", "cx", "cy", "wx", "wy")
    after = ("sparsity", "r", "wr")
    return (
        ["logEinc"]
        + [f"{k}_L{i}" for k in per for i in range(n_layers)]
        + ["logEtot"]
        + [f"{k}_L{i}" for k in after for i in range(n_layers)]
    )


def _network(n_in: int, hidden: int, n_layers: int, dropout: float) -> nn.Sequential:
    """The CaloChallenge DNN: a first layer, ``n_layers`` more hidden layers, one logit."""
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LeakyReLU(), nn.Dropout(dropout)]
    for _ in range(n_layers):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden, 1))
    return nn.Sequential(*layers)


def _splits(
    n: int, split: tuple[float, float, float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Row indices of training, validation and test for one class of ``n`` rows."""
    cut = (np.cumsum(split)[:2] * n).astype(int)
    return np.split(rng.permutation(n), cut)


def _score(
    xr: np.ndarray, xc: np.ndarray, cfg: CaloChallengeConfig, seed: int, level: str
) -> ClassifierScore:
    """Train and evaluate the ``level`` ("low" or "high") classifier on inputs (n, d) of ref
    (label 0) and cand (label 1); high-level inputs are standardised on the training split."""
    standardise = level == "high"
    rng = np.random.default_rng(seed)
    parts_r, parts_c = _splits(len(xr), cfg.split, rng), _splits(len(xc), cfg.split, rng)
    xn, ys = [], []
    for pr, pc in zip(parts_r, parts_c):
        order = rng.permutation(len(pr) + len(pc))  # rows < len(pr) are ref, the others cand
        x = np.empty((len(order), xr.shape[1]), np.float32)
        is_r = order < len(pr)
        x[is_r], x[~is_r] = xr[pr[order[is_r]]], xc[pc[order[~is_r] - len(pr)]]
        xn.append(x)
        ys.append((~is_r).astype(np.float32))
    if standardise:
        mu, sd = xn[0].mean(axis=0), xn[0].std(axis=0)
        sd[sd == 0] = 1.0
        xn = [(x - mu) / sd for x in xn]
    xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xn]
    torch.manual_seed(seed)
    net = _network(
        xr.shape[1], getattr(cfg, f"{level}_hidden"), getattr(cfg, f"{level}_layers"), cfg.dropout
    )
    log: TrainLog = train_early_stopping(
        net,
        torch.optim.Adam(net.parameters(), lr=cfg.lr),
        xs[0],
        torch.from_numpy(ys[0]),
        xs[1],
        torch.from_numpy(ys[1]),
        batch=cfg.batch,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        gen=torch.Generator().manual_seed(seed),
        max_seconds=cfg.max_seconds,
        stop_when_separated=True,
    )
    p_va, p_te = predict(net, xs[1]), predict(net, xs[2])
    y_te = ys[2]
    p_cal = isotonic_calibrate(p_va, ys[1], p_te)
    auc = float(roc_auc_score(y_te, p_cal))
    loss = log_loss(p_cal, y_te)
    n_pos, n_neg = int(y_te.sum()), int((1 - y_te).sum())
    return ClassifierScore(
        auc=auc,
        auc_err=auc_error(auc, n_pos, n_neg),
        auc_uncalibrated=float(roc_auc_score(y_te, p_te)),
        jsd=float((math.log(2) - loss.mean()) / math.log(2)),
        jsd_err=float(loss.std(ddof=1) / math.sqrt(len(loss)) / math.log(2)),
        n_inputs=int(xr.shape[1]),
        n_train=len(ys[0]),
        n_val=len(ys[1]),
        n_test=len(y_te),
        epochs=log.epochs,
        best_epoch=log.best_epoch,
        stopped_by=log.stopped_by,
        seconds=round(log.seconds, 2),
    )


def _check_sample(s: Any, e: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    s, e = np.asarray(s, dtype=np.float32), np.asarray(e, dtype=np.float64).reshape(-1)
    if s.ndim != 4 or s.shape[0] != e.shape[0]:
        raise CaloquantError(
            f"{name}: showers {s.shape} and energies {e.shape} do not form a sample (N, X, Y, Z)"
        )
    if not (np.isfinite(e).all() and (e > 0).all()):
        raise CaloquantError(f"{name}: incident energies must be finite and > 0 GeV")
    if not np.isfinite(s).all():
        raise CaloquantError(f"{name}: showers hold NaN or infinite cells")
    return s, e


def calochallenge_test(
    ref: tuple[np.ndarray, np.ndarray],
    cand: tuple[np.ndarray, np.ndarray],
    config: CaloChallengeConfig | None = None,
    seed: int = 0,
) -> CaloChallengeResult:
    """Run the low- and high-level classifiers of the CaloChallenge protocol on ``ref`` and
    ``cand``, each (showers (N, X, Y, Z) GeV, incident energies (N,) GeV), on at most
    ``config.max_showers`` showers of each (equal numbers, a seeded random subset). Both
    classifiers are tested on the same showers."""
    cfg = CaloChallengeConfig() if config is None else config
    if not isinstance(cfg, CaloChallengeConfig):
        raise CaloquantError(f"config must be a CaloChallengeConfig, got {type(cfg).__name__}")
    seed = check_seed(seed)
    sr, er = _check_sample(*ref, "REF")
    sc, ec = _check_sample(*cand, "CAND")
    if sr.shape[1:] != sc.shape[1:]:
        raise CaloquantError(f"grids differ: REF {sr.shape[1:]} vs CAND {sc.shape[1:]}")
    n = min(len(er), len(ec), cfg.max_showers)
    if n < MIN_SHOWERS:
        raise CaloquantError(
            f"the CaloChallenge classifier needs at least {MIN_SHOWERS} showers per sample, "
            f"got {min(len(er), len(ec))}"
        )
    rng = np.random.default_rng(seed)
    ir, ic = rng.permutation(len(er))[:n], rng.permutation(len(ec))[:n]
    sr, sc, er, ec = sr[ir], sc[ic], er[ir], ec[ic]  # copies: thresholded in place
    sr[sr < cfg.cell_threshold_gev] = 0.0
    sc[sc < cfg.cell_threshold_gev] = 0.0
    sf = sr.reshape(n, -1).sum(axis=1, dtype=np.float64) / er
    scale = float(sf.mean())
    if not scale > 0:
        raise CaloquantError("REF: the showers hold no energy above the cell threshold")
    hl_r = high_level_inputs(sr, er, scale, cfg.cell_threshold_gev)
    hl_c = high_level_inputs(sc, ec, scale, cfg.cell_threshold_gev)
    with torch_threads(1):  # a network this small only loses time to a second thread
        high = _score(hl_r, hl_c, cfg, seed, "high")
    ll_r = low_level_inputs(sr, er, scale)
    del sr  # the showers' memory goes back before the cells are split for training
    ll_c = low_level_inputs(sc, ec, scale)
    del sc
    with torch_threads(cfg.threads):
        threads = torch.get_num_threads()
        low = _score(ll_r, ll_c, cfg, seed, "low")
    return CaloChallengeResult(
        low_level=low,
        high_level=high,
        n_ref=len(ref[1]),
        n_cand=len(cand[1]),
        n_per_sample=n,
        energy_scale=scale,
        threads=threads,
        seed=seed,
        config=cfg,
    )
