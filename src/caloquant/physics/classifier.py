"""Classifier two-sample test (CaloChallenge style): can a small network tell cand from ref?

Inputs per shower: the high-level feature vector plus a coarse (5 x 5 pooled, log) view of
the shower, standardised on the training split. A 3-layer MLP is trained with early stopping
on a validation split; its output is calibrated with isotonic regression on that split.
On the held-out test split we report AUC (0.5 = indistinguishable; Hanley-McNeil error) and
JSD = (ln 2 - BCE) / ln 2 of the calibrated probabilities (0 = indistinguishable).

The pieces shared with the CaloChallenge protocol (:mod:`caloquant.physics.calochallenge`)
are public here: :func:`auc_error`, :func:`isotonic_calibrate`, :func:`log_loss`,
:func:`train_early_stopping`, :func:`predict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from caloquant.errors import CaloquantError

# calibrated probabilities are kept within [P_CLIP, 1 - P_CLIP] (as the CaloChallenge's
# IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6))
P_CLIP = 1e-6


@dataclass
class ClassifierResult:
    auc: float
    auc_err: float
    jsd: float
    n_train: int
    n_test: int
    epochs: int
    fpr: list[float]
    tpr: list[float]

    def to_dict(self) -> dict:
        return {
            "auc": self.auc,
            "auc_err": self.auc_err,
            "jsd": self.jsd,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "epochs": self.epochs,
            "roc": {"fpr": self.fpr, "tpr": self.tpr},
        }


@dataclass(frozen=True)
class TrainLog:
    """How a training with early stopping went: epochs run, the epoch kept (lowest validation
    loss), why it stopped ("patience", "max_epochs", "max_seconds" or "separated": every
    validation example on its side of 0.5) and its wall time."""

    epochs: int
    best_epoch: int
    stopped_by: str
    seconds: float


def auc_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC from ``n_pos`` and ``n_neg`` test examples (Hanley and McNeil
    1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def isotonic_calibrate(p_val: np.ndarray, y_val: np.ndarray, p_test: np.ndarray) -> np.ndarray:
    """``p_test`` mapped by the isotonic regression of ``y_val`` on ``p_val``, clipped to
    [P_CLIP, 1 - P_CLIP]."""
    iso = IsotonicRegression(y_min=P_CLIP, y_max=1 - P_CLIP, out_of_bounds="clip")
    iso.fit(p_val, y_val)
    return np.clip(iso.predict(p_test), P_CLIP, 1 - P_CLIP)


def log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each example (nats); its mean is the BCE."""
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def predict(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Sigmoid output of ``net`` (one logit per row) in evaluation mode."""
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(x).squeeze(1)).numpy()


def train_early_stopping(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_va: torch.Tensor,
    y_va: torch.Tensor,
    *,
    batch: int,
    max_epochs: int,
    patience: int,
    gen: torch.Generator,
    max_seconds: float | None = None,
    stop_when_separated: bool = False,
) -> TrainLog:
    """Minimise the BCE (logits) on the training rows in shuffled mini-batches; after each epoch
    measure it on the validation rows; stop after ``patience`` epochs without an improvement
    of 1e-4, after ``max_epochs``, once ``max_seconds`` have passed, or (``stop_when_separated``,
    as the CaloChallenge at accuracy 1) when every validation row is classified right; load the
    weights of the best epoch into ``net``."""
    t0 = time.perf_counter()
    loss_fn = nn.BCEWithLogitsLoss()
    n_tr = len(y_tr)
    best, best_state, best_epoch, bad, epoch, stopped = np.inf, None, 0, 0, 0, "max_epochs"
    for epoch in range(1, max_epochs + 1):
        net.train()
        perm = torch.randperm(n_tr, generator=gen)
        for i in range(0, n_tr, batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(net(x_tr[idx]).squeeze(1), y_tr[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            logits = net(x_va).squeeze(1)
            vl = loss_fn(logits, y_va).item()
        if vl < best - 1e-4:
            best, best_epoch, bad = vl, epoch, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                stopped = "patience"
                break
        if stop_when_separated and bool(((logits > 0) == (y_va > 0.5)).all()):
            stopped = "separated"
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            stopped = "max_seconds" if epoch < max_epochs else stopped
            break
    if best_state is None:
        raise CaloquantError("the classifier's validation loss is not a number at any epoch")
    net.load_state_dict(best_state)
    return TrainLog(epoch, best_epoch, stopped, time.perf_counter() - t0)


def classifier_test(
    ref: np.ndarray,
    cand: np.ndarray,
    seed: int = 0,
    max_per_class: int = 10_000,
    max_epochs: int = 60,
    patience: int = 6,
) -> ClassifierResult:
    """Train ref (label 0) vs cand (label 1) on equal-sized samples; test on a held-out 20 %."""
    n = min(len(ref), len(cand), max_per_class)
    if n < 50:
        raise CaloquantError(f"classifier test needs at least 50 showers per sample, got {n}")
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [ref[rng.permutation(len(ref))[:n]], cand[rng.permutation(len(cand))[:n]]]
    ).astype(np.float32)
    y = np.concatenate([np.zeros(n, np.float32), np.ones(n, np.float32)])
    order = rng.permutation(2 * n)
    x, y = x[order], y[order]
    n_tr, n_va = int(0.6 * 2 * n), int(0.2 * 2 * n)
    tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, None)
    mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0)
    sd[sd == 0] = 1.0
    x = (x - mu) / sd

    torch.manual_seed(seed)
    d = x.shape[1]
    net = nn.Sequential(
        nn.Linear(d, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.2),
        nn.Linear(256, 128),
        nn.LeakyReLU(0.2),
        nn.Linear(128, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    log = train_early_stopping(
        net,
        opt,
        xt[tr],
        yt[tr],
        xt[va],
        yt[va],
        batch=256,
        max_epochs=max_epochs,
        patience=patience,
        gen=torch.Generator().manual_seed(seed),
    )
    p_va, p_te = predict(net, xt[va]), predict(net, xt[te])
    y_va, y_te = y[va], y[te]
    auc = float(roc_auc_score(y_te, p_te))
    bce = float(log_loss(isotonic_calibrate(p_va, y_va, p_te), y_te).mean())
    jsd = max(0.0, (np.log(2) - bce) / np.log(2))
    fpr, tpr, _ = roc_curve(y_te, p_te)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    n_pos, n_neg = int(y_te.sum()), int((1 - y_te).sum())
    return ClassifierResult(
        auc,
        auc_error(auc, n_pos, n_neg),
        float(jsd),
        n_tr,
        len(y_te),
        log.epochs,
        fpr[keep].round(5).tolist(),
        tpr[keep].round(5).tolist(),
    )
