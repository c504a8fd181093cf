"""The compiled Geant4 helper: found, built once per user into a cache, loaded.

The helper (``g4helper/cq_g4helper.cc``) is compiled with the system C++ compiler against
Geant4 headers matching the geant4-pybind wheel, into
``~/.cache/caloquant/g4helper/<geant4 version>-<source hash>/`` (``CALOQUANT_CACHE`` moves the
cache). A file lock keeps parallel workers from compiling at the same time; the library is
written under a temporary name and renamed, so a half-built file is never loaded. Once built
it is reused without headers or compiler. Headers are looked up in this order:
``geant4-config --cflags``, ``$CALOQUANT_G4_INCLUDE``, ``../shared/geant4/include`` next to the
repository (or ``$CALOQUANT_SHARED/geant4/include``).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

from caloquant.errors import CaloquantError
from caloquant.fileio import cache_root

SOURCES = ("cq_g4helper.cc",)
REPO = Path(__file__).resolve().parents[3]


def pybind_version() -> str | None:
    try:
        return metadata.version("geant4_pybind")
    except metadata.PackageNotFoundError:
        return None


def prepare_environment() -> Path:
    """Environment for a data-free Geant4 session, set before geant4_pybind is imported.

    ``GEANT4_DATA_DIR`` switches off the wheel's interactive data download; ``G4NuclideTable``
    only needs ``$G4ENSDFSTATEDATA/ENSDFSTATE.dat`` to exist, so an empty file is made. A user's
    own settings (real data sets) are left alone.
    """
    d = cache_root() / "g4data"
    d.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GEANT4_DATA_DIR", str(d))
    if "G4ENSDFSTATEDATA" not in os.environ:
        ens = d / "ENSDFSTATE"
        ens.mkdir(exist_ok=True)
        (ens / "ENSDFSTATE.dat").touch()
        os.environ["G4ENSDFSTATEDATA"] = str(ens)
    return d


def standard_data_missing() -> list[str]:
    """The Geant4 data-set variables that the standard EM physics needs and that are unset or
    empty."""
    missing = []
    for var in ("G4LEDATA", "G4ENSDFSTATEDATA"):
        v = os.environ.get(var)
        if (
            not v
            or not Path(v).is_dir()
            or (var == "G4LEDATA" and not (Path(v) / "brem_SB").is_dir())
        ):
            missing.append(var)
    return missing


def geant4_version() -> str:
    """Geant4 version of the installed bindings, e.g. '11.4.1', read without importing them."""
    v = pybind_version()
    if v is None:
        raise CaloquantError("the Geant4 engine needs geant4-pybind: pip install 'caloquant[sim]'")
    # geant4-pybind 0.1.3 wraps Geant4 11.4.p01 (G4VERSION_NUMBER 1141); other versions are
    # keyed by their own version string, so a cache never mixes two builds.
    return {"0.1.3": "11.4.1"}.get(v, f"pybind{v}")


def source_text() -> bytes:
    root = resources.files("caloquant.sim").joinpath("g4helper")
    return b"".join(root.joinpath(s).read_bytes() for s in SOURCES)


def source_hash() -> str:
    return hashlib.sha256(source_text()).hexdigest()[:12]


def helper_dir() -> Path:
    return cache_root() / "g4helper" / f"{geant4_version()}-{source_hash()}"


def _has_headers(d: Path) -> Path | None:
    for cand in (d, d / "Geant4"):
        if (cand / "G4Version.hh").is_file():
            return cand
    return None


def find_headers() -> tuple[Path, str]:
    """The Geant4 include directory and how it was found, or a one-line error saying what to set."""
    exe = shutil.which("geant4-config")
    if exe:
        try:
            flags = subprocess.run(
                [exe, "--cflags"], capture_output=True, text=True, timeout=30
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            flags = []
        for f in flags:
            if f.startswith("-I") and (h := _has_headers(Path(f[2:]))):
                return h, "geant4-config"
    env = os.environ.get("CALOQUANT_G4_INCLUDE")
    if env:
        h = _has_headers(Path(env))
        if h is None:
            raise CaloquantError(
                f"CALOQUANT_G4_INCLUDE={env} holds no Geant4 headers (G4Version.hh not found)"
            )
        return h, "CALOQUANT_G4_INCLUDE"
    shared = (
        Path(os.environ["CALOQUANT_SHARED"])
        if os.environ.get("CALOQUANT_SHARED")
        else REPO.parent / "shared"
    )
    h = _has_headers(shared / "geant4" / "include")
    if h is not None:
        return h, str(shared / "geant4" / "include")
    raise CaloquantError(
        "Geant4 headers not found: install Geant4 (geant4-config on PATH) or set "
        "CALOQUANT_G4_INCLUDE to a Geant4 include directory"
    )


def find_compiler() -> str:
    cxx = (
        os.environ.get("CXX")
        or shutil.which("g++")
        or shutil.which("c++")
        or shutil.which("clang++")
    )
    if not cxx or not (shutil.which(cxx) or Path(cxx).is_file()):
        raise CaloquantError(
            "no C++ compiler found for the Geant4 helper: install g++ (e.g. apt-get install g++) "
            "or set CXX"
        )
    return cxx


def cached_helper() -> Path | None:
    """The built helper library if the cache already holds it (no headers or compiler needed)."""
    lib = helper_dir() / "libcq_g4helper.so"
    return lib if lib.is_file() else None


def build_helper(force: bool = False) -> Path:
    """Compile the helper into the cache (once; concurrent callers wait on a file lock)."""
    out = helper_dir()
    lib = out / "libcq_g4helper.so"
    if lib.is_file() and not force:
        return lib
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if lib.is_file() and not force:
                return lib  # another process built it while we waited
            inc, _ = find_headers()
            cxx = find_compiler()
            src = out / "src"
            src.mkdir(exist_ok=True)
            for s in SOURCES:
                (src / s).write_bytes(
                    resources.files("caloquant.sim").joinpath("g4helper").joinpath(s).read_bytes()
                )
            tmp = out / f".libcq_g4helper.{os.getpid()}.so"
            # Geant4 symbols stay undefined here: they resolve at load time from the bindings,
            # which Python has loaded with RTLD_GLOBAL.
            cmd = [
                cxx,
                "-O2",
                "-std=c++17",
                "-fPIC",
                "-shared",
                "-w",
                f"-I{inc}",
                "-o",
                str(tmp),
                *(str(src / s) for s in SOURCES),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                first = next(
                    (ln for ln in proc.stderr.splitlines() if "error" in ln),
                    proc.stderr.strip()[:200],
                )
                tmp.unlink(missing_ok=True)
                raise CaloquantError(
                    f"compiling the Geant4 helper failed ({cxx}): {first.strip()[:200]}"
                )
            (out / "build.txt").write_text(" ".join(cmd) + "\n")
            os.replace(tmp, lib)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return lib


def helper_status() -> dict[str, object]:
    """Can the Geant4 engine run here? (bindings, cached helper, headers, compiler)."""
    st: dict[str, object] = {"geant4_pybind": pybind_version()}
    if st["geant4_pybind"] is None:
        st["ready"] = False
        st["reason"] = "geant4-pybind not installed"
        return st
    st["cached_helper"] = str(cached_helper()) if cached_helper() else None
    try:
        st["headers"] = str(find_headers()[0])
    except CaloquantError as exc:
        st["headers"] = None
        st["reason"] = str(exc)
    try:
        st["compiler"] = find_compiler()
    except CaloquantError as exc:
        st["compiler"] = None
        st.setdefault("reason", str(exc))
    st["ready"] = bool(st["cached_helper"] or (st["headers"] and st["compiler"]))
    return st


@lru_cache(maxsize=1)
def import_geant4():  # noqa: ANN201 - returns the geant4_pybind module
    """Import geant4_pybind with global symbol visibility (what the helper links against) in a
    data-free environment; a one-line error when it is not installed."""
    prepare_environment()
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_GLOBAL | os.RTLD_NOW)
    try:
        import geant4_pybind as g4
    except ImportError as exc:
        raise CaloquantError(
            f"the Geant4 engine needs geant4-pybind (pip install 'caloquant[sim]'): {exc}"
        ) from None
    finally:
        sys.setdlopenflags(flags)
    return g4


@lru_cache(maxsize=1)
def load_geant4():  # noqa: ANN201 - returns (geant4_pybind module, ctypes library)
    """Import geant4_pybind with global symbol visibility, then load the (built) helper."""
    prepare_environment()
    lib_path = build_helper()
    g4 = import_geant4()
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError as exc:
        raise CaloquantError(
            f"cannot load the Geant4 helper {lib_path}: {str(exc).split(': ')[-1][:160]}"
        ) from None
    if lib.cq_abi_version() != 1:
        raise CaloquantError(
            f"{lib_path}: helper interface version {lib.cq_abi_version()}, expected 1"
        )
    lib.cq_construct_em.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.cq_attach_scoring.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_double]
    lib.cq_take_event.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.cq_take_event.restype = None
    lib.cq_reset_event.restype = None
    return g4, lib
