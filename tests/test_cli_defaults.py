"""Every command-line default is its config object's (issue 24): each option that feeds a config
field has that field's default, a difference is deliberate (``DIFFERS``), and every other option
is declared a pure command-line switch (``CLI_ONLY``), so that a new option is placed on purpose.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import typer

from caloquant import cli
from caloquant.bench import BenchConfig
from caloquant.data import SampleConfig
from caloquant.distributed import GenerateConfig
from caloquant.precision import QATConfig, QuantizeConfig
from caloquant.run import RunConfig
from caloquant.sim import Gun, Physics, SimConfig
from caloquant.train import TrainConfig


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v or ())


# the config classes whose same-named fields an option feeds, per command
CONFIGS: dict[str, tuple[type, ...]] = {
    "sample": (SampleConfig,),
    "generate": (GenerateConfig,),
    "simulate": (SimConfig, Gun, Physics),
    "quantize": (QuantizeConfig,),
    "run": (RunConfig,),
    "bench": (BenchConfig,),
    "train": (TrainConfig,),
}
# option -> (class, field, how the command line's value becomes the field's), names that differ
Conv = Callable[[Any], Any]
RENAMED: dict[str, dict[str, tuple[type, str, Conv]]] = {
    "simulate": {
        "physics": (Physics, "list", str),
        "cut": (Physics, "cut_mm", float),
        "smear_position": (Gun, "position_sigma_mm", float),
        "smear_angle": (Gun, "angle_sigma_mrad", float),
    },
    "quantize": {
        "eval_n": (QuantizeConfig, "eval_n_per_point", int),
        "qat_minutes": (QATConfig, "minutes", float),
    },
    "run": {
        "model": (RunConfig, "models", _tuple),
        "showers": (RunConfig, "n_flat", lambda v: v),
        "per_point": (RunConfig, "n_per_point", lambda v: v),
        "tune_budget": (RunConfig, "tune_budget_s", lambda v: v),
        "bench_duration": (RunConfig, "bench_duration_s", lambda v: v),
        "mc_budget": (RunConfig, "mc_budget_s", lambda v: v),
    },
    "bench": {
        "threads": (BenchConfig, "threads", _ints),
        "streams": (BenchConfig, "streams", _ints),
        "batch": (BenchConfig, "batches", _ints),
        "duration": (BenchConfig, "duration_s", float),
        "mc": (BenchConfig, "mc_engine", lambda v: v),
        "mc_per_point": (BenchConfig, "mc_showers_per_point", int),
        "mc_budget": (BenchConfig, "mc_budget_s", float),
    },
}
# deliberate differences (the comment beside the option in cli.py says why)
DIFFERS = {("quantize", "threads"), ("train", "model")}
# options that feed no config field
CLI_ONLY: dict[str, set[str]] = {
    "sample": {
        "output",
        "model",
        "noise",
        "threads",
        "allow_extrapolation",
        "compression",
        "skip_self_check",
    },
    "generate": {"output", "tls_ca_file", "tls_cert", "tls_key"},
    # energies, cell cut, workers and format: arguments of sim.draw_energies / sim.simulate
    "simulate": {
        "n",
        "output",
        "energy",
        "energy_range",
        "energies",
        "geometry",
        "cell_cut",
        "workers",
        "fmt",
    },
    "quantize": {"output", "model", "tolerance", "equalize"},
    "run": {"output"},
    "bench": {"model", "json_out", "plots"},
    "train": {"output"},
}

COMMANDS = typer.main.get_command(cli.app).commands  # type: ignore[attr-defined]


def _field(cmd: str, name: str) -> tuple[type, str, Conv] | None:
    if name in RENAMED.get(cmd, {}):
        return RENAMED[cmd][name]
    for cls in CONFIGS[cmd]:
        if name in cls.__dataclass_fields__:
            return cls, name, lambda v: v
    return None


@pytest.mark.parametrize("cmd", sorted(CONFIGS))
def test_every_option_default_is_its_config_fields(cmd: str) -> None:
    compared = 0
    for p in COMMANDS[cmd].params:
        if p.name in CLI_ONLY[cmd]:
            continue
        found = _field(cmd, p.name)
        assert found is not None, f"{cmd} --{p.name}: no config field; map it or list it CLI_ONLY"
        cls, name, conv = found
        default = cls.__dataclass_fields__[name].default
        if (cmd, p.name) in DIFFERS:
            if p.required:  # required here, a default in the config
                assert default is not dataclasses.MISSING, f"{cmd} {p.name}: no longer differs"
            else:
                assert conv(p.default) != default, f"{cmd} {p.name}: now equal"
            continue
        if default is dataclasses.MISSING:  # no default in the config: required here too
            assert p.required, f"{cmd} --{p.name}: {cls.__name__}.{name} has no default"
            continue
        got = conv(p.default)
        assert got == default and type(got) is type(default), (
            f"{cmd} --{p.name}: command line {p.default!r}, {cls.__name__}.{name} {default!r}"
        )
        compared += 1
    assert compared >= 3


def test_the_command_line_reads_its_defaults_without_loading_torch_or_hdf5() -> None:
    """The packages import only their configuration objects with themselves (the rest on first
    use): ``caloquant --help`` builds every option without torch, h5py or the engines."""
    code = (
        "import sys, caloquant.cli\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'h5py', 'openvino', 'onnxruntime', 'dask', 'sklearn', 'scipy'})\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
