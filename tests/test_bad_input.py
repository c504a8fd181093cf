"""Bad input never ends in a traceback (issue 26): every command refuses a bad option value, a
missing or wrong kind of file and an output it cannot write with ONE line ``error: ...`` naming
the flag or file, exit code 2, before any work, leaving nothing behind.

The table runs each invocation in-process through the console script's entry point
(``caloquant.cli.main``) in one scratch folder, and compares the folder's full listing (hidden
files included: ``.part`` files, ``.OUT.h5.chunks-*`` folders) before and after. The cases are
ordered so that none does heavy work: each fails on its first bad value. A property-based test
(Hypothesis) feeds the option parsers and config objects values of every type and requires
success or a one-line ``CaloquantError``, never another exception.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from caloquant.errors import CaloquantError
from tests.helpers import toy_showers

HUGE = "99999999999999999999"


# ---- the scratch folder -----------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good.h5, a.h5, b.h5 (toy 3DGAN-layout files), an empty folder adir/, a folder full/
    with a file in it, and bad energies, noise, tolerance and geometry files."""
    from caloquant.data import write_showers

    d = tmp_path_factory.mktemp("bad_input")
    for name, seed in (("good.h5", 0), ("a.h5", 1), ("b.h5", 2)):
        write_showers(d / name, *toy_showers(30, seed))
    (d / "adir").mkdir()
    (d / "full").mkdir()
    (d / "full" / "notes.txt").write_text("mine")
    np.save(d / "en_str.npy", np.array(["a"] * 5))
    np.save(d / "en_nan.npy", np.array([200.0, np.nan, 200.0, 200.0, 200.0]))
    np.save(d / "en_neg.npy", np.array([200.0, -1.0, 200.0, 200.0, 200.0]))
    np.save(d / "en_big.npy", np.full(5, 2e4))
    np.save(d / "en_7.npy", np.full(7, 200.0))
    np.save(d / "noise_bad.npy", np.zeros((5, 3), dtype=np.float32))
    (d / "notnpy.npy").write_text("not numpy")
    (d / "t.json").write_text("[1, 2, 3]")
    (d / "t_bad.json").write_text("{not json")
    (d / "t_neg.json").write_text(json.dumps({"ecal_rel": -1}))
    (d / "t_str.json").write_text(json.dumps({"ecal_rel": "x"}))
    (d / "t_unknown.json").write_text(json.dumps({"foo": 1}))
    (d / "t_nan.json").write_text('{"ecal_rel": NaN}')
    from importlib import resources

    geom = resources.files("caloquant.sim").joinpath("data/default_geometry.toml").read_text()
    (d / "foo_geom.toml").write_text(geom.replace('"G4_W"', '"G4_FOO"'))
    (d / "bad_geom.toml").write_text("cells_x = [")
    (d / "nosec.toml").write_text("x = 1\n")
    np.save(d / "en_obj.npy", np.array([200.0, None, 200.0, 200.0, 200.0], dtype=object))
    import pickle

    import torch

    (d / "pickle.pt").write_bytes(pickle.dumps({"not": "a checkpoint"}))
    torch.save({"weights": torch.zeros(1000)}, d / "full.pt")
    data = (d / "full.pt").read_bytes()
    (d / "trunc.pt").write_bytes(data[: len(data) // 2])
    (d / "full.pt").unlink()
    (d / "badart").mkdir()
    (d / "badart" / "manifest.json").write_text("{not json")
    return d


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def invoke(*args: str) -> tuple[int, str, str]:
    """`caloquant ARGS...` as the console script runs it: exit code, stdout, stderr."""
    from caloquant.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["caloquant", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


# ---- the table --------------------------------------------------------------------------
S = ("sample", "--n", "5", "--energy", "200")  # + -o o.h5
SIM = ("simulate", "--engine", "gflash", "--n", "2", "--energy", "100")
GEN = ("generate", "--n", "10", "--energy-range", "100:500")  # + -o g
VAL = ("validate", "a.h5", "b.h5")
Q = ("quantize",)  # + -o q
RUN = ("run", "--quick")  # + -o r
BENCH = ("bench", "--model", "cern-3dgan")
TRAIN = ("train", "--data", "good.h5", "--model", "conv2d")  # + -o tr

CASES: list[tuple[str, tuple[str, ...], str]] = [
    # inspect, import-keras, models, usage errors
    ("inspect-missing", ("inspect", "missing.h5"), "not found"),
    ("inspect-empty-folder", ("inspect", "adir"), "adir"),
    ("inspect-json", ("inspect", "t.json"), "t.json"),
    ("inspect-markup-name", ("inspect", "[/x].h5"), "[/x].h5"),
    ("inspect-markup-name-2", ("inspect", "run[red].h5"), "run[red].h5"),
    ("inspect-empty-arg", ("inspect", ""), "empty"),
    ("keras-missing", ("import-keras", "missing.hdf5", "-o", "out.pt"), "missing.hdf5"),
    ("keras-shower-file", ("import-keras", "good.h5", "-o", "out.pt"), "keras"),
    ("keras-json", ("import-keras", "t.json", "-o", "out.pt"), "t.json"),
    ("keras-out-folder", ("import-keras", "good.h5", "-o", "adir"), "-o adir"),
    ("keras-out-under-file", ("import-keras", "good.h5", "-o", "good.h5/x.pt"), "is a file"),
    ("models-extra-arg", ("models", "extra"), "extra"),
    ("misspelled-command", ("smaple",), "smaple"),
    ("usage-n-abc", (*S[:1], "--n", "abc", "--energy", "200", "-o", "o.h5"), "--n"),
    ("usage-n-float", (*S[:1], "--n", "1.5", "--energy", "200", "-o", "o.h5"), "--n"),
    ("usage-seed-abc", (*S, "--seed", "abc", "-o", "o.h5"), "--seed"),
    ("usage-energy-abc", (*S[:3], "--energy", "abc", "-o", "o.h5"), "--energy"),
    ("usage-unknown-option", (*S, "--frobnicate", "-o", "o.h5"), "frobnicate"),
    # sample: output paths
    ("sample-out-folder", (*S, "-o", "adir"), "-o adir: is a folder"),
    ("sample-out-folder-slash", (*S, "-o", "adir/"), "folder"),
    ("sample-out-under-file", (*S, "-o", "good.h5/x.h5"), "is a file"),
    ("sample-out-deep-under-file", (*S, "-o", "good.h5/a/x.h5"), "is a file"),
    ("sample-out-empty", (*S, "-o", ""), "-o: empty"),
    ("sample-out-empty-eq", (*S, "--output="), "--output: empty"),
    ("sample-out-unwritable", (*S, "-o", "/proc/x.h5"), "cannot write"),
    ("sample-out-device", (*S, "-o", "/dev/null"), "not a regular file"),
    # sample: numbers
    ("sample-n-zero", (*S[:1], "--n", "0", "--energy", "200", "-o", "o.h5"), "--n"),
    ("sample-n-negative", (*S[:1], "--n", "-3", "--energy", "200", "-o", "o.h5"), "--n"),
    (
        "sample-n-1e14",
        (*S[:1], "--n", "100000000000000", "--energy", "200", "-o", "o.h5"),
        "1,000,000",
    ),
    ("sample-n-huge", (*S[:1], "--n", HUGE, "--energy", "200", "-o", "o.h5"), "generate"),
    ("sample-seed-negative", (*S, "--seed", "-1", "-o", "o.h5"), "--seed"),
    ("sample-seed-2-32", (*S, "--seed", str(2**32), "-o", "o.h5"), "--seed"),
    ("sample-seed-huge", (*S, "--seed", HUGE, "-o", "o.h5"), "--seed"),
    ("sample-energy-zero", (*S[:3], "--energy", "0", "-o", "o.h5"), "--energy"),
    ("sample-energy-negative", (*S[:3], "--energy", "-5", "-o", "o.h5"), "--energy"),
    ("sample-energy-nan", (*S[:3], "--energy", "nan", "-o", "o.h5"), "--energy"),
    ("sample-energy-inf", (*S[:3], "--energy", "inf", "-o", "o.h5"), "--energy"),
    ("sample-energy-above-10tev", (*S[:3], "--energy", "1e5", "-o", "o.h5"), "10 TeV"),
    (
        "sample-range-inf",
        (*S[:3], "--energy-range", "100:inf", "--allow-extrapolation", "-o", "o.h5"),
        "--energy-range",
    ),
    ("sample-range-negative", (*S[:3], "--energy-range", "-100:300", "-o", "o.h5"), "0 < LO"),
    ("sample-range-reversed", (*S[:3], "--energy-range", "300:100", "-o", "o.h5"), "LO < HI"),
    ("sample-range-empty", (*S[:3], "--energy-range", "100:100", "-o", "o.h5"), "LO < HI"),
    ("sample-range-zero", (*S[:3], "--energy-range", "0:100", "-o", "o.h5"), "0 < LO"),
    ("sample-range-nan", (*S[:3], "--energy-range", "nan:200", "-o", "o.h5"), "--energy-range"),
    ("sample-range-huge", (*S[:3], "--energy-range", "100:1e400", "-o", "o.h5"), "--energy-range"),
    ("sample-range-above-10tev", (*S[:3], "--energy-range", "100:20000", "-o", "o.h5"), "10 TeV"),
    ("sample-range-text", (*S[:3], "--energy-range", "abc", "-o", "o.h5"), "LO:HI"),
    ("sample-range-one-number", (*S[:3], "--energy-range", "100", "-o", "o.h5"), "LO:HI"),
    ("sample-range-three-numbers", (*S[:3], "--energy-range", "1:2:3", "-o", "o.h5"), "LO:HI"),
    ("sample-two-energy-options", (*S, "--energy-range", "100:200", "-o", "o.h5"), "exactly one"),
    ("sample-no-energy-option", (*S[:3], "-o", "o.h5"), "exactly one"),
    ("sample-energies-missing", (*S[:3], "--energies", "missing.npy", "-o", "o.h5"), "missing.npy"),
    ("sample-energies-folder", (*S[:3], "--energies", "adir", "-o", "o.h5"), "adir"),
    ("sample-energies-strings", (*S[:3], "--energies", "en_str.npy", "-o", "o.h5"), "numbers"),
    ("sample-energies-nan", (*S[:3], "--energies", "en_nan.npy", "-o", "o.h5"), "NaN"),
    ("sample-energies-negative", (*S[:3], "--energies", "en_neg.npy", "-o", "o.h5"), "> 0"),
    ("sample-energies-above-10tev", (*S[:3], "--energies", "en_big.npy", "-o", "o.h5"), "10 TeV"),
    ("sample-energies-count", (*S[:3], "--energies", "en_7.npy", "-o", "o.h5"), "7 values"),
    ("sample-energies-not-npy", (*S[:3], "--energies", "notnpy.npy", "-o", "o.h5"), "notnpy.npy"),
    ("sample-batch-zero", (*S, "--batch", "0", "-o", "o.h5"), "--batch"),
    ("sample-batch-huge", (*S, "--batch", "1000000000", "-o", "o.h5"), "--batch"),
    ("sample-threads-zero", (*S, "--threads", "0", "-o", "o.h5"), "--threads"),
    ("sample-threads-huge", (*S, "--threads", "1000000", "-o", "o.h5"), "--threads"),
    ("sample-format", (*S, "--format", "root", "-o", "o.h5"), "--format"),
    ("sample-compression", (*S, "--compression", "bogus", "-o", "o.h5"), "compression"),
    ("sample-compression-level", (*S, "--compression", "gzip:99", "-o", "o.h5"), "gzip"),
    ("sample-model-missing", (*S, "--model", "nosuch", "-o", "o.h5"), "nosuch"),
    ("sample-model-empty-folder", (*S, "--model", "adir", "-o", "o.h5"), "adir"),
    ("sample-model-shower-file", (*S, "--model", "good.h5", "-o", "o.h5"), "good.h5"),
    ("sample-noise-missing", (*S, "--noise", "missing.npy", "-o", "o.h5"), "missing.npy"),
    ("sample-outside-model-range", (*S[:3], "--energy", "50", "-o", "o.h5"), "valid range"),
    ("sample-noise-shape", (*S, "--noise", "noise_bad.npy", "-o", "o.h5"), "noise"),
    # simulate
    ("sim-out-folder", (*SIM, "-o", "adir"), "-o adir"),
    ("sim-out-under-file", (*SIM, "-o", "good.h5/x.h5"), "is a file"),
    (
        "sim-n-zero",
        ("simulate", "--engine", "gflash", "--n", "0", "--energy", "100", "-o", "o.h5"),
        "--n",
    ),
    (
        "sim-n-above-max",
        ("simulate", "--engine", "gflash", "--n", "10000000", "--energy", "100", "-o", "o.h5"),
        "generate",
    ),
    ("sim-seed-negative", (*SIM, "--seed", "-1", "-o", "o.h5"), "--seed"),
    ("sim-energy-above-10tev", (*SIM[:5], "--energy", "2e4", "-o", "o.h5"), "10 TeV"),
    ("sim-energy-nan", (*SIM[:5], "--energy", "nan", "-o", "o.h5"), "--energy"),
    ("sim-range-negative", (*SIM[:5], "--energy-range", "-1:300", "-o", "o.h5"), "0 < LO"),
    ("sim-range-inf", (*SIM[:5], "--energy-range", "100:inf", "-o", "o.h5"), "--energy-range"),
    ("sim-energies-strings", (*SIM[:5], "--energies", "en_str.npy", "-o", "o.h5"), "numbers"),
    (
        "sim-energies-count",
        ("simulate", "--engine", "gflash", "--n", "3", "--energies", "en_7.npy", "-o", "o.h5"),
        "7 values",
    ),
    (
        "sim-engine",
        ("simulate", "--engine", "fluka", "--n", "2", "--energy", "100", "-o", "o.h5"),
        "--engine",
    ),
    ("sim-geometry-missing", (*SIM, "--geometry", "missing.toml", "-o", "o.h5"), "missing.toml"),
    ("sim-geometry-folder", (*SIM, "--geometry", "adir", "-o", "o.h5"), "adir"),
    ("sim-geometry-malformed", (*SIM, "--geometry", "bad_geom.toml", "-o", "o.h5"), "malformed"),
    (
        "sim-geometry-g4-material",
        ("simulate", "--n", "2", "--energy", "100", "--geometry", "foo_geom.toml", "-o", "o.h5"),
        "G4_FOO",
    ),
    ("sim-geometry-gflash-material", (*SIM, "--geometry", "foo_geom.toml", "-o", "o.h5"), "G4_FOO"),
    ("sim-particle", (*SIM, "--particle", "proton", "-o", "o.h5"), "--particle"),
    (
        "sim-physics",
        ("simulate", "--n", "2", "--energy", "100", "--physics", "bogus", "-o", "o.h5"),
        "--physics",
    ),
    ("sim-gflash-physics", (*SIM, "--physics", "standard", "-o", "o.h5"), "--physics"),
    (
        "sim-cut-zero",
        ("simulate", "--n", "2", "--energy", "100", "--cut", "0", "-o", "o.h5"),
        "--cut",
    ),
    (
        "sim-cut-nan",
        ("simulate", "--n", "2", "--energy", "100", "--cut", "nan", "-o", "o.h5"),
        "--cut",
    ),
    (
        "sim-cut-inf",
        ("simulate", "--n", "2", "--energy", "100", "--cut", "inf", "-o", "o.h5"),
        "--cut",
    ),
    (
        "sim-smear-position-negative",
        ("simulate", "--n", "2", "--energy", "100", "--smear-position", "-1", "-o", "o.h5"),
        "--smear-position",
    ),
    (
        "sim-smear-position-nan",
        ("simulate", "--n", "2", "--energy", "100", "--smear-position", "nan", "-o", "o.h5"),
        "--smear-position",
    ),
    (
        "sim-smear-angle-inf",
        ("simulate", "--n", "2", "--energy", "100", "--smear-angle", "inf", "-o", "o.h5"),
        "--smear-angle",
    ),
    ("sim-gflash-smearing", (*SIM, "--smear-position", "1", "-o", "o.h5"), "smear"),
    ("sim-cell-cut-negative", (*SIM, "--cell-cut", "-1", "-o", "o.h5"), "--cell-cut"),
    ("sim-cell-cut-nan", (*SIM, "--cell-cut", "nan", "-o", "o.h5"), "--cell-cut"),
    ("sim-workers-zero", (*SIM, "--workers", "0", "-o", "o.h5"), "--workers"),
    ("sim-workers-huge", (*SIM, "--workers", "99999999999999999999", "-o", "o.h5"), "--workers"),
    ("sim-format", (*SIM, "--format", "root", "-o", "o.h5"), "--format"),
    # generate
    ("gen-out-file", (*GEN, "-o", "good.h5"), "is a file"),
    ("gen-out-under-file", (*GEN, "-o", "good.h5/g"), "is a file"),
    ("gen-out-not-empty", (*GEN, "-o", "full"), "not empty"),
    ("gen-resume-nothing", (*GEN, "--resume", "-o", "g"), "nothing to resume"),
    ("gen-n-zero", ("generate", "--n", "0", "--energy-range", "100:500", "-o", "g"), "--n"),
    ("gen-n-huge", ("generate", "--n", HUGE, "--energy-range", "100:500", "-o", "g"), "per run"),
    ("gen-seed-negative", (*GEN, "--seed", "-1", "-o", "g"), "--seed"),
    ("gen-workers-zero", (*GEN, "--workers", "0", "-o", "g"), "--workers"),
    ("gen-workers-huge", (*GEN, "--workers", "99999999999999999999", "-o", "g"), "--workers"),
    ("gen-retries-huge", (*GEN, "--retries", "99999999999999999999", "-o", "g"), "--retries"),
    ("gen-threads-zero", (*GEN, "--threads", "0", "-o", "g"), "--threads"),
    ("gen-batch-zero", (*GEN, "--batch", "0", "-o", "g"), "--batch"),
    ("gen-retries-negative", (*GEN, "--retries", "-1", "-o", "g"), "--retries"),
    ("gen-shard-size-zero", (*GEN, "--shard-size", "0", "-o", "g"), "--shard-size"),
    ("gen-shard-size-huge", (*GEN, "--shard-size", "10000000", "-o", "g"), "--shard-size"),
    ("gen-connect-timeout-zero", (*GEN, "--connect-timeout", "0", "-o", "g"), "--connect-timeout"),
    ("gen-connect-timeout-nan", (*GEN, "--connect-timeout", "nan", "-o", "g"), "--connect-timeout"),
    (
        "gen-range-reversed",
        ("generate", "--n", "10", "--energy-range", "500:100", "-o", "g"),
        "LO < HI",
    ),
    (
        "gen-range-inf",
        ("generate", "--n", "10", "--energy-range", "100:inf", "-o", "g"),
        "--energy-range",
    ),
    (
        "gen-energies-strings",
        ("generate", "--n", "5", "--energies", "en_str.npy", "-o", "g"),
        "numbers",
    ),
    (
        "gen-energies-count",
        ("generate", "--n", "10", "--energies", "en_7.npy", "-o", "g"),
        "7 values",
    ),
    (
        "gen-model-and-engine",
        (*GEN, "--model", "cern-3dgan", "--engine", "gflash", "-o", "g"),
        "exactly one",
    ),
    ("gen-engine", (*GEN, "--engine", "fluka", "-o", "g"), "--engine"),
    (
        "gen-scheduler-and-workers",
        (*GEN, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2", "-o", "g"),
        "--workers",
    ),
    ("gen-compression", (*GEN, "--compression", "snappy", "-o", "g"), "compression"),
    (
        "gen-too-many-shards",
        (
            "generate",
            "--n",
            "100000000",
            "--shard-size",
            "1",
            "--energy-range",
            "100:500",
            "-o",
            "g",
        ),
        "shards",
    ),
    # validate
    ("val-ref-missing", ("validate", "missing.h5", "b.h5"), "missing.h5"),
    ("val-cand-folder", ("validate", "a.h5", "adir"), "adir"),
    ("val-ref-json", ("validate", "t.json", "b.h5"), "t.json"),
    ("val-json-folder", (*VAL, "--json", "adir"), "--json adir"),
    ("val-json-under-file", (*VAL, "--json", "good.h5/x.json"), "is a file"),
    ("val-plots-file", (*VAL, "--plots", "good.h5"), "--plots good.h5"),
    ("val-seed-negative", (*VAL, "--seed", "-1"), "--seed"),
    ("val-threads-zero", (*VAL, "--threads", "0"), "--threads"),
    ("val-hit-threshold-negative", (*VAL, "--hit-threshold", "-1"), "--hit-threshold"),
    ("val-hit-threshold-nan", (*VAL, "--hit-threshold", "nan"), "--hit-threshold"),
    ("val-zero-threshold-inf", (*VAL, "--zero-threshold", "inf"), "--zero-threshold"),
    ("val-metric-points-text", (*VAL, "--metric-points", "abc"), "--metric-points"),
    ("val-metric-points-half-zero", (*VAL, "--metric-points", "110,150/0"), "--metric-points"),
    ("val-metric-points-nan", (*VAL, "--metric-points", "nan,150"), "--metric-points"),
    ("val-metric-points-negative", (*VAL, "--metric-points", "-5"), "--metric-points"),
    ("val-bins", (*VAL, "--bins", "bogus"), "bogus"),
    ("val-bins-width", (*VAL, "--bins", "width:-1"), "width"),
    # quantize
    ("q-out-file", (*Q, "-o", "good.h5"), "is a file"),
    ("q-out-under-file", (*Q, "-o", "good.h5/q"), "is a file"),
    ("q-out-not-artifact", (*Q, "-o", "full"), "not a caloquant artifact"),
    ("q-tolerance-list", (*Q, "--tolerance", "t.json", "-o", "q"), "JSON object"),
    ("q-tolerance-folder", (*Q, "--tolerance", "adir", "-o", "q"), "--tolerance adir"),
    ("q-tolerance-malformed", (*Q, "--tolerance", "t_bad.json", "-o", "q"), "malformed"),
    ("q-tolerance-negative", (*Q, "--tolerance", "t_neg.json", "-o", "q"), "ecal_rel"),
    ("q-tolerance-string", (*Q, "--tolerance", "t_str.json", "-o", "q"), "ecal_rel"),
    ("q-tolerance-unknown-field", (*Q, "--tolerance", "t_unknown.json", "-o", "q"), "foo"),
    ("q-tolerance-nan", (*Q, "--tolerance", "t_nan.json", "-o", "q"), "ecal_rel"),
    ("q-tolerance-nonsense", (*Q, "--tolerance", "nonsense", "-o", "q"), "preset"),
    ("q-precision", (*Q, "--precision", "int4", "-o", "q"), "precision"),
    ("q-backend", (*Q, "--backend", "tensorrt", "-o", "q"), "backend"),
    ("q-recipe", (*Q, "--recipe", "magic", "-o", "q"), "recipe"),
    ("q-calibration", (*Q, "--calibration", "mse", "-o", "q"), "calibration"),
    ("q-calib-n-zero", (*Q, "--calib-n", "0", "-o", "q"), "--calib-n"),
    ("q-calib-n-huge", (*Q, "--calib-n", HUGE, "-o", "q"), "--calib-n"),
    ("q-eval-n-one", (*Q, "--eval-n", "1", "-o", "q"), "--eval-n"),
    ("q-seed-negative", (*Q, "--seed", "-1", "-o", "q"), "--seed"),
    ("q-threads-zero", (*Q, "--threads", "0", "-o", "q"), "--threads"),
    ("q-batch-zero", (*Q, "--batch", "0", "-o", "q"), "--batch"),
    ("q-batch-huge", (*Q, "--batch", "1000000", "-o", "q"), "--batch"),
    ("q-qat-minutes-negative", (*Q, "--qat-minutes", "-1", "-o", "q"), "--qat-minutes"),
    ("q-qat-minutes-nan", (*Q, "--qat-minutes", "nan", "-o", "q"), "--qat-minutes"),
    ("q-model-missing", (*Q, "--model", "nosuch", "-o", "q"), "nosuch"),
    # run
    ("run-out-file", (*RUN, "-o", "good.h5"), "is a file"),
    ("run-out-under-file", (*RUN, "-o", "good.h5/r"), "is a file"),
    ("run-showers-zero", (*RUN, "--showers", "0", "-o", "r"), "--showers"),
    ("run-showers-19", (*RUN, "--showers", "19", "-o", "r"), "at least 20"),
    ("run-showers-huge", (*RUN, "--showers", HUGE, "-o", "r"), "--showers"),
    (
        "run-per-point-negative",
        (*RUN, "--showers", "20", "--per-point", "-1", "-o", "r"),
        "--per-point",
    ),
    ("run-per-point-huge", (*RUN, "--per-point", "1000000", "-o", "r"), "--per-point"),
    ("run-engine", (*RUN, "--engine", "fluka", "-o", "r"), "--engine"),
    ("run-model-missing", (*RUN, "--model", "nosuch", "-o", "r"), "nosuch"),
    ("run-model-empty-folder", (*RUN, "--model", "adir", "-o", "r"), "adir"),
    ("run-model-shower-file", (*RUN, "--model", "good.h5", "-o", "r"), "good.h5"),
    ("run-tune-budget-zero", (*RUN, "--tune-budget", "0", "-o", "r"), "--tune-budget"),
    ("run-tune-budget-nan", (*RUN, "--tune-budget", "nan", "-o", "r"), "--tune-budget"),
    ("run-tune-budget-inf", (*RUN, "--tune-budget", "inf", "-o", "r"), "--tune-budget"),
    (
        "run-bench-duration-negative",
        (*RUN, "--bench-duration", "-1", "-o", "r"),
        "--bench-duration",
    ),
    ("run-bench-duration-nan", (*RUN, "--bench-duration", "nan", "-o", "r"), "--bench-duration"),
    ("run-mc-budget-zero", (*RUN, "--mc-budget", "0", "-o", "r"), "--mc-budget"),
    ("run-mc-budget-inf", (*RUN, "--mc-budget", "inf", "-o", "r"), "--mc-budget"),
    ("run-threads-zero", (*RUN, "--threads", "0", "-o", "r"), "--threads"),
    ("run-seed-negative", (*RUN, "--seed", "-1", "-o", "r"), "--seed"),
    # bench
    ("bench-model-missing", ("bench", "--model", "nosuch"), "nosuch"),
    ("bench-model-backend", ("bench", "--model", "cern-3dgan@foo:int8"), "unknown backend"),
    ("bench-json-folder", (*BENCH, "--json", "adir"), "--json adir"),
    ("bench-json-under-file", (*BENCH, "--json", "good.h5/x.json"), "is a file"),
    ("bench-plots-file", (*BENCH, "--plots", "good.h5"), "--plots good.h5"),
    ("bench-threads-zero", (*BENCH, "--threads", "0"), "--threads"),
    ("bench-threads-text", (*BENCH, "--threads", "a,b"), "--threads"),
    ("bench-streams-negative", (*BENCH, "--streams", "-1"), "--streams"),
    ("bench-batch-empty", (*BENCH, "--batch", ","), "--batch"),
    ("bench-threads-negative", (*BENCH, "--threads", "-1"), "--threads"),
    ("bench-threads-float", (*BENCH, "--threads", "1.5"), "--threads"),
    ("bench-threads-huge", (*BENCH, "--threads", "1,1000000"), "--threads"),
    ("bench-threads-huge-int", (*BENCH, "--threads", HUGE), "--threads"),
    ("bench-streams-huge", (*BENCH, "--streams", "5000"), "--streams"),
    ("bench-batch-zero", (*BENCH, "--batch", "0,8"), "--batch"),
    ("bench-batch-huge", (*BENCH, "--batch", "1000000"), "--batch"),
    ("bench-duration-zero", (*BENCH, "--duration", "0"), "--duration"),
    ("bench-duration-negative", (*BENCH, "--duration", "-1"), "--duration"),
    ("bench-duration-nan", (*BENCH, "--duration", "nan"), "--duration"),
    ("bench-duration-inf", (*BENCH, "--duration", "inf"), "--duration"),
    ("bench-duration-huge", (*BENCH, "--duration", HUGE), "--duration"),
    ("bench-duration-text", (*BENCH, "--duration", "abc"), "--duration"),
    ("bench-rounds-zero", (*BENCH, "--rounds", "0"), "--rounds"),
    ("bench-rounds-negative", (*BENCH, "--rounds", "-2"), "--rounds"),
    ("bench-rounds-huge", (*BENCH, "--rounds", HUGE), "--rounds"),
    ("bench-rounds-text", (*BENCH, "--rounds", "x"), "--rounds"),
    ("bench-seed-negative", (*BENCH, "--seed", "-1"), "--seed"),
    ("bench-seed-2-32", (*BENCH, "--seed", str(2**32)), "--seed"),
    ("bench-seed-huge", (*BENCH, "--seed", HUGE), "--seed"),
    ("bench-seed-text", (*BENCH, "--seed", "abc"), "--seed"),
    ("bench-mc-engine", (*BENCH, "--mc", "fluka"), "fluka"),
    (
        "bench-mc-per-point-zero",
        (*BENCH, "--mc", "gflash", "--mc-per-point", "0"),
        "--mc-per-point",
    ),
    ("bench-mc-per-point-negative", (*BENCH, "--mc-per-point", "-1"), "--mc-per-point"),
    ("bench-mc-per-point-huge", (*BENCH, "--mc-per-point", HUGE), "--mc-per-point"),
    ("bench-mc-per-point-text", (*BENCH, "--mc-per-point", "few"), "--mc-per-point"),
    ("bench-mc-budget-zero", (*BENCH, "--mc", "gflash", "--mc-budget", "0"), "--mc-budget"),
    ("bench-mc-budget-negative", (*BENCH, "--mc-budget", "-5"), "--mc-budget"),
    ("bench-mc-budget-nan", (*BENCH, "--mc-budget", "nan"), "--mc-budget"),
    ("bench-mc-budget-inf", (*BENCH, "--mc-budget", "inf"), "--mc-budget"),
    ("bench-mc-budget-huge", (*BENCH, "--mc-budget", "1e9"), "--mc-budget"),
    ("bench-mc-budget-text", (*BENCH, "--mc-budget", "soon"), "--mc-budget"),
    ("bench-mc-command-alone", (*BENCH, "--mc-command", "true"), "--mc-showers"),
    ("bench-mc-showers-alone", (*BENCH, "--mc-showers", "5"), "--mc-command"),
    (
        "bench-mc-command-unbalanced",
        (*BENCH, "--mc-command", "'unclosed", "--mc-showers", "3"),
        "--mc-command",
    ),
    (
        "bench-mc-showers-zero",
        (*BENCH, "--mc-command", "true", "--mc-showers", "0"),
        "--mc-showers",
    ),
    (
        "bench-mc-showers-negative",
        (*BENCH, "--mc-command", "true", "--mc-showers", "-3"),
        "--mc-showers",
    ),
    (
        "bench-mc-showers-huge",
        (*BENCH, "--mc-command", "true", "--mc-showers", HUGE),
        "--mc-showers",
    ),
    (
        "bench-mc-showers-text",
        (*BENCH, "--mc-command", "true", "--mc-showers", "x"),
        "--mc-showers",
    ),
    # train
    ("train-out-file", (*TRAIN, "-o", "good.h5"), "is a file"),
    ("train-out-under-file", (*TRAIN, "-o", "good.h5/tr"), "is a file"),
    (
        "train-data-missing",
        ("train", "--data", "missing.h5", "--model", "conv2d", "-o", "tr"),
        "missing.h5",
    ),
    ("train-data-folder", ("train", "--data", "adir", "--model", "conv2d", "-o", "tr"), "adir"),
    (
        "train-data-no-match",
        ("train", "--data", "x*.nomatch", "--model", "conv2d", "-o", "tr"),
        "no file matches",
    ),
    ("train-data-twice", (*TRAIN, "--data", "good.h5", "-o", "tr"), "twice"),
    ("train-model", ("train", "--data", "good.h5", "--model", "foo", "-o", "tr"), "foo"),
    ("train-width-zero", (*TRAIN, "--width", "0", "-o", "tr"), "--width"),
    ("train-width-nan", (*TRAIN, "--width", "nan", "-o", "tr"), "--width"),
    ("train-width-inf", (*TRAIN, "--width", "inf", "-o", "tr"), "--width"),
    ("train-width-huge", (*TRAIN, "--width", "1000", "-o", "tr"), "--width"),
    (
        "train-width-gan3d",
        ("train", "--data", "good.h5", "--model", "gan3d", "--width", "2", "-o", "tr"),
        "--width",
    ),
    ("train-epochs-zero", (*TRAIN, "--epochs", "0", "-o", "tr"), "--epochs"),
    ("train-epochs-huge", (*TRAIN, "--epochs", HUGE, "-o", "tr"), "--epochs"),
    ("train-batch-one", (*TRAIN, "--batch", "1", "-o", "tr"), "--batch"),
    ("train-batch-huge", (*TRAIN, "--batch", "1000000", "-o", "tr"), "--batch"),
    ("train-precision", (*TRAIN, "--precision", "fp8", "-o", "tr"), "--precision"),
    ("train-seed-negative", (*TRAIN, "--seed", "-1", "-o", "tr"), "--seed"),
    ("train-val-fraction-zero", (*TRAIN, "--val-fraction", "0", "-o", "tr"), "--val-fraction"),
    ("train-val-fraction-one", (*TRAIN, "--val-fraction", "1", "-o", "tr"), "--val-fraction"),
    ("train-val-fraction-nan", (*TRAIN, "--val-fraction", "nan", "-o", "tr"), "--val-fraction"),
    ("train-val-n-one", (*TRAIN, "--val-n", "1", "-o", "tr"), "--val-n"),
    (
        "train-checkpoint-every-zero",
        (*TRAIN, "--checkpoint-every", "0", "-o", "tr"),
        "--checkpoint-every",
    ),
    (
        "train-shuffle-buffer-zero",
        (*TRAIN, "--shuffle-buffer", "0", "-o", "tr"),
        "--shuffle-buffer",
    ),
    ("train-threads-zero", (*TRAIN, "--threads", "0", "-o", "tr"), "--threads"),
    ("train-ecal-fit", (*TRAIN, "--ecal-fit", "magic", "-o", "tr"), "--ecal-fit"),
    ("train-ema-one", (*TRAIN, "--ema", "1", "-o", "tr"), "--ema"),
    ("train-ema-nan", (*TRAIN, "--ema", "nan", "-o", "tr"), "--ema"),
    ("train-d-input-power", (*TRAIN, "--d-input-power", "0", "-o", "tr"), "--d-input-power"),
    ("train-physics-loss", (*TRAIN, "--physics-loss", "-1", "-o", "tr"), "--physics-loss"),
    ("train-init-missing", (*TRAIN, "--init", "missing.pt", "-o", "tr"), "missing.pt"),
    ("train-energy-range", (*TRAIN, "--energy-range", "500:100", "-o", "tr"), "--energy-range"),
    ("train-val-data-missing", (*TRAIN, "--val-data", "missing.h5", "-o", "tr"), "missing.h5"),
    # review of issue 26: files that are not what they claim, unbounded numbers
    (
        "simulate-geometry-no-sections",
        (*SIM, "--geometry", "nosec.toml", "-o", "o.h5"),
        "[[sections]]",
    ),
    ("sample-energies-object", (*S[:3], "--energies", "en_obj.npy", "-o", "o.h5"), "en_obj.npy"),
    ("sample-model-pickle", (*S, "--model", "pickle.pt", "-o", "o.h5"), "pickle.pt"),
    ("sample-model-truncated", (*S, "--model", "trunc.pt", "-o", "o.h5"), "trunc.pt"),
    ("sample-model-bad-manifest", (*S, "--model", "badart", "-o", "o.h5"), "badart"),
    ("validate-bins-tiny-width", (*VAL, "--bins", "width:1e-9"), "--bins"),
    (
        "generate-connect-timeout-huge",
        (*GEN, "--connect-timeout", "1e300", "-o", "g"),
        "--connect-timeout",
    ),
    ("run-tune-budget-huge", (*RUN, "--tune-budget", "1e300", "-o", "r"), "--tune-budget"),
    (
        "generate-tls-no-certs",
        (*GEN, "--scheduler", "tls://127.0.0.1:9", "-o", "g"),
        "--tls-ca-file",
    ),
]


def test_the_table_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)  # unique ids
    commands = {c[1][0] for c in CASES}
    assert {
        "inspect",
        "import-keras",
        "models",
        "sample",
        "simulate",
        "generate",
        "validate",
        "quantize",
        "run",
        "bench",
        "train",
    } <= commands


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], needle: str
) -> None:
    monkeypatch.chdir(scratch)
    before = _listing(scratch)
    code, out, err = invoke(*args)
    text = out + err
    assert "Traceback" not in text, text
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, f"exit {code}:\n{text}"
    assert len(errors) == 1, f"expected one error: line, got:\n{text}"
    assert needle.lower() in errors[0].lower(), f"{needle!r} not in {errors[0]!r}"
    assert _listing(scratch) == before, f"left behind: {_listing(scratch) - before}"


# ---- property-based: the option parsers and config objects -------------------------------
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**32, 2**32 - 1, 10**20, 0.5, 1e300, -0.0]),
)
ANY = st.one_of(NUMBERS, st.text(max_size=12), st.booleans(), st.none())
RANGES = st.one_of(
    st.builds(lambda a, b: f"{a}:{b}", NUMBERS, NUMBERS),
    st.text(max_size=15),
    st.tuples(ANY, ANY),
    ANY,
)


def _one_line_or_ok(fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except CaloquantError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@SETTINGS
@given(value=ANY, text=RANGES)
def test_shared_option_checks(value: Any, text: Any) -> None:
    from caloquant import options

    for fn in (
        options.check_seed,
        options.check_showers,
        options.check_energy,
        lambda v: options.check_int(v, "--x", 1, 10),
        lambda v: options.check_float(v, "--x", positive=True),
    ):
        _one_line_or_ok(fn, value)
    _one_line_or_ok(options.parse_energy_range, text)
    _one_line_or_ok(options.check_energies, value)
    _one_line_or_ok(options.check_energies, [value, value], n=2)


@SETTINGS
@given(n=ANY, seed=ANY, energy=ANY, energy_range=RANGES, pick=st.integers(0, 3))
def test_energies_config(n: Any, seed: Any, energy: Any, energy_range: Any, pick: int) -> None:
    from caloquant.data import Energies

    kw: dict[str, Any] = [
        {"energy": energy},
        {"energy_range": energy_range},
        {"energies": [energy] * 3},
        {"energy": energy, "energy_range": energy_range},
    ][pick]
    try:
        e = Energies(n, seed, **kw)
    except CaloquantError as exc:
        assert "\n" not in str(exc)
        return
    values = e.values()
    assert len(values) == e.n and np.all(values > 0) and np.all(np.isfinite(values))


@SETTINGS
@given(
    n=ANY,
    seed=ANY,
    shard=ANY,
    workers=ANY,
    timeout=ANY,
    energy_range=RANGES,
)
def test_generate_config(
    n: Any, seed: Any, shard: Any, workers: Any, timeout: Any, energy_range: Any
) -> None:
    from caloquant.distributed import GenerateConfig

    _one_line_or_ok(
        GenerateConfig,
        n=n,
        seed=seed,
        shard_size=shard,
        workers=workers,
        connect_timeout=timeout,
        energy_range=energy_range,
    )


@SETTINGS
@given(
    n_flat=ANY,
    per_point=ANY,
    budgets=st.tuples(ANY, ANY, ANY),
    threads=ANY,
    seed=ANY,
    engine=st.one_of(st.sampled_from(["geant4", "gflash", "fluka"]), st.none(), st.text()),
)
def test_run_config(
    n_flat: Any, per_point: Any, budgets: Any, threads: Any, seed: Any, engine: Any
) -> None:
    from caloquant.run import RunConfig

    def make() -> None:
        RunConfig(
            quick=True,
            n_flat=n_flat,
            n_per_point=per_point,
            tune_budget_s=budgets[0],
            bench_duration_s=budgets[1],
            mc_budget_s=budgets[2],
            threads=threads,
            seed=seed,
            engine=engine,
            models=("cern-3dgan",),
        ).resolve()

    _one_line_or_ok(make)


INT_LISTS = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, b: f"{a},{b}", NUMBERS, NUMBERS),
    st.lists(ANY, max_size=3),
    ANY,
)


@SETTINGS
@given(
    grid=st.tuples(INT_LISTS, INT_LISTS, INT_LISTS),
    timing=st.tuples(ANY, ANY, ANY, ANY),
    mc=st.tuples(
        st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["true", "'x", " "])),
        st.one_of(st.none(), ANY),
        st.one_of(st.none(), st.sampled_from(["gflash", "fluka"]), st.text(max_size=5)),
        ANY,
        ANY,
    ),
    switch=ANY,
)
def test_bench_config(grid: Any, timing: Any, mc: Any, switch: Any) -> None:
    """Every bench option (`caloquant bench` and the Python API): a checked, normalised value
    or one line naming it."""
    from caloquant.bench import BenchConfig

    try:
        cfg = BenchConfig(
            threads=grid[0],
            streams=grid[1],
            batches=grid[2],
            duration_s=timing[0],
            rounds=timing[1],
            seed=timing[2],
            warmup_s=timing[3],
            mc_command=mc[0],
            mc_showers=mc[1],
            mc_engine=mc[2],
            mc_showers_per_point=mc[3],
            mc_budget_s=mc[4],
            profile=switch,
        )
    except CaloquantError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return
    for values in (cfg.threads, cfg.streams, cfg.batches):
        assert isinstance(values, tuple) and all(type(v) is int and v >= 1 for v in values)
    assert 0 < cfg.duration_s < float("inf") and 0 < cfg.mc_budget_s < float("inf")
    assert cfg.timing.window_s > 0 and type(cfg.rounds) is int and 0 <= cfg.seed < 2**32


@SETTINGS
@given(
    cut=ANY,
    smear=st.tuples(ANY, ANY),
    particle=st.one_of(st.sampled_from(["e-", "gamma", "proton"]), st.text(max_size=5)),
    seed=ANY,
    engine=st.sampled_from(["geant4", "gflash", "fluka"]),
)
def test_sim_config(cut: Any, smear: Any, particle: Any, seed: Any, engine: str) -> None:
    from caloquant.sim import Gun, Physics, SimConfig

    def make() -> None:
        SimConfig(
            engine=engine,
            physics=Physics(cut_mm=cut),
            gun=Gun(particle=particle, position_sigma_mm=smear[0], angle_sigma_mrad=smear[1]),
            seed=seed,
        )

    _one_line_or_ok(make)


@SETTINGS
@given(
    calib_n=ANY,
    eval_n=ANY,
    seed=ANY,
    batch=ANY,
    threads=ANY,
    minutes=ANY,
    tol=st.dictionaries(st.sampled_from(["ecal_rel", "moment_shift", "foo"]), ANY, max_size=2),
)
def test_quantize_config_and_tolerance(
    calib_n: Any, eval_n: Any, seed: Any, batch: Any, threads: Any, minutes: Any, tol: Any
) -> None:
    import tempfile

    from caloquant.precision import QATConfig, QuantizeConfig, Tolerance

    def make() -> None:
        QuantizeConfig(
            calib_n=calib_n,
            eval_n_per_point=eval_n,
            seed=seed,
            batch=batch,
            threads=threads,
            qat=QATConfig(minutes=minutes),
        )

    _one_line_or_ok(make)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.json")
        with open(p, "w") as f:
            f.write(json.dumps(tol, default=str, allow_nan=True))
        _one_line_or_ok(Tolerance.load, p)


@SETTINGS
@given(
    width=ANY,
    epochs=ANY,
    batch=ANY,
    seed=ANY,
    val_fraction=ANY,
    val_n=ANY,
    energy_range=st.one_of(st.none(), RANGES),
)
def test_train_config(
    width: Any,
    epochs: Any,
    batch: Any,
    seed: Any,
    val_fraction: Any,
    val_n: Any,
    energy_range: Any,
) -> None:
    from caloquant.options import MAX_ENERGY_GEV
    from caloquant.train import TrainConfig

    try:
        cfg = TrainConfig(
            data=["x.h5"],
            out="run",
            width=width,
            epochs=epochs,
            batch=batch,
            seed=seed,
            val_fraction=val_fraction,
            val_n=val_n,
            energy_range=energy_range,
        )
    except CaloquantError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return
    if cfg.energy_range is not None:  # the shared check: 0 < LO < HI <= 10 TeV
        lo, hi = cfg.energy_range
        assert 0 < lo < hi <= MAX_ENERGY_GEV


@SETTINGS
@given(text=st.one_of(st.text(max_size=20), st.builds(lambda a, b: f"{a}:{b}", NUMBERS, NUMBERS)))
def test_cli_text_parsers(text: str) -> None:
    from caloquant.bench import parse_int_list
    from caloquant.data import compression_options
    from caloquant.physics.samples import check_options

    _one_line_or_ok(parse_int_list, text, "--threads")
    _one_line_or_ok(compression_options, text)
    _one_line_or_ok(check_options, text, 0.0, 0, [text], 5.0)


def test_a_failed_geant4_start_names_the_problem_and_leaves_no_chunk_folder(
    scratch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 item 10: a Geant4 worker that cannot start (here: the geometry check skipped in
    the parent, so the worker meets the unknown material) gives its own one-line message, not
    "a worker died", and the hidden ``.OUT.h5.chunks-*`` folder of the failed start is gone."""
    from caloquant.sim import SimConfig, load_geometry, simulate
    from caloquant.sim.helper import helper_status, pybind_version

    if pybind_version() is None or not helper_status()["ready"]:
        pytest.skip("the Geant4 engine is not available here")
    monkeypatch.setattr(SimConfig, "check", lambda self: None)  # the parent's check, skipped
    cfg = SimConfig(geometry=load_geometry(scratch / "foo_geom.toml"))
    with pytest.raises(CaloquantError, match="G4_FOO") as err:
        simulate(tmp_path / "o.h5", np.array([50.0, 50.0]), cfg)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
