"""Classifier two-sample test (CaloChallenge style): can a small network tell cand from ref?

Inputs per shower: the high-level feature vector plus a coarse (5 x 5 pooled, log) view of
the shower, standardised on the training split. A 3-layer MLP is trained with early stopping
on a validation split; its output is calibrated with isotonic regression on that split.
On the held-out test split we report AUC (0.5 = indistinguishable; Hanley-McNeil error) and
JSD = (ln 2 - BCE) / ln 2 of the calibrated probabilities (0 = indistinguishable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from caloquant.errors import CaloquantError


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


def _hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> float:
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


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
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    best, best_state, bad, epoch = np.inf, None, 0, 0
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, max_epochs + 1):
        net.train()
        perm = torch.randperm(n_tr, generator=gen)
        for i in range(0, n_tr, 256):
            idx = perm[i : i + 256]
            opt.zero_grad()
            loss = loss_fn(net(xt[tr][idx]).squeeze(1), yt[tr][idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = loss_fn(net(xt[va]).squeeze(1), yt[va]).item()
        if vl < best - 1e-4:
            best, best_state, bad = vl, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= patience:
                break
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        p_va = torch.sigmoid(net(xt[va]).squeeze(1)).numpy()
        p_te = torch.sigmoid(net(xt[te]).squeeze(1)).numpy()
    y_va, y_te = y[va], y[te]
    auc = float(roc_auc_score(y_te, p_te))
    iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip").fit(p_va, y_va)
    pc = np.clip(iso.predict(p_te), 1e-6, 1 - 1e-6)
    bce = float(-np.mean(y_te * np.log(pc) + (1 - y_te) * np.log(1 - pc)))
    jsd = max(0.0, (np.log(2) - bce) / np.log(2))
    fpr, tpr, _ = roc_curve(y_te, p_te)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    n_pos, n_neg = int(y_te.sum()), int((1 - y_te).sum())
    return ClassifierResult(
        auc,
        _hanley_mcneil(auc, n_pos, n_neg),
        float(jsd),
        n_tr,
        len(y_te),
        epoch,
        fpr[keep].round(5).tolist(),
        tpr[keep].round(5).tolist(),
    )
