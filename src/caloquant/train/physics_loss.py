"""The physics term of the generator's loss (``--physics-loss W``): the batch means of a few
shower observables of the generated showers are pulled towards those of the real batch, drawn
at the same incident energies.

Why: the discriminator of the authors' recipe sees raw cells, where the core (GeV) outweighs the
keV cells that make most of Geant4's hits by six orders of magnitude, and its verdict does not
say which way a shower is wrong. Trained on Geant4 from the previous ``conv2d-g4``, the two-stage
model's showers came out 10-40 % too narrow with 5-50 % too few hits after 3-6 epochs
(docs/training.md). This term tells the generator directly, as the authors' own later 3DGAN
(svalleco/3Dgan, AngleArch3dGAN) added auxiliary outputs for the shower angle and for counts of
cells in bins of cell energy; their counts are hard thresholds without a gradient, so here they
are smooth.

The observables, per shower (cells in GeV, the grid's axes x, y, z):

* ``ln(1 + N_t)`` for t in :data:`THRESHOLDS_GEV`, N_t the number of cells above t: the cell
  spectrum, counted with a logistic step of width :data:`STEP_WIDTH` in ln(cell energy), so that
  a cell near a threshold has a gradient (a cell at exactly zero, below the generator's ReLU,
  has none: the counts move through the shared weights);
* the energy-weighted centre and width (square root of the second central moment) along each
  axis, in cells.

The term is the mean over observables of (mean_i(fake_i - real_i) / scale)^2: the generated
shower i has the incident energy of the real shower i, so the energy dependence of every
observable cancels in the pairs, and the batch-mean difference (and its linear trend in the
incident energy: a batch too wide at 100 GeV and too narrow at 500 GeV does not pass as right)
is measured in units of half the acceptance tolerance of issue 23 (:data:`SCALES`: 5 % in the
counts and the widths, 0.15 cell in the centres). Its floor for a perfect generator is the
sampling noise of the pairs (a few per cent of a unit at batch 32). The epoch selection and the
acceptance table measure the same kind of quantities on held-out data; the CaloChallenge
classifier, which sees every cell, is the check that the showers did not learn the observables
alone.
"""

from __future__ import annotations

import torch

# cells above 1 keV (the Geant4 data's cut: the hit count of the acceptance), then per decade
THRESHOLDS_GEV = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
STEP_WIDTH = 0.5  # of the logistic step, in ln(cell energy / threshold)
# the unit of each observable's batch-mean difference: half the acceptance tolerance (the
# hit count within 10 %, the z centre within 0.3 layer, the widths within 10 %); the widths'
# relative to the real batch's mean width
SCALES = (*(0.05,) * len(THRESHOLDS_GEV), *(0.15, 0.05) * 3)
# the per-layer observables (``layers``): the log energy fraction of a layer (floored: a layer
# with no energy is ln(1e-4)), in units of 0.1; its centres in units of 0.15 cell; its widths
# in units of 10 % of the real batch's mean width of that layer (at least 0.1 cell)
FRACTION_FLOOR = 1e-4
LAYER_FRACTION_UNIT = 0.1
LAYER_CENTRE_UNIT = 0.15
LAYER_WIDTH_UNIT = 0.1
MIN_LAYER_WIDTH = 1.0
# the per-layer cell observables (``layer_cells``): the smooth log count of cells above 1 keV
# in units of 0.1 (a layer with 5 hit cells against 4: 0.18), the radial width in units of 10 %
# of the real batch's mean radial width of that layer (at least 0.1 cell)
LAYER_COUNT_UNIT = 0.1


def _soft_above(ln_cell: torch.Tensor, threshold_gev: float) -> torch.Tensor:
    """The logistic step of each cell above ``threshold_gev`` (``ln_cell``: ln of the cell
    energies in training units), 1/2 at the threshold, :data:`STEP_WIDTH` wide in ln energy."""
    return torch.sigmoid((ln_cell - torch.log(torch.tensor(threshold_gev))) / STEP_WIDTH)


def shower_observables(showers: torch.Tensor, cell_scale: float = 1.0) -> torch.Tensor:
    """(n, X, Y, Z) cells in training units (GeV x ``cell_scale``) -> (n, k) observables in
    float32: the smooth log cell counts above each threshold, then the centre and the width
    along x, y and z."""
    s = showers.float() / cell_scale
    ln_cell = torch.log(s.clamp_min(1e-30)).flatten(1)
    counts = [torch.log1p(_soft_above(ln_cell, t).sum(1)) for t in THRESHOLDS_GEV]
    pos = s.clamp_min(0.0)
    total = pos.flatten(1).sum(1).clamp_min(1e-20)
    moments = []
    for dims in ((2, 3), (1, 3), (1, 2)):  # the profile along x, y, z
        prof = pos.sum(dim=dims) / total.unsqueeze(1)
        idx = torch.arange(prof.shape[1], dtype=prof.dtype)
        mean = prof @ idx
        var = (prof * (idx.unsqueeze(0) - mean.unsqueeze(1)) ** 2).sum(1)
        moments += [mean, var.clamp_min(1e-12).sqrt()]
    return torch.stack(counts + moments, dim=1)


def layer_observables(showers: torch.Tensor, cell_scale: float = 1.0) -> torch.Tensor:
    """(n, X, Y, Z) cells in training units -> (n, 5 Z) float32: per layer (along z) the log
    energy fraction ln(E_z / E + FRACTION_FLOOR), then the transverse centres along x and y of
    each layer, then its widths along x and y (cells; 0 for an empty layer): the longitudinal
    profile and the lateral profile per depth that the CaloChallenge high-level classifier
    reads."""
    s = showers.float().clamp_min(0.0) / cell_scale
    layer_e = s.sum(dim=(1, 2))  # (n, Z)
    total = layer_e.sum(1, keepdim=True).clamp_min(1e-20)
    hit = layer_e > 0
    centres, widths = [], []
    for dim in (1, 2):  # x, then y
        prof = s.sum(dim=3 - dim)  # (n, X or Y, Z): the other transverse axis summed
        w = prof / layer_e.clamp_min(1e-20).unsqueeze(1)
        idx = torch.arange(prof.shape[1], dtype=prof.dtype).view(1, -1, 1)
        mean = (w * idx).sum(1, keepdim=True)
        var = (w * (idx - mean) ** 2).sum(1)
        centre = (idx.shape[1] - 1) / 2  # an empty layer: the grid centre
        centres.append(torch.where(hit, mean.squeeze(1), torch.full_like(var, centre)))
        widths.append(var.clamp_min(1e-12).sqrt() * hit)
    return torch.cat([torch.log(layer_e / total + FRACTION_FLOOR), *centres, *widths], dim=1)


def layer_cell_observables(showers: torch.Tensor, cell_scale: float = 1.0) -> torch.Tensor:
    """(n, X, Y, Z) cells in training units -> (n, 2 Z) float32: per layer the smooth log count
    ln(1 + N) of cells above 1 keV (the logistic step of :func:`shower_observables`), then the
    energy-weighted width of the cells' distance r from the grid's axis (the CaloChallenge
    high-level input ``wr``; 0 for an empty layer). Where the classifier told the stage-2 model
    from Geant4: its first two layers had 2 hit cells at a radial width of 0.7-0.9 cell where
    Geant4 has 5 at 2.7-2.8 (docs/training.md)."""
    s = showers.float() / cell_scale
    step = _soft_above(torch.log(s.clamp_min(1e-30)), THRESHOLDS_GEV[0])
    counts = torch.log1p(step.sum(dim=(1, 2)))
    pos = s.clamp_min(0.0)
    n_x, n_y = s.shape[1], s.shape[2]
    gx = torch.arange(n_x, dtype=s.dtype) - (n_x - 1) / 2
    gy = torch.arange(n_y, dtype=s.dtype) - (n_y - 1) / 2
    r = torch.sqrt(gx.view(-1, 1) ** 2 + gy.view(1, -1) ** 2)  # (X, Y)
    layer_e = pos.sum(dim=(1, 2))
    w = pos / layer_e.clamp_min(1e-20).view(-1, 1, 1, layer_e.shape[1])
    r1 = torch.einsum("nxyz,xy->nz", w, r)
    r2 = torch.einsum("nxyz,xy->nz", w, r**2)
    wr = (r2 - r1**2).clamp_min(1e-12).sqrt() * (layer_e > 0)
    return torch.cat([counts, wr], dim=1)


def physics_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    energies: torch.Tensor | None = None,
    cell_scale: float = 1.0,
    layers: bool = False,
    layer_cells: bool = False,
) -> torch.Tensor:
    """Mean squared batch-mean difference of the observables of generated and real showers,
    paired by incident energy (``fake[i]`` drawn at ``real[i]``'s), in units of :data:`SCALES`;
    with ``energies`` also the difference's linear trend in the incident energy (the covariance
    with the standardised energy), so that a shower too wide at one end of the range and too
    narrow at the other does not cancel. ``layers``: plus, weighing as much as the shower-wide
    observables, the per-layer ones of :func:`layer_observables` (units: 0.1 in the log energy
    fraction, 0.15 cell in the centres, 10 % of the real batch's mean width of the layer);
    ``layer_cells``: plus, weighing as much again, :func:`layer_cell_observables` (units: 0.1 in
    the log count, 10 % of the real batch's mean radial width). No gradient flows into the
    real showers."""
    parts = [(shower_observables, _shower_units)]
    parts += [(layer_observables, _layer_units)] if layers else []
    parts += [(layer_cell_observables, _layer_cell_units)] if layer_cells else []
    loss = torch.zeros(())
    for observables, units in parts:
        f = observables(fake, cell_scale)
        with torch.no_grad():
            r = observables(real, cell_scale)
        loss = loss + _pulls(f, r, units(r), energies)
    return loss


def _shower_units(r: torch.Tensor) -> torch.Tensor:
    """:data:`SCALES`, the widths' relative to the real batch's mean width."""
    scale = torch.tensor(SCALES)
    widths = slice(len(THRESHOLDS_GEV) + 1, None, 2)
    scale[widths] = scale[widths] * r[:, widths].mean(0)
    return scale


def _layer_units(r: torch.Tensor) -> torch.Tensor:
    z = r.shape[1] // 5
    scale = torch.full((5 * z,), LAYER_FRACTION_UNIT)
    scale[z : 3 * z] = LAYER_CENTRE_UNIT
    scale[3 * z :] = LAYER_WIDTH_UNIT * r[:, 3 * z :].mean(0).clamp_min(MIN_LAYER_WIDTH)
    return scale


def _layer_cell_units(r: torch.Tensor) -> torch.Tensor:
    z = r.shape[1] // 2
    scale = torch.full((2 * z,), LAYER_COUNT_UNIT)
    scale[z:] = LAYER_WIDTH_UNIT * r[:, z:].mean(0).clamp_min(MIN_LAYER_WIDTH)
    return scale


def _pulls(
    f: torch.Tensor, r: torch.Tensor, scale: torch.Tensor, energies: torch.Tensor | None
) -> torch.Tensor:
    d = (f - r) / scale
    terms = [d.mean(0) ** 2]
    if energies is not None and len(energies) > 2:
        e = energies.to(d.dtype)
        u = (e - e.mean()) / e.std().clamp_min(1e-12)
        terms.append((u.unsqueeze(1) * d).mean(0) ** 2)
    return torch.cat(terms).mean()
