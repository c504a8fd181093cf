"""The main job behind `make run`: the furthest-reaching study caloquant can do today.

On the real CERN 3DGAN (the built-in model, or Keras weights given with ``--generator``): draw showers in fp32, validate two
independent fp32 samples against each other (the statistical floor), build the naive int8
variant (backend defaults, as the paper's TensorFlow Lite comparison) and the physics-tuned
variants, draw showers from each on the same latent vectors as fp32 and validate them paired.
Everything lands under ``out_dir``: checkpoint, samples, artifacts, JSON, plots, summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from caloquant.errors import CaloquantError

def _sample(gen: Any, energies: np.ndarray, seed: int, path: Path, meta: dict[str, Any]) -> Path:
    from caloquant.data import ShowerWriter, provenance
    from caloquant.models import generate_batches

    with ShowerWriter(path, gen.spec.grid, "3dgan", provenance(seed=seed, **meta), expected_n=len(energies)) as w:
        for s, eb in generate_batches(gen, energies, seed=seed, batch=100):
            w.append(s, eb)
    return path


def run_study(model: str, out_dir: Path, n: int, threads: int, seed: int, console: Console,
              quantize_variants: bool = True) -> dict[str, Any]:
    """``model``: a built-in model name, a checkpoint or Keras 2 generator weights."""
    from caloquant.api import load
    from caloquant.fileio import write_json
    from caloquant.models import TorchGenerator, energies_for, save_checkpoint
    from caloquant.physics import validate
    from caloquant.precision import QuantizeConfig, load_artifact, quantize
    from caloquant.report import head_to_head_table, quantize_summary, validation_plots, validation_table

    out_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"[bold]1. The model: {model}")
    m = load(model, threads)
    if m.checkpoint is None:
        raise CaloquantError(f"{model}: the study starts from a float32 model, not a reduced-precision artifact")
    ckpt = m.checkpoint
    model_path = save_checkpoint(out_dir / "model_fp32.pt", ckpt)
    console.print(f"checkpoint: {model_path} ({ckpt.spec.arch}, from {model})")

    console.rule(f"[bold]2. fp32 showers: {n} at 100-500 GeV, two independent samples")
    fp32 = TorchGenerator(ckpt.spec, ckpt.generator, threads)
    e = energies_for(n, seed, energy_range=ckpt.spec.energy_range_gev)
    s1 = _sample(fp32, e, seed, out_dir / "fp32_a.h5", {"model": str(model_path), "precision": "fp32", "backend": "torch"})
    s2 = _sample(fp32, e, seed + 1, out_dir / "fp32_b.h5", {"model": str(model_path), "precision": "fp32", "backend": "torch"})
    closure = validate(s1, s2, seed=seed).to_dict()
    write_json(out_dir / "validate_fp32_closure.json", closure)
    validation_plots(closure, out_dir / "plots_fp32_closure")
    console.print(validation_table(closure))

    summary: dict[str, Any] = {"checkpoint": str(model_path), "n": n,
                               "closure": {"projection_mse": closure["bins"][0]["projection_mse"],
                                           "projection_mse_noise": closure["bins"][0]["projection_mse_noise"]},
                               "variants": []}
    if quantize_variants:
        variants = [
            ("openvino_int8_naive", QuantizeConfig(backend="openvino", precision="int8", recipe="naive", threads=threads)),
            ("openvino_bf16", QuantizeConfig(backend="openvino", precision="bf16", threads=threads)),
            ("openvino_fp16", QuantizeConfig(backend="openvino", precision="fp16", threads=threads)),
            ("openvino_int8_physics", QuantizeConfig(backend="openvino", precision="int8", recipe="physics", threads=threads,
                                                     head_to_head=True)),
        ]
        for i, (name, cfg) in enumerate(variants, start=3):
            console.rule(f"[bold]{i}. {name}")
            res = quantize(ckpt, cfg, source=str(model))
            res.save(out_dir / name)
            console.print(quantize_summary(res.manifest))
            if (h2h := head_to_head_table(res.manifest)) is not None:
                console.print(h2h)
            art = load_artifact(out_dir / name, threads)
            path = _sample(art, e, seed, out_dir / f"{name}.h5", {"model": str(out_dir / name), "precision": art.precision, "backend": art.backend})
            rep = validate(s1, path, paired=True, seed=seed).to_dict()
            write_json(out_dir / f"validate_{name}.json", rep)
            validation_plots(rep, out_dir / f"plots_{name}")
            allb = rep["bins"][0]
            worst = max(abs(b["sampling_fraction"]["ratio"] - 1) for b in rep["bins"])
            summary["variants"].append({
                "name": name, "meets_tolerance": res.ok, "layer_precisions": res.manifest["layer_precisions"],
                "speedup_vs_torch_fp32": res.manifest["speed"]["speedup_vs_torch_fp32"],
                "executed_precision": res.manifest["executed_precision"],
                "showers_per_s": res.manifest["speed"]["showers_per_s"],
                "size_ratio_vs_fp32": res.manifest["size_bytes"] / res.manifest["fp32_param_bytes"],
                "validation_worst_sf_ratio_deviation": worst, "pixelwise_gev": allb["pixelwise"]["mean"],
                "pixelwise_std_gev": allb["pixelwise"]["std"], "projection_mse": allb["projection_mse"],
            })
        console.rule("[bold]Summary: fast and right?")
        lo, hi = ckpt.spec.energy_range_gev
        t = Table(title=f"{model}, {n} showers {lo:g}-{hi:g} GeV, paired with fp32 (same latents)")
        for col in ("variant", "executed", "speed-up vs torch fp32", "size vs fp32", "worst |SF ratio - 1| (bins)", "pixel-wise [GeV]", "within tolerance"):
            t.add_column(col, justify="right")
        for v in summary["variants"]:
            t.add_row(v["name"], v["executed_precision"], f"{v['speedup_vs_torch_fp32']:.2f}x", f"{v['size_ratio_vs_fp32']:.2f}x",
                      f"{v['validation_worst_sf_ratio_deviation']:.4f}", f"{v['pixelwise_gev']:.3f}±{v['pixelwise_std_gev']:.3f}",
                      "[green]yes[/]" if v["meets_tolerance"] else "[bold red]NO[/]")
        console.print(t)
    write_json(out_dir / "summary.json", summary)
    console.print(f"results in {out_dir}/ (summary.json, validate_*.json, plots_*/)")
    return summary
