"""The artifact manifest (``manifest.json``), typed.

A :class:`Manifest` is what a quantize run decided and measured: the model, the precision
asked for and the one the engine executes, the physics against fp32 and its confirmation, the
speeds, the self-check, the tuner's frontier, and (once saved) the artifact's files with their
sha256. Code reads its attributes; the JSON document is :meth:`Manifest.to_dict`, and a
manifest also reads like that document (``m["physics"]``, ``m.get("qat")``) for code that
handles the JSON of artifacts of any version, where a key may be missing. Keys this version
does not know (a newer caloquant) are kept in ``extra`` and written back unchanged.

Nested blocks (``physics``, ``speed``, ``self_check``, ``frontier``...) stay JSON objects: their
contents are documented in docs/precision.md and read by the report stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError
from caloquant.models import ModelSpec

MANIFEST = "manifest.json"
TUNING_LOG = "tuning_log.json"
ARTIFACT_VERSION = 2  # 2: sha256 of every file, self-check canary, executed precision
_SAVED = ("files", "size_bytes", "sha256")  # written once the artifact is saved


@dataclass(frozen=True, kw_only=True)
class Manifest(Mapping[str, Any]):
    """Every field of ``manifest.json``, in the order written (see the module docstring);
    ``spec``, ``backend`` and ``precision`` are required."""

    caloquant_artifact: int = ARTIFACT_VERSION
    caloquant_version: str = ""
    source_model: str = ""
    spec: ModelSpec
    backend: str
    precision: str  # the precision of the model the artifact holds (fp32: the exact model)
    requested_precision: str = ""  # what was asked (--precision)
    executed_precision: str = ""
    recipe: str = ""
    backend_options: dict[str, Any] = field(default_factory=dict)
    float_precision: str = "fp32"
    f32_from: str | None = None  # a split float part: fp32 from this unit on
    layer_precisions: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    meets_tolerance: bool | None = None
    confirmation: dict[str, Any] | None = None
    physics: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    self_check: dict[str, Any] | None = None
    fp32_param_bytes: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    head_to_head: list[dict[str, Any]] = field(default_factory=list)
    rewrite: dict[str, Any] = field(default_factory=dict)
    qat: list[dict[str, Any]] | None = None
    frontier: list[dict[str, Any]] | None = None
    # the physics int8 search: what it admitted in int8 (whatever the race then chose), the
    # final race against the exact engine model, and precisions not tried (executed as another)
    int8_search: dict[str, Any] | None = None
    race: dict[str, Any] | None = None
    skipped_precisions: list[dict[str, str]] = field(default_factory=list)
    tuning_seconds: float | None = None
    # written when the artifact is saved
    files: list[str] = field(default_factory=list)
    size_bytes: int | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other caloquant versions

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (the artifact's files only once it is saved)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (f.name in _SAVED and not v):
                continue
            out[f.name] = v.to_dict() if isinstance(v, ModelSpec) else v
        return out | self.extra

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """A manifest of any version: ``spec`` and ``backend`` are required, the rest optional."""
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            spec = ModelSpec.from_dict(d["spec"])
            kw = {k: v for k, v in d.items() if k in known and k != "spec"}
            kw["backend"], kw["precision"] = str(d["backend"]), str(d.get("precision", "?"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CaloquantError(f"malformed manifest ({exc!r})") from None
        return cls(spec=spec, **kw, extra={k: v for k, v in d.items() if k not in known})

    def saved(self, files: list[str], size_bytes: int, sha256: dict[str, str]) -> Manifest:
        """This manifest with the artifact's files written (``QuantizeResult.save``)."""
        return replace(self, files=files, size_bytes=size_bytes, sha256=sha256)

    @property
    def int8_layers(self) -> int:
        return sum(v == "int8" for v in self.layer_precisions.values())

    # -- the JSON document's view (Mapping) -----------------------------------------------
    def __getitem__(self, key: str) -> Any:
        """One key of :meth:`to_dict`, read from its field alone (not the whole document)."""
        if key != "extra" and key in _FIELDS:
            v = getattr(self, key)
            if key in _SAVED and not v:
                raise KeyError(key)
            return v.to_dict() if isinstance(v, ModelSpec) else v
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


_FIELDS = frozenset(f.name for f in fields(Manifest))


def is_artifact(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).exists()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """An artifact's manifest, or a one-line error."""
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: model not found")
    mf = p / MANIFEST
    if not mf.exists():
        raise CaloquantError(f"{p}: not a caloquant artifact directory (no {MANIFEST})")
    try:
        doc = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaloquantError(f"{mf}: malformed manifest ({exc!r})") from None
    if not isinstance(doc, dict):
        raise CaloquantError(f"{mf}: malformed manifest (not a JSON object)")
    try:
        return Manifest.from_dict(doc)
    except CaloquantError as exc:
        raise CaloquantError(f"{mf}: {exc}") from None
