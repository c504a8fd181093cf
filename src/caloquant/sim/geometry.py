"""Calorimeter geometry: a small declarative TOML file, validated, hashed.

A geometry is a stack of layers along z, each ``absorber`` then ``active`` then an optional
``gap`` slab, all spanning the same transverse square. The active slabs are read out as a
grid of ``cells_x`` x ``cells_y`` square pads of ``cell_size_mm``, centred on the beam axis; the
layer index is the third cell index. The file may carry a ``[calibration]`` table recording
what the layout reached against the 3DGAN data (informative only, not hashed).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError

# Material constants for the GFlash engine and for effective quantities (the Geant4 engine
# takes any NIST material from Geant4 itself). Z, A (g/mol), density (g/cm3), X0 (mm) from
# the PDG tables of atomic and nuclear properties; Ec (MeV) by the Rossi definition used by
# GFlash: Ec = 2.66 (X0[g/cm2] Z / A)^1.1.
MATERIALS: dict[str, dict[str, float]] = {
    "G4_W": {"Z": 74.0, "A": 183.84, "density": 19.30, "X0_mm": 3.504},
    "G4_Pb": {"Z": 82.0, "A": 207.2, "density": 11.35, "X0_mm": 5.613},
    "G4_Cu": {"Z": 29.0, "A": 63.546, "density": 8.96, "X0_mm": 14.36},
    "G4_Fe": {"Z": 26.0, "A": 55.845, "density": 7.874, "X0_mm": 17.57},
    "G4_Si": {"Z": 14.0, "A": 28.0855, "density": 2.329, "X0_mm": 93.70},
    "G4_AIR": {"Z": 7.3, "A": 14.7, "density": 0.0012048, "X0_mm": 303900.0},
    "G4_KAPTON": {"Z": 6.45, "A": 12.7, "density": 1.42, "X0_mm": 285.6},
    "G4_Galactic": {"Z": 1.0, "A": 1.008, "density": 1e-25, "X0_mm": 6.3e26},
}


@dataclass(frozen=True)
class Section:
    """``layers`` identical layers: absorber, active, then an optional gap."""

    layers: int
    absorber: str
    absorber_mm: float
    active: str
    active_mm: float
    gap: str = "G4_AIR"
    gap_mm: float = 0.0

    @property
    def layer_mm(self) -> float:
        return self.absorber_mm + self.active_mm + self.gap_mm


@dataclass(frozen=True)
class Geometry:
    """A validated calorimeter description (lengths in mm)."""

    name: str
    cell_size_mm: float
    cells_x: int
    cells_y: int
    sections: tuple[Section, ...]
    description: str = ""
    width_mm: float | None = None
    world_material: str = "G4_Galactic"
    calibration: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str = "<built-in>"

    # -- derived -----------------------------------------------------------------------
    @property
    def cells_z(self) -> int:
        return sum(s.layers for s in self.sections)

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.cells_x, self.cells_y, self.cells_z)

    @property
    def transverse_mm(self) -> float:
        """Side of every slab: the declared width, else exactly the pad grid."""
        return (
            float(self.width_mm)
            if self.width_mm
            else round(self.cell_size_mm * max(self.cells_x, self.cells_y), 9)
        )

    def layers(self) -> list[Section]:
        """One Section per layer, front to back."""
        return [s for s in self.sections for _ in range(s.layers)]

    @property
    def depth_mm(self) -> float:
        return sum(s.layers * s.layer_mm for s in self.sections)

    def spec(self) -> dict[str, Any]:
        """The simulated content (what the hash covers): no name, description or calibration."""
        return {
            "cell_size_mm": self.cell_size_mm,
            "cells_x": self.cells_x,
            "cells_y": self.cells_y,
            "width_mm": self.transverse_mm,
            "world_material": self.world_material,
            "sections": [asdict(s) for s in self.sections],
        }

    @property
    def hash(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of :meth:`spec`."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            **self.spec(),
            "hash": self.hash,
            "source": self.source,
        }


def _num(
    d: dict[str, Any],
    key: str,
    where: str,
    kind: type = float,
    positive: bool = True,
    default: Any = None,
) -> Any:
    if key not in d:
        if default is not None:
            return default
        raise CaloquantError(f"{where}: missing '{key}'")
    v = d[key]
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or (kind is int and not isinstance(v, int))
    ):
        raise CaloquantError(
            f"{where}: '{key}' must be {'an integer' if kind is int else 'a number'}, got {v!r}"
        )
    if positive and not v > 0:
        raise CaloquantError(f"{where}: '{key}' must be > 0, got {v}")
    if not positive and v < 0:
        raise CaloquantError(f"{where}: '{key}' must be >= 0, got {v}")
    return kind(v)


def _material(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or not v.startswith("G4_"):
        raise CaloquantError(
            f"{where}: '{key}' must be a Geant4 NIST material name like 'G4_W', got {v!r}"
        )
    return v


_TOP_KEYS = {
    "name",
    "description",
    "cell_size_mm",
    "cells_x",
    "cells_y",
    "width_mm",
    "world_material",
    "sections",
    "calibration",
}
_SECTION_KEYS = {"layers", "absorber", "absorber_mm", "active", "active_mm", "gap", "gap_mm"}


def parse_geometry(data: dict[str, Any], source: str = "<dict>") -> Geometry:
    """Validate a geometry mapping (as read from TOML) into a :class:`Geometry`."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise CaloquantError(
            f"{source}: unknown geometry key(s) {', '.join(sorted(unknown))}"
            + ("" if "sections" in data else " and no [[sections]] table")
        )
    raw = data.get("sections")
    if not isinstance(raw, list) or not raw:
        raise CaloquantError(f"{source}: needs at least one [[sections]] table")
    sections = []
    for i, s in enumerate(raw):
        where = f"{source} [[sections]] #{i + 1}"
        if not isinstance(s, dict):
            raise CaloquantError(f"{where}: must be a table")
        bad = set(s) - _SECTION_KEYS
        if bad:
            raise CaloquantError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        sections.append(
            Section(
                layers=_num(s, "layers", where, int),
                absorber=_material(s, "absorber", where),
                absorber_mm=_num(s, "absorber_mm", where, positive=False, default=0.0),
                active=_material(s, "active", where, "G4_Si"),
                active_mm=_num(s, "active_mm", where),
                gap=_material(s, "gap", where, "G4_AIR"),
                gap_mm=_num(s, "gap_mm", where, positive=False, default=0.0),
            )
        )
    cell = _num(data, "cell_size_mm", source)
    nx, ny = _num(data, "cells_x", source, int), _num(data, "cells_y", source, int)
    width = data.get("width_mm")
    if width is not None:
        width = _num(data, "width_mm", source)
        if width < cell * max(nx, ny) - 1e-9:
            raise CaloquantError(
                f"{source}: 'width_mm' {width} is smaller than the pad grid "
                f"({cell * max(nx, ny):g} mm)"
            )
    name = data.get("name", Path(source).stem)
    calib = data.get("calibration", {})
    if not isinstance(calib, dict):
        raise CaloquantError(f"{source}: [calibration] must be a table")
    return Geometry(
        name=str(name),
        cell_size_mm=cell,
        cells_x=nx,
        cells_y=ny,
        sections=tuple(sections),
        description=str(data.get("description", "")),
        width_mm=width,
        world_material=_material(data, "world_material", source, "G4_Galactic"),
        calibration=calib,
        source=source,
    )


def load_geometry(path: str | Path | None = None) -> Geometry:
    """Read a geometry TOML file; ``None`` gives the packaged default."""
    if path is None:
        text = resources.files("caloquant.sim").joinpath("data/default_geometry.toml").read_text()
        return parse_geometry(tomllib.loads(text), source="default_geometry.toml")
    p = Path(path)
    if p.is_dir():
        raise CaloquantError(f"--geometry {p}: is a folder, expected a geometry TOML file")
    if not p.is_file():
        raise CaloquantError(f"--geometry {p}: geometry file not found")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CaloquantError(f"{p}: malformed geometry file ({str(exc).splitlines()[0]})") from None
    return parse_geometry(data, source=str(p))


def effective_medium(geom: Geometry) -> dict[str, float]:
    """Mass-weighted Z, A, X0 (mm, of the mixture), Ec (MeV), Moliere radius (mm) of one mean
    layer, and the GFlash sampling quantities: Fs = X0_eff / layer thickness and
    e_hat = 1 / (1 + 0.007 (Z_passive - Z_active)) (Grindhammer & Peters, hep-ex/0001020)."""
    mass = {"Z": 0.0, "A": 0.0}
    inv_x0 = 0.0  # 1/X0 of the mixture, thickness-weighted (per mm)
    total_mm = total_g = 0.0
    z_pass = z_act = 0.0
    w_pass = w_act = 0.0
    for sec in geom.sections:
        for mat, t, role in (
            (sec.absorber, sec.absorber_mm, "p"),
            (sec.active, sec.active_mm, "a"),
            (sec.gap, sec.gap_mm, "p"),
        ):
            if t <= 0:
                continue
            if mat not in MATERIALS:
                raise CaloquantError(
                    f"material '{mat}' has no constants for the GFlash engine "
                    f"(known: {', '.join(sorted(MATERIALS))})"
                )
            m = MATERIALS[mat]
            g = m["density"] * t * sec.layers
            mass["Z"] += m["Z"] * g
            mass["A"] += m["A"] * g
            total_g += g
            total_mm += t * sec.layers
            inv_x0 += t * sec.layers / m["X0_mm"]
            if role == "p":
                z_pass += m["Z"] * g
                w_pass += g
            else:
                z_act += m["Z"] * g
                w_act += g
    z, a = mass["Z"] / total_g, mass["A"] / total_g
    x0 = total_mm / inv_x0
    rho = total_g / total_mm  # mean density (g/cm3), thickness-weighted
    ec = 2.66 * ((x0 / 10.0 * rho) * z / a) ** 1.1
    rm = x0 * 21.2 / ec
    layer_mm = total_mm / geom.cells_z
    zp = z_pass / w_pass if w_pass else z
    za = z_act / w_act if w_act else z
    return {
        "Z": z,
        "A": a,
        "density": rho,
        "X0_mm": x0,
        "Ec_MeV": ec,
        "RM_mm": rm,
        "layer_mm": layer_mm,
        "Fs": x0 / layer_mm,
        "e_hat": 1.0 / (1.0 + 0.007 * (zp - za)),
        "Z_passive": zp,
        "Z_active": za,
    }
