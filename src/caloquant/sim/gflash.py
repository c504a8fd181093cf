"""GFlash: the Grindhammer-Peters parametrization of electromagnetic showers, vectorised.

For each shower (energy E, y = E / Ec) the longitudinal profile is a Gamma density in
t (radiation lengths of the effective medium) with per-shower, correlated log-normal
fluctuations of its maximum T and shape a; the sampling-calorimeter forms of the means,
widths and correlation are those of Grindhammer & Peters (hep-ex/0001020), as in Geant4's
GFlashSamplingShowerParameterisation (see physics.md section 4). The energy of each layer is
the Gamma integral over the layer's radiation lengths. Transversely, at the layer's relative
depth tau = t / T, the radial profile is a mixture of two f(r) = 2 r R^2 / (r^2 + R^2)^2 terms
(core Rc, tail Rt, weight p, in Moliere radii). That planar density integrates in closed form
over a rectangle, so each pad's share is exact; it is tabulated once against R and
interpolated. Visible (silicon) energy is the deposited energy times a sampling fraction.

Fluctuations of the cells replace GFlash's explicit spots: each cell receives a Poisson
number of spots of mean energy e_s, each with an exponentially distributed energy (a
compound Poisson sum), which gives a relative resolution c_S / sqrt(E) with
e_s = c_S^2 * sf / 2 and a continuous cell-energy spectrum. That per-cell draw is the hot
loop (15,625 cells per shower); it is compiled with numba because numpy's Poisson and Gamma
samplers are 5-10x too slow for 2,000 showers/s.

The free constants (sampling fraction, shifts of <ln T> and <ln a>, fluctuation scale, radial
scales, c_S) are fitted to the Geant4 engine (:func:`caloquant.sim.fit.fit_gflash`) and ship in
``data/gflash_constants.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
from scipy.special import gammainc

from caloquant.errors import CaloquantError
from caloquant.sim.geometry import MATERIALS, Geometry, effective_medium

# Neutral values: the published parametrization unchanged; `sf` and `stochastic` have no
# published value for this calorimeter and start from typical W/Si numbers.
NEUTRAL: dict[str, float] = {
    "sf": 0.024,  # silicon energy / deposited energy
    "sf_slope": 0.0,  # relative change of sf per unit of relative depth tau (transition effects)
    "ln_t_shift": 0.0,  # added to <ln T>
    "ln_a_shift": 0.0,  # added to <ln a>
    "sigma_scale": 1.0,  # multiplies s(ln T) and s(ln a)
    "rc_scale": 1.0,  # multiplies the core radius Rc
    "rt_scale": 1.0,  # multiplies the tail radius Rt
    "p_scale": 1.0,  # multiplies the core weight p (clamped to [0, 1])
    "stochastic": 0.17,  # c_S in GeV^0.5: relative resolution c_S / sqrt(E)
}
_R_GRID = np.geomspace(0.01, 200.0, 400)  # radii (in cells) of the transverse table


def shipped_constants() -> dict[str, Any]:
    """The fitted constants shipped with caloquant (with their provenance)."""
    p = resources.files("caloquant.sim").joinpath("data/gflash_constants.json")
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return {"constants": dict(NEUTRAL), "fitted": False}


def _quadrant_cdf(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Integral of R^2 / (pi (x^2 + y^2 + R^2)^2) over [0, x] x [0, y] (x, y >= 0).

    Antiderivative: (1/2pi) [x/sqrt(x^2+R^2) atan(y/sqrt(x^2+R^2)) +
                             y/sqrt(y^2+R^2) atan(x/sqrt(y^2+R^2))];
    it tends to 1/4 for x, y -> infinity (checked against numerical integration in the tests).
    """
    sx, sy = np.sqrt(x * x + r * r), np.sqrt(y * y + r * r)
    return (x / sx * np.arctan(y / sx) + y / sy * np.arctan(x / sy)) / (2 * np.pi)


def cell_fractions(r_cells: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Share of a centred f(r) = 2 r R^2/(r^2+R^2)^2 profile in each pad: (len(R), nx, ny)."""
    r = np.asarray(r_cells, dtype=np.float64)[:, None, None]
    ex = np.arange(nx + 1) - nx / 2.0  # pad edges in cell units, beam at 0
    ey = np.arange(ny + 1) - ny / 2.0

    def signed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sign(a) * np.sign(b) * _quadrant_cdf(np.abs(a), np.abs(b), r)

    F = signed(ex[None, :, None], ey[None, None, :])  # (R, nx+1, ny+1)
    return F[:, 1:, 1:] - F[:, :-1, 1:] - F[:, 1:, :-1] + F[:, :-1, :-1]


def _numba_kernel():  # noqa: ANN202 - compiled lazily so that importing caloquant.sim stays light
    from numba import njit

    @njit(cache=True, nogil=True)
    def fill(vis_layer, p, ic, wc, it, wt, table, e_s, seed, out, silicon, contained):
        """Cells of n showers: for each layer the expected pad energies are
        vis_layer * (p * share(Rc) + (1 - p) * share(Rt)) (shares interpolated in the table),
        then a compound Poisson draw: K ~ Poisson(mu / e_s) spots, each with an Exp(e_s) energy."""
        np.random.seed(seed)
        n, nz = vis_layer.shape
        nxy = table.shape[1]
        ny = out.shape[2]
        for s in range(n):
            tot = 0.0
            cont = 0.0
            for z in range(nz):
                v, pc = vis_layer[s, z], p[s, z]
                i0, w0, i1, w1 = ic[s, z], wc[s, z], it[s, z], wt[s, z]
                for c in range(nxy):
                    share = pc * (table[i0, c] * (1.0 - w0) + table[i0 + 1, c] * w0) + (
                        1.0 - pc
                    ) * (table[i1, c] * (1.0 - w1) + table[i1 + 1, c] * w1)
                    cont += share * v
                    lam = v * share / e_s
                    k = 0
                    if lam >= 30.0:
                        k = int(lam + np.sqrt(lam) * np.random.standard_normal() + 0.5)
                    elif lam > 0.0:
                        # inversion: walk up the Poisson CDF from P(0) = exp(-lam) (its series
                        # below 0.05, error < 3e-9), one uniform per cell
                        if lam < 0.05:
                            p0 = 1.0 - lam * (1.0 - lam * (0.5 - lam * (1.0 / 6.0 - lam / 24.0)))
                        else:
                            p0 = np.exp(-lam)
                        u = np.random.random()
                        cdf = p0
                        while u > cdf and k < 200:
                            k += 1
                            p0 *= lam / k
                            cdf += p0
                    e = 0.0
                    if k > 0 and k <= 12:
                        # sum of k Exp(e_s) spot energies = -e_s log(u_1 ... u_k)
                        prod = 1.0
                        for _ in range(k):
                            prod *= np.random.random()
                        e = -e_s * np.log(prod + 1e-300)
                    elif k > 12:
                        e = e_s * max(0.0, np.random.gamma(k, 1.0))
                    out[s, c // ny, c % ny, z] = e
                    tot += e
            silicon[s] = tot
            contained[s] = cont

    return fill


_KERNEL: Any = None


class GFlash:
    """GFlash showers in a :class:`Geometry` (cells in GeV of silicon energy)."""

    def __init__(
        self, geom: Geometry, constants: dict[str, float] | None = None, particle: str = "e-"
    ) -> None:
        if particle not in ("e-", "e+", "gamma"):
            raise CaloquantError(f"particle must be e-, e+ or gamma, got '{particle}'")
        c = dict(NEUTRAL)
        c.update(shipped_constants()["constants"] if constants is None else constants)
        unknown = set(c) - set(NEUTRAL)
        if unknown:
            raise CaloquantError(f"unknown GFlash constant(s): {', '.join(sorted(unknown))}")
        self.c = c
        self.geom = geom
        self.med = effective_medium(geom)
        # radiation lengths traversed at each layer boundary, slab by slab
        edges = [0.0]
        for sec in geom.layers():
            t = 0.0
            for mat, mm in (
                (sec.absorber, sec.absorber_mm),
                (sec.active, sec.active_mm),
                (sec.gap, sec.gap_mm),
            ):
                if mm > 0:
                    if mat not in MATERIALS:
                        raise CaloquantError(
                            f"material '{mat}' has no constants for the GFlash engine"
                        )
                    t += mm / MATERIALS[mat]["X0_mm"]
            edges.append(edges[-1] + t)
        self.t_edges = np.asarray(edges)
        self.t_mid = 0.5 * (self.t_edges[1:] + self.t_edges[:-1])
        nx, ny, _ = geom.grid
        self.table = cell_fractions(_R_GRID, nx, ny).reshape(len(_R_GRID), nx * ny)
        self._logr0, self._dlogr = np.log(_R_GRID[0]), np.log(_R_GRID[1] / _R_GRID[0])
        self.rm_cells = self.med["RM_mm"] / geom.cell_size_mm

    # -- longitudinal ----------------------------------------------------------------
    def longitudinal(
        self, e_gev: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-shower (T, a) of the Gamma profile, sampling-calorimeter form with fluctuations."""
        c, m = self.c, self.med
        lny = np.log(e_gev * 1000.0 / m["Ec_MeV"])
        t_hom = lny - 0.812
        a_hom = 0.81 + (0.458 + 2.26 / m["Z"]) * lny
        t_mean = (
            np.log(np.maximum(t_hom - 0.55 / m["Fs"] - 0.69 * (1 - m["e_hat"]), 1e-3))
            + c["ln_t_shift"]
        )
        a_mean = np.log(np.maximum(a_hom - 0.476 / m["Fs"], 1e-3)) + c["ln_a_shift"]
        s_t = np.minimum(1.0 / (-2.5 + 1.25 * lny), 0.5) * c["sigma_scale"]
        s_a = np.minimum(1.0 / (-0.82 + 0.79 * lny), 0.5) * c["sigma_scale"]
        rho = np.clip(0.784 - 0.023 * lny, -1.0, 1.0)
        z1, z2 = rng.standard_normal((2, len(e_gev)))
        u, v = np.sqrt((1 + rho) / 2) * z1, np.sqrt((1 - rho) / 2) * z2
        T = np.maximum(np.exp(t_mean + s_t * (u + v)), 1.0)
        a = np.maximum(np.exp(a_mean + s_a * (u - v)), 1.1)
        return T, a

    def layer_fractions(self, T: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deposited-energy fraction per layer (n, Z) and the fraction beyond the last layer."""
        b = (a - 1.0) / T
        cdf = gammainc(a[:, None], b[:, None] * self.t_edges[None, :])
        return np.diff(cdf, axis=1), 1.0 - cdf[:, -1]

    # -- transverse ------------------------------------------------------------------
    def radial(self, e_gev: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Core and tail radii (cells) and core weight at each layer: three (n, Z) arrays."""
        c, m = self.c, self.med
        Z, eh, fs = m["Z"], m["e_hat"], m["Fs"]
        lne = np.log(e_gev)[:, None]
        tau = self.t_mid[None, :] / T[:, None]
        rc = (0.0251 + 0.00319 * lne) + (0.1162 - 0.000381 * Z) * tau
        rt = (0.659 - 0.00309 * Z) * (
            np.exp(-2.59 * (tau - 0.645)) + np.exp((0.3585 + 0.0412 * lne) * (tau - 0.645))
        )
        p3 = 1.313 - 0.0686 * lne
        x = ((0.401 + 0.00187 * Z) - tau) / p3
        p = (2.632 - 0.00094 * Z) * np.exp(x - np.exp(x))
        rc = rc - 0.0203 * (1 - eh) + 0.0397 * np.exp(-tau) / fs
        rt = rt - 0.14 * (1 - eh) - 0.495 * np.exp(-tau) / fs
        p = p + (1 - eh) * (0.348 - 0.642 * np.exp(-((tau - 1) ** 2)) / fs)
        rc = np.maximum(rc * c["rc_scale"], 1e-3) * self.rm_cells
        rt = np.maximum(rt * c["rt_scale"], 1e-3) * self.rm_cells
        return rc, rt, np.clip(p * c["p_scale"], 0.0, 1.0)

    def _index(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Table row and weight for radii r (cells), linear in log R."""
        x = np.clip((np.log(r) - self._logr0) / self._dlogr, 0.0, len(_R_GRID) - 1.000001)
        i = x.astype(np.int64)
        return i, x - i

    def layer_inputs(
        self, e_gev: np.ndarray, T: np.ndarray, a: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per shower and layer: deposited energy (GeV), visible energy before the lateral
        cut, core weight and table positions of Rc and Rt; plus the energy beyond the last layer."""
        lf, beyond = self.layer_fractions(T, a)
        rc, rt, p = self.radial(e_gev, T)
        tau = self.t_mid[None, :] / T[:, None]
        sf = self.c["sf"] * np.maximum(1.0 + self.c["sf_slope"] * (tau - 1.0), 0.0)
        dep = e_gev[:, None] * lf
        ic, wc = self._index(rc)
        it, wt = self._index(rt)
        return {
            "dep": dep,
            "vis": dep * sf,
            "p": p,
            "ic": ic,
            "wc": wc,
            "it": it,
            "wt": wt,
            "sf": sf,
        }

    def mean_showers(self, e_gev: np.ndarray, T: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Expected silicon energy per cell (n, Z, X*Y) given (T, a) (no cell fluctuations)."""
        d = self.layer_inputs(e_gev, T, a)

        def share(i: np.ndarray, w: np.ndarray) -> np.ndarray:
            return self.table[i] * (1 - w[..., None]) + self.table[i + 1] * w[..., None]

        return d["vis"][..., None] * (
            d["p"][..., None] * share(d["ic"], d["wc"])
            + (1 - d["p"])[..., None] * share(d["it"], d["wt"])
        )

    def simulate(
        self, e_gev: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Showers (n, X, Y, Z) float32 GeV and sums (n, 5) like the Geant4 engine: silicon,
        silicon outside the grid (0), passive, escaped (beyond the last layer or the grid), 0."""
        global _KERNEL
        if _KERNEL is None:
            _KERNEL = _numba_kernel()
        e = np.asarray(e_gev, dtype=np.float64)
        n = len(e)
        nx, ny, nz = self.geom.grid
        cells = np.empty((n, nx, ny, nz), dtype=np.float32)
        T, a = self.longitudinal(e, rng)
        d = self.layer_inputs(e, T, a)
        e_s = self.c["stochastic"] ** 2 * self.c["sf"] / 2.0
        si, vis_in = np.zeros(n), np.zeros(n)
        _KERNEL(
            d["vis"],
            d["p"],
            d["ic"],
            d["wc"],
            d["it"],
            d["wt"],
            self.table,
            e_s,
            int(rng.integers(2**31 - 1)),
            cells,
            si,
            vis_in,
        )
        # deposited energy inside the grid: visible energy inside over the layer's sampling fraction
        with np.errstate(invalid="ignore", divide="ignore"):
            frac_in = np.where(d["vis"].sum(axis=1) > 0, vis_in / d["vis"].sum(axis=1), 0.0)
        deposited = d["dep"].sum(axis=1) * frac_in
        sums = np.zeros((n, 5))
        sums[:, 0] = si
        sums[:, 2] = np.maximum(deposited - si, 0.0)
        sums[:, 3] = e - deposited
        return cells, sums
