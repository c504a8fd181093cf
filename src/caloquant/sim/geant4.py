"""One Geant4 session per process: geometry, physics list, particle gun, event loop.

The run manager, geometry, physics list and user actions are Python objects of the
geant4-pybind bindings; the EM processes and the scoring come from the compiled helper
(see :mod:`caloquant.sim.helper`). A process holds at most one session (Geant4 allows one
run manager per process), so the engine always runs in worker processes.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.options import check_float
from caloquant.sim.geometry import Geometry

PARTICLES = ("e-", "e+", "gamma")
PHYSICS_LISTS = ("em-analytic", "standard")
# model choices of the data-free list (systematics): index passed to the helper
MSC_MODELS = ("urban", "wentzelvi")
CONVERSION_MODELS = ("bh5d", "pairrel")
COMPTON_MODELS = ("klein-nishina-compton", "klein-nishina-model")
N_SUMS = 5  # silicon in grid, silicon outside grid, passive, escaped (GeV), steps


@dataclass(frozen=True)
class Physics:
    """Physics configuration. ``em-analytic`` needs no Geant4 data sets; ``standard`` is
    G4EmStandardPhysics (option 0) and needs them (G4LEDATA, G4ENSDFSTATEDATA)."""

    list: str = "em-analytic"
    cut_mm: float = 0.7
    msc: str = "urban"
    conversion: str = "bh5d"
    compton: str = "klein-nishina-compton"
    lpm: bool = True

    def __post_init__(self) -> None:
        """The values alone, on construction; :meth:`check` adds what this machine needs."""
        if self.list not in PHYSICS_LISTS:
            raise CaloquantError(
                f"--physics must be one of {', '.join(PHYSICS_LISTS)}, got '{self.list}'"
            )
        object.__setattr__(
            self, "cut_mm", check_float(self.cut_mm, "--cut (production cut, mm)", positive=True)
        )
        for val, allowed, what in (
            (self.msc, MSC_MODELS, "msc model"),
            (self.conversion, CONVERSION_MODELS, "conversion model"),
            (self.compton, COMPTON_MODELS, "Compton model"),
        ):
            if val not in allowed:
                raise CaloquantError(f"{what} must be one of {', '.join(allowed)}, got '{val}'")

    def check(self) -> None:
        """Before a run: the standard list needs the Geant4 data sets."""
        if self.list == "standard":
            from caloquant.sim.helper import standard_data_missing

            missing = standard_data_missing()
            if missing:
                raise CaloquantError(
                    f"physics 'standard' needs the Geant4 data sets: set {', '.join(missing)} "
                    "(or use the data-free 'em-analytic')"
                )

    @property
    def label(self) -> str:
        if self.list == "standard":
            return "G4EmStandardPhysics"
        extra = [
            x
            for x, d in (
                (self.msc, "urban"),
                (self.conversion, "bh5d"),
                (self.compton, "klein-nishina-compton"),
            )
            if x != d
        ]
        if not self.lpm:
            extra.append("no-lpm")
        return "em-analytic" + (f"({','.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Gun:
    """Particle gun at the centre of the front face, along +z; optional Gaussian smearing of
    the position (mm, each transverse axis) and of the direction (mrad, polar angle per axis)."""

    particle: str = "e-"
    position_sigma_mm: float = 0.0
    angle_sigma_mrad: float = 0.0

    def __post_init__(self) -> None:
        if self.particle not in PARTICLES:
            raise CaloquantError(
                f"--particle must be one of {', '.join(PARTICLES)}, got '{self.particle}'"
            )
        for name, flag in (
            ("position_sigma_mm", "--smear-position (mm)"),
            ("angle_sigma_mrad", "--smear-angle (mrad)"),
        ):
            object.__setattr__(self, name, check_float(getattr(self, name), flag, minimum=0.0))

    def check(self) -> None:
        """Checked on construction; kept for callers of earlier releases."""


def nist_materials() -> frozenset[str]:
    """The material names Geant4's NIST manager builds (read from Geant4 itself, in this
    process: importing geant4-pybind starts no run manager)."""
    from caloquant.sim.helper import import_geant4

    g4 = import_geant4()
    return frozenset(str(m) for m in g4.G4NistManager.Instance().GetNistMaterialNames())


def check_materials(geom: Geometry) -> None:
    """Every material of ``geom`` is one Geant4 builds: named before any worker starts."""
    known = nist_materials()
    used = [("world_material", geom.world_material)] + [
        (f"[[sections]] #{i + 1} {role}", getattr(sec, role))
        for i, sec in enumerate(geom.sections)
        for role in ("absorber", "active", "gap")
    ]
    for where, name in used:
        if name not in known:
            near = sorted(k for k in known if k.lower().startswith(name.lower()[:4]))[:4]
            raise CaloquantError(
                f"{geom.source}: unknown Geant4 material '{name}' ({where}); "
                + (f"similar: {', '.join(near)}" if near else "Geant4 NIST names like G4_W")
            )


def shower_seeds(seed: int, index: np.ndarray) -> np.ndarray:
    """Per-shower seeds (uint32, 4 words each) from the run seed and the shower index, so a
    shower's content does not depend on how showers are split over workers or chunks."""
    out = np.empty((len(index), 4), dtype=np.uint32)
    for k, i in enumerate(np.asarray(index, dtype=np.int64)):
        out[k] = np.random.SeedSequence([seed, int(i)]).generate_state(4, dtype=np.uint32)
    out[out == 0] = 1  # CLHEP reads a seed list up to its first 0
    return out


class Session:
    """A Geant4 run manager with the calorimeter, the chosen physics and the gun."""

    def __init__(self, geom: Geometry, physics: Physics, gun: Gun, quiet: bool = True) -> None:
        from caloquant.sim.helper import load_geant4

        physics.check()
        gun.check()
        self.geom, self.physics, self.gun_cfg = geom, physics, gun
        g4, lib = load_geant4()
        self.g4, self.lib = g4, lib
        self.ncell = int(np.prod(geom.grid))
        self._rows: tuple[np.ndarray, np.ndarray] | None = None
        self._i = 0
        self._energies = np.zeros(0)
        self._seeds = np.zeros((0, 4), np.uint32)
        self._kin = np.zeros((0, 4))
        rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
        self.rm = rm
        ui = g4.G4UImanager.GetUIpointer()
        if quiet:
            for c in (
                "/control/verbose 0",
                "/run/verbose 0",
                "/event/verbose 0",
                "/tracking/verbose 0",
                "/process/verbose 0",
                "/process/em/verbose 0",
            ):
                ui.ApplyCommand(c)
        # order matters: Geant4 refuses user actions made before the physics list is set
        self.detector = _make_detector(g4, lib, geom)
        rm.SetUserInitialization(self.detector)
        self.physics_list = _make_physics(g4, lib, physics)
        rm.SetUserInitialization(self.physics_list)
        self.actions = _make_actions(g4, lib, self)
        rm.SetUserInitialization(self.actions)
        params = g4.G4EmParameters.Instance()
        params.SetLPM(physics.lpm)
        if quiet:
            params.SetVerbose(0)
        rm.Initialize()
        if self.detector.n_sensitive < 0:
            raise CaloquantError("Geant4 helper found no active volumes to score")

    # -- called from the user actions ------------------------------------------------
    def next_primary(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Seed Geant4 for the next shower and return (energy GeV, position mm, direction)."""
        i = self._i
        self.g4.HepRandom.setTheSeeds([int(s) for s in self._seeds[i]] + [0])
        dx, dy, ax, ay = self._kin[i]
        d = np.array([np.tan(ax), np.tan(ay), 1.0])
        return float(self._energies[i]), np.array([dx, dy]), d / np.linalg.norm(d)

    def end_event(self) -> None:
        assert self._rows is not None
        cells, sums = self._rows
        self.lib.cq_take_event(
            cells[self._i].ctypes.data_as(ctypes.c_void_p),
            sums[self._i].ctypes.data_as(ctypes.c_void_p),
        )
        self._i += 1

    # -- public ------------------------------------------------------------------------
    def run(self, energies: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Simulate one shower per energy (GeV) with the given per-shower seeds.

        Returns cells (n, X, Y, Z) float32 in GeV (silicon) and sums (n, 5): silicon in the
        grid, silicon outside the grid, passive material, energy carried out (GeV), steps.
        """
        n = len(energies)
        cells = np.zeros((n, self.ncell), dtype=np.float32)
        sums = np.zeros((n, N_SUMS), dtype=np.float64)
        self._rows, self._i = (cells, sums), 0
        self._energies = np.asarray(energies, dtype=np.float64)
        self._seeds = np.asarray(seeds, dtype=np.uint32)
        # smearing drawn from the shower's own seed, before Geant4 uses it
        kin = np.zeros((n, 4))
        if self.gun_cfg.position_sigma_mm > 0 or self.gun_cfg.angle_sigma_mrad > 0:
            for k in range(n):
                r = np.random.default_rng(self._seeds[k].astype(np.uint64))
                z = r.standard_normal(4)
                kin[k] = (
                    z[0] * self.gun_cfg.position_sigma_mm,
                    z[1] * self.gun_cfg.position_sigma_mm,
                    z[2] * self.gun_cfg.angle_sigma_mrad * 1e-3,
                    z[3] * self.gun_cfg.angle_sigma_mrad * 1e-3,
                )
        self._kin = kin
        self.lib.cq_reset_event()
        self.rm.BeamOn(n)
        if self._i != n:
            raise CaloquantError(f"Geant4 processed {self._i} of {n} events")
        return cells.reshape(n, *self.geom.grid), sums


def _make_detector(g4: Any, lib: Any, geom: Geometry) -> Any:
    class Detector(g4.G4VUserDetectorConstruction):
        def __init__(self) -> None:
            super().__init__()
            self.keep: list[Any] = []
            self.n_sensitive = -1

        def Construct(self) -> Any:  # noqa: N802 - Geant4 name
            nist = g4.G4NistManager.Instance()

            def mat(name: str) -> Any:
                m = nist.FindOrBuildMaterial(name)
                if m is None:
                    raise CaloquantError(
                        f"unknown Geant4 material '{name}' in geometry {geom.source}"
                    )
                return m

            half = 0.5 * geom.transverse_mm * g4.mm
            depth = geom.depth_mm * g4.mm
            world_s = g4.G4Box(
                "cq_world", 2 * half + 10 * g4.cm, 2 * half + 10 * g4.cm, depth + 20 * g4.cm
            )
            world_l = g4.G4LogicalVolume(world_s, mat(geom.world_material), "cq_world")
            world_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_l, "world", None, False, 0)
            self.keep += [world_s, world_l, world_p]
            z = 0.0
            for layer, sec in enumerate(geom.layers()):
                for role, material, t in (
                    ("passive_abs", sec.absorber, sec.absorber_mm),
                    ("active", sec.active, sec.active_mm),
                    ("passive_gap", sec.gap, sec.gap_mm),
                ):
                    if t <= 0:
                        continue
                    tt = t * g4.mm
                    name = f"cq_{role}_{layer}"
                    s = g4.G4Box(name, half, half, 0.5 * tt)
                    lv = g4.G4LogicalVolume(s, mat(material), name)
                    pv = g4.G4PVPlacement(
                        None, g4.G4ThreeVector(0, 0, z + 0.5 * tt), lv, name, world_l, False, layer
                    )
                    self.keep += [s, lv, pv]
                    z += tt
            return world_p

        def ConstructSDandField(self) -> None:  # noqa: N802 - Geant4 name
            x, y, zz = geom.grid
            self.n_sensitive = lib.cq_attach_scoring(x, y, zz, geom.cell_size_mm)

    return Detector()


def _make_physics(g4: Any, lib: Any, physics: Physics) -> Any:
    if physics.list == "standard":
        pl = g4.G4VModularPhysicsList()
        pl.RegisterPhysics(g4.G4EmStandardPhysics())
        pl.SetDefaultCutValue(physics.cut_mm * g4.mm)
        return pl

    class EmAnalytic(g4.G4VUserPhysicsList):
        def __init__(self) -> None:
            super().__init__()
            self.SetDefaultCutValue(physics.cut_mm * g4.mm)

        def ConstructParticle(self) -> None:  # noqa: N802
            g4.G4Electron.ElectronDefinition()
            g4.G4Positron.PositronDefinition()
            g4.G4Gamma.GammaDefinition()
            g4.G4Proton.ProtonDefinition()
            g4.G4GenericIon.GenericIonDefinition()  # G4IonTable aborts without it

        def ConstructProcess(self) -> None:  # noqa: N802
            lib.cq_construct_em(
                MSC_MODELS.index(physics.msc),
                CONVERSION_MODELS.index(physics.conversion),
                COMPTON_MODELS.index(physics.compton),
            )

        def SetCuts(self) -> None:  # noqa: N802
            self.SetCutsWithDefault()

    return EmAnalytic()


def _make_actions(g4: Any, lib: Any, ses: Session) -> Any:
    class Gun(g4.G4VUserPrimaryGeneratorAction):
        def __init__(self) -> None:
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.gun.SetParticleByName(ses.gun_cfg.particle)

        def GeneratePrimaries(self, event: Any) -> None:  # noqa: N802
            e, xy, d = ses.next_primary()
            self.gun.SetParticleEnergy(e * g4.GeV)
            self.gun.SetParticlePosition(
                g4.G4ThreeVector(float(xy[0]) * g4.mm, float(xy[1]) * g4.mm, -1.0 * g4.mm)
            )
            self.gun.SetParticleMomentumDirection(
                g4.G4ThreeVector(float(d[0]), float(d[1]), float(d[2]))
            )
            self.gun.GeneratePrimaryVertex(event)

    class Events(g4.G4UserEventAction):
        def EndOfEventAction(self, event: Any) -> None:  # noqa: N802
            ses.end_event()

    class Actions(g4.G4VUserActionInitialization):
        def Build(self) -> None:  # noqa: N802
            self.gun, self.events = Gun(), Events()  # kept alive on self
            self.SetUserAction(self.gun)
            self.SetUserAction(self.events)

    return Actions()


def redirect_output(path: str | None) -> None:
    """Send this worker's C-level stdout and stderr (Geant4's G4cout, G4cerr) to a file or
    /dev/null."""
    fd = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
