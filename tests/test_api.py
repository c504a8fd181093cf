"""The Python API: the README example as written, the embedded default model, and no lasting
side effects on the caller's process."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import caloquant as cq
from caloquant.errors import CaloquantError
from caloquant.models import Checkpoint, load_checkpoint, resolve_model, save_checkpoint
from caloquant.timing import RaceConfig
from tests.helpers import UP_SPEC, UpGen

REPO = Path(__file__).resolve().parents[1]
# the final race against the exact engine model where speed is not what a test checks: the
# fewest rounds (3; more while a verdict is open, up to 8 or 8 s), as tests/test_precision.py's
FAST_RACE = RaceConfig(min_rounds=3, max_rounds=8, budget_s=8.0)


def readme_example() -> str:
    """The Python block under '## Python API' in the README."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
def test_readme_example_runs_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The README example, as written, with small N: 100 showers instead of 1000, and the
    tuner's evaluation, time budget and final race reduced (the physics recipe itself is
    unchanged)."""
    code = readme_example()
    assert 'cq.quantize(model, precision="int8")' in code and "1000" in code
    small = code.replace("1000", "100").replace(
        'cq.quantize(model, precision="int8")',
        'cq.quantize(model, precision="int8", eval_n_per_point=24, calib_n=64, time_budget_s=30, '
        "timing=cq_timing.TimingConfig(window_s=0.3, rounds=2), race=FAST_RACE)",
    )
    monkeypatch.chdir(tmp_path)
    ns: dict = {"FAST_RACE": FAST_RACE}
    exec(compile("import caloquant.timing as cq_timing\n" + small, "README.md", "exec"), ns)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    assert (
        "Validation:" in printed and "Shower moments" in printed
    )  # the terminal summary, as `caloquant validate` prints it
    showers, energies, ref = ns["showers"], ns["energies"], ns["ref"]
    assert showers.shape == ref.shape == (100, 25, 25, 25) and energies.shape == (100,)
    assert ((energies >= 100) & (energies <= 500)).all()
    rep = ns["report"].to_dict()
    assert "pixelwise" in rep["bins"][0]  # paired: the pixel-wise comparison is there
    # the quantized model stays close to fp32 on the same latents: mean Ecal within 2 %
    # (100 showers)
    assert abs(showers.sum() / ref.sum() - 1) < 0.02
    art = tmp_path / "int8_artifact"
    assert (art / "manifest.json").exists() and (art / "canary.npz").exists()
    again = cq.load(art)  # runs the self-check on this CPU
    # int8, or the exact fp32 engine model where no int8 candidate beat it (manifest "race")
    exact = again.manifest["race"]["decision"] == "exact model"
    assert again.self_check["passed"] is True and again.precision == ("fp32" if exact else "int8")
    np.testing.assert_allclose(
        again.sample(8, energy=300, seed=3)[0],
        ns["q"].sample(8, energy=300, seed=3)[0],
        rtol=1e-4,
        atol=1e-6,
    )


def test_same_seed_same_energies_and_latents() -> None:
    m = cq.load()
    a, ea = m.sample(6, energy_range=(100, 500), seed=4)
    b, eb = m.sample(6, energy_range=(100, 500), seed=4, batch=4)
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    c, _ = m.sample(energies=ea, seed=4)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    with pytest.raises(CaloquantError, match="outside the model's valid range"):
        m.sample(2, energy=50)
    with pytest.raises(CaloquantError, match="exactly one of --energy, --energy-range"):
        m.sample(2)


def test_embedded_default_is_the_cern_generator(keras_files) -> None:
    """The shipped checkpoint holds exactly the weights caloquant's importer makes from the
    authors' Keras file, is small enough to ship, and is the default everywhere."""
    from caloquant.models import import_keras_3dgan

    path = resolve_model(None)
    assert path == resolve_model("cern-3dgan") and path.stat().st_size <= 4 * 2**20
    shipped = load_checkpoint(path).generator.state_dict()
    fresh = import_keras_3dgan(keras_files[0]).generator.state_dict()
    assert shipped.keys() == fresh.keys()
    for k in shipped:
        torch.testing.assert_close(shipped[k], fresh[k], rtol=0, atol=0)
    assert "Apache" in (REPO / "NOTICE").read_text()


def test_cq_models_lists_the_builtins_also_after_the_models_package_is_imported() -> None:
    """README's ``cq.models()``: importing the ``caloquant.models`` subpackage (any sampling
    does) makes ``caloquant.models`` the subpackage; it answers the call the same way."""
    import subprocess
    import sys

    code = (
        "import caloquant as cq\n"
        "before = cq.models()\n"
        "import caloquant.models\n"
        "after = cq.models()\n"
        "assert before == after and [r['name'] for r in after] == ['cern-3dgan', 'conv2d-g4']\n"
        "assert caloquant.models.Checkpoint is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_builtin_model_is_installed_and_the_trained_one_says_what_it_was_trained_on() -> None:
    """conv2d-g4 (issue 11) ships inside the package: at most 10 MB, trained here on at least
    5,000 Geant4 showers of today's geometry (read from its own provenance), and it samples."""
    import caloquant as cq
    from caloquant.models.registry import BUILTIN, builtin_models
    from caloquant.sim import load_geometry

    assert [m.name for m in builtin_models()] == list(BUILTIN)
    path = resolve_model("conv2d-g4")
    assert path.stat().st_size <= 10 * 2**20
    prov = load_checkpoint(path).provenance
    src = prov["data_sources"]
    assert (
        src["train_rows_per_engine"]["geant4"] >= 5000
        and sum(src["train_rows_per_engine"].values()) >= 10_000
    )
    assert src["geometry_hashes"] == [load_geometry().hash]
    # the budget of issue 23: 6 hours of 2 cores, every stage and abandoned attempt counted
    assert prov["trained_by"] == "caloquant train" and prov["training_cpu_s"] <= 6 * 3600 * 2
    g4 = cq.load("conv2d-g4", threads=1)
    # its valid range is the range it was trained for, both ends included (issue 23 item 5)
    assert tuple(g4.spec.energy_range_gev) == (100.0, 500.0)
    arr, e = g4.sample(8, energy=250, seed=1)
    assert np.all(e == 250)
    ends, e_ends = g4.sample(2, energies=np.array([100.0, 500.0]), seed=1)
    assert np.isfinite(ends).all() and ends.sum(axis=(1, 2, 3)).min() > 0
    assert (
        arr.shape == (8, 25, 25, 25)
        and np.all(np.isfinite(arr))
        and arr.min() >= 0
        and arr.sum() > 0
    )


@pytest.mark.slow
def test_the_physics_recipe_holds_on_the_model_trained_here() -> None:
    """Issue 12: the default int8 command on a 3DGAN-family checkpoint other than the CERN
    epoch 49: conv2d-g4 (the Conv2D generator trained here). Evaluation reduced and time-boxed
    as in the README test; the tolerance is checked on the engine's int8 model and the choice
    confirmed on a second, independent latent set; fresh latents stay within it too."""
    from caloquant.timing import TimingConfig

    m = cq.load("conv2d-g4", threads=2)
    q = cq.quantize(
        m,
        precision="int8",
        eval_n_per_point=24,
        calib_n=64,
        time_budget_s=40,
        timing=TimingConfig(window_s=0.3, rounds=2),
        race=FAST_RACE,
    )
    man = q.manifest
    assert man["meets_tolerance"] and (man["confirmation"] or {}).get("passes"), man["physics"]
    lp = man["layer_precisions"]
    # the Conv2D generator's units; int8 models of some of them pass (within the 40 s budget at
    # least the first units alone; the race against the exact engine model decides what ships)
    assert len(lp) >= 20 and any(r["most_int8_units_passing"] for r in man["frontier"]), lp
    assert ("int8" in lp.values()) == (man["race"]["decision"] == "reduced precision"), man["race"]
    assert {"speedup_vs_torch_fp32", "speedup_vs_openvino_fp32_same_graph"} <= set(man["speed"])
    # fresh latents (not the tuner's): mean Ecal at 300 GeV within 2 % of fp32 (100 showers)
    ref, _ = m.sample(100, energy=300, seed=77)
    got, _ = q.sample(100, energy=300, seed=77)
    assert abs(got.sum() / ref.sum() - 1) < 0.02


def test_cli_without_shared_folder(tmp_path: Path) -> None:
    """`caloquant sample` on the default model needs nothing outside the package: run it in
    an empty folder, with the shared folder hidden."""
    env = dict(os.environ, CALOQUANT_SHARED=str(tmp_path / "nothing"))
    exe = Path(sys.executable).with_name("caloquant")
    res = subprocess.run(
        [str(exe), "sample", "--n", "20", "--energy", "200", "-o", "x.h5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    from caloquant.data import open_showers

    with open_showers(tmp_path / "x.h5") as r:
        assert r.n == 20 and r.grid == (25, 25, 25) and r.attrs["model"] == "cern-3dgan"
    res = subprocess.run([str(exe), "models"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "cern-3dgan" in res.stdout


def test_no_lasting_side_effects(tmp_path: Path) -> None:
    """Threads, inductor settings and log levels are the caller's before and after each call."""
    import torch._inductor.config as inductor_config

    from caloquant.precision import QuantizeConfig, Tolerance
    from caloquant.timing import TimingConfig

    torch.set_num_threads(1)
    nncf_level = logging.getLogger("nncf").level
    freezing = inductor_config.freezing
    try:
        m = cq.load(threads=2)
        m.sample(2, energy=200)
        assert torch.get_num_threads() == 1
        path = save_checkpoint(tmp_path / "up.pt", Checkpoint(UP_SPEC, UpGen().eval()))
        for backend in ("openvino", "torch"):
            q = cq.quantize(
                str(path),
                backend=backend,
                threads=2,
                tolerance=Tolerance(ecal_rel=1.0, moment_shift=10.0),
                calib_n=16,
                eval_n_per_point=6,
                batch=4,
                timing=TimingConfig(window_s=0.1, rounds=1),
                race=FAST_RACE,
            )
            q.sample(3, energy=50)
            assert torch.get_num_threads() == 1, backend
            assert logging.getLogger("nncf").level == nncf_level
            assert inductor_config.freezing == freezing
        # threads=None inherits the caller's setting
        assert QuantizeConfig().threads is None
    finally:
        torch.set_num_threads(2)


def test_library_errors_name_parameters_not_flags() -> None:
    with pytest.raises(CaloquantError) as e:
        cq.load("no-such-model")
    assert "built-in" in str(e.value) and "--" not in str(e.value)
    with pytest.raises(CaloquantError, match="unknown quantize option"):
        cq.quantize(cq.load(), precision="int8", no_such_option=1)


def test_every_stage_joins_the_namespace() -> None:
    import caloquant.distributed
    import caloquant.sim
    import caloquant.train

    assert cq.simulate is caloquant.sim.simulate and cq.train.train is caloquant.train.train
    assert (
        cq.generate is caloquant.distributed.generate
        and cq.bench.run_bench is caloquant.bench.run_bench
    )
