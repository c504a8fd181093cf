"""The main job behind `make run`: import the CERN 3DGAN, draw showers, check the physics.

It grows with each capability; every step writes its evidence under ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from caloquant.errors import CaloquantError

KERAS_GENERATOR = "3dgan/params_generator_epoch_049.hdf5"
KERAS_DISCRIMINATOR = "3dgan/params_discriminator_epoch_049.hdf5"


def find_generator(shared: Path, generator: Path | None) -> tuple[Path, Path | None]:
    """The Keras weights to use, or a one-line error saying exactly what to provide."""
    if generator is not None:
        if not generator.exists():
            raise CaloquantError(f"{generator}: Keras generator weights not found")
        disc = generator.with_name(generator.name.replace("generator", "discriminator"))
        return generator, disc if disc.exists() and disc != generator else None
    g = shared / KERAS_GENERATOR
    if not g.exists():
        raise CaloquantError(
            f"the CERN 3DGAN weights are needed: put params_generator_epoch_049.hdf5 (Keras 2, from "
            f"github.com/svalleco/3Dgan, keras/energy_gan/maelin50_full/) at {g}, or pass "
            "--generator PATH (make run SHARED=DIR or GENERATOR=PATH)"
        )
    d = shared / KERAS_DISCRIMINATOR
    return g, d if d.exists() else None


def run_study(shared: Path, generator: Path | None, out_dir: Path, n: int, threads: int, seed: int, console: Console) -> dict:
    from caloquant.data import ShowerWriter, provenance, summarize
    from caloquant.models import TorchGenerator, energies_for, generate_batches, import_keras_3dgan, save_checkpoint

    gpath, dpath = find_generator(shared, generator)
    out_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]1. Import the CERN 3DGAN (Keras 2 -> PyTorch)")
    ckpt = import_keras_3dgan(gpath, dpath)
    model_path = save_checkpoint(out_dir / "3dgan_fp32.pt", ckpt)
    console.print(f"checkpoint: {model_path}")

    console.rule(f"[bold]2. Sample {n} showers, 100-500 GeV, PyTorch fp32")
    gen = TorchGenerator(ckpt.spec, ckpt.generator, threads)
    e = energies_for(n, seed, energy_range=ckpt.spec.energy_range_gev)
    sample_path = out_dir / "3dgan_fp32_sample.h5"
    with ShowerWriter(sample_path, ckpt.spec.grid, "3dgan", provenance(model=str(model_path), precision="fp32", backend="torch", seed=seed), expected_n=n) as w:
        for s, eb in generate_batches(gen, e, seed=seed, batch=100):
            w.append(s, eb)
    summary = summarize(sample_path)
    t = Table(title=f"{sample_path}", show_header=False)
    t.add_row("showers", str(summary["n"]))
    t.add_row("Ecal/Ep", f"{summary['ecal_over_ep']['mean']:.4f} +- {summary['ecal_over_ep']['std']:.4f}")
    t.add_row("hit cells", f"{100 * summary['hit_fraction_mean']:.2f} %")
    console.print(t)
    return {"checkpoint": str(model_path), "sample": str(sample_path), "summary": summary}
