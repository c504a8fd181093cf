from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALOQUANT_SHARED", REPO.parent / "shared"))
KERAS_GEN = SHARED / "3dgan" / "params_generator_epoch_049.hdf5"
KERAS_DISC = SHARED / "3dgan" / "params_discriminator_epoch_049.hdf5"


@pytest.fixture(scope="session")
def keras_files() -> tuple[Path, Path]:
    if not KERAS_GEN.exists() or not KERAS_DISC.exists():
        pytest.skip(
            f"CERN 3DGAN Keras weights not found under {SHARED / '3dgan'} (set CALOQUANT_SHARED)"
        )
    return KERAS_GEN, KERAS_DISC


@pytest.fixture(scope="session")
def cern_checkpoint(
    keras_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The real CERN 3DGAN, imported once per session."""
    from caloquant.models import import_keras_3dgan, save_checkpoint

    path = tmp_path_factory.mktemp("cern") / "3dgan.pt"
    save_checkpoint(path, import_keras_3dgan(*keras_files))
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 3DGAN generator (no ../shared needed)."""
    from caloquant.models import SPEC_3DGAN, Checkpoint, build, save_checkpoint

    torch.manual_seed(0)
    gen, _ = build(SPEC_3DGAN)
    gen.eval()
    path = tmp_path_factory.mktemp("rand") / "rand.pt"
    save_checkpoint(path, Checkpoint(SPEC_3DGAN, gen))
    return path


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `caloquant ARGS...` in-process through the real entry point (error handling included)."""
    from caloquant.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["caloquant", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run
