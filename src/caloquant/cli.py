"""The ``caloquant`` command line: thin wrappers over each stage's public API."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from caloquant.bench import BenchConfig
from caloquant.data import SampleConfig
from caloquant.distributed import GenerateConfig
from caloquant.errors import CaloquantError, reason
from caloquant.fileio import check_output
from caloquant.options import MAX_THREADS, check_int
from caloquant.precision import BACKENDS, PRECISIONS, QATConfig, QuantizeConfig
from caloquant.run import RunConfig
from caloquant.sim import Gun, Physics, SimConfig
from caloquant.train import TrainConfig


def _d(cls: Any, name: str) -> Any:
    """An option's default, read from its config object (defaults live there only)."""
    default = cls.__dataclass_fields__[name].default
    if default is dataclasses.MISSING:
        raise KeyError(f"{cls.__name__}.{name} has no default")
    return default


def _csv(cls: Any, name: str) -> str:
    """A tuple-of-integers default as the command line writes it: (1, 2) -> '1,2'."""
    return ",".join(map(str, _d(cls, name)))


app = typer.Typer(
    name="caloquant",
    help="Reduced-precision calorimeter-shower GANs, with the physics evidence that they stay "
    "right.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
# Wide enough for the validation tables when writing to a file or pipe.
out = Console(width=None if Console().is_terminal else 160)


def _tell(message: str) -> None:
    """One line of a command's own report on stdout, verbatim: it quotes user text (file names
    like 'run[red].h5'), which rich would otherwise read as markup. Tables keep their styles."""
    out.print(message, markup=False, highlight=False)


def _note(message: str) -> None:
    """A progress note on stderr, verbatim (as :func:`_tell`)."""
    console.print(message, markup=False, highlight=False)


class _RateColumn(ProgressColumn):
    """Items per second (showers/s) of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.3g}/s" if speed else "-/s")


def progress(rate: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *((_RateColumn(),) if rate else ()),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("CALOQUANT_PROGRESS", "") != "1",
    )


def set_threads(threads: int) -> None:
    """Pin intra-op threads for every library we use (2 cores on the reference machine). The
    command line owns its process, so this is set once, for the whole command."""
    import torch

    threads = check_int(threads, "--threads", 1, MAX_THREADS)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _setup_output() -> None:
    """What only the command line decides: a file-only matplotlib backend, and the library's
    ``caloquant`` logger shown with the command's output on stdout (progress of quantize,
    bench, ...; stderr carries only errors and progress bars)."""
    import logging

    import matplotlib
    from rich.logging import RichHandler

    matplotlib.use("Agg")
    lg = logging.getLogger("caloquant")
    if not any(isinstance(h, RichHandler) for h in lg.handlers):
        h = RichHandler(
            console=out,
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=None,
            rich_tracebacks=False,
        )
        h.setFormatter(logging.Formatter("%(message)s"))
        lg.addHandler(h)
    lg.setLevel(logging.INFO)
    lg.propagate = False


MODEL_HELP = (
    "Built-in model name (see `caloquant models`), checkpoint (.pt), "
    "Keras 2 generator weights (.hdf5) or quantize artifact directory."
)
DEFAULT_MODEL_HELP = " Default: the built-in model marked (default) by `caloquant models`."
SKIP_CHECK_HELP = (
    "Load an artifact without running its self-check on this CPU "
    "(recorded in the output's provenance)."
)


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise CaloquantError(f"{path}: {what} file not found")
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise CaloquantError(f"{path}: not a .npy {what} file (no NumPy header)")
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "Object arrays" in str(exc):  # never unpickled: loading objects can run code
            raise CaloquantError(
                f"{path}: the {what} file holds Python objects (an object-dtype array), "
                "not numbers; save a float array"
            ) from None
        raise CaloquantError(f"{path}: not a readable .npy {what} file ({reason(exc)})") from None


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="Shower file (3DGAN or CaloChallenge HDF5).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a shower file's format, size, grid, energy range and Ecal/Ep summary."""
    from caloquant.data import summarize

    s = summarize(file)
    if as_json:
        out.print_json(json.dumps(s))
        _warn(s["warnings"])
        return
    t = Table(title=Text(str(file)), show_header=False)  # a file name is not rich markup
    t.add_row("format", s["format"])
    t.add_row("showers", f"{s['n']:,}")
    t.add_row("grid (x, y, z)", " x ".join(map(str, s["grid"])))
    t.add_row("Ep range", f"{s['energy_gev']['min']:.2f} - {s['energy_gev']['max']:.2f} GeV")
    t.add_row("mean Ecal", f"{s['ecal_gev_mean']:.4f} GeV")
    r = s["ecal_over_ep"]
    t.add_row(
        "Ecal/Ep", f"{r['mean']:.5f} +- {r['std']:.5f} (min {r['min']:.5f}, max {r['max']:.5f})"
    )
    t.add_row("hit cells", f"{100 * s['hit_fraction_mean']:.2f} %")
    for k, v in s["attrs"].items():
        t.add_row(Text(f"attr {k}"), Text(str(v)))
    out.print(t)
    _warn(s["warnings"])


def _warn(messages: list[str]) -> None:
    """One ``warning: ...`` line each on stderr, printed verbatim (they may quote user text)."""
    for m in messages:
        console.print(
            Text.assemble(("warning:", "bold yellow"), " ", m), highlight=False, soft_wrap=True
        )


@app.command("import-keras")
def import_keras(
    generator: Annotated[Path, typer.Argument(help="Keras 2 generator weights (.hdf5).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint to write (.pt).")],
    discriminator: Annotated[
        Optional[Path], typer.Option("--discriminator", help="Keras 2 discriminator weights.")
    ] = None,
) -> None:
    """Convert the CERN 3DGAN Keras weights into a caloquant checkpoint."""
    from caloquant.models import import_keras_3dgan, save_checkpoint

    check_output(output)
    ckpt = import_keras_3dgan(generator, discriminator)
    save_checkpoint(output, ckpt)
    n = sum(p.numel() for p in ckpt.generator.parameters())
    _tell(
        f"wrote {output}: {ckpt.spec.arch}, {n:,} generator parameters, "
        f"valid {ckpt.spec.energy_range_gev[0]:g}-{ckpt.spec.energy_range_gev[1]:g} GeV"
        + (", with discriminator" if ckpt.discriminator is not None else "")
    )


@app.command()
def models() -> None:
    """List the built-in models (usable as --model NAME everywhere)."""
    from caloquant.api import models as builtin
    from caloquant.models import DEFAULT_MODEL

    t = Table(title="built-in models")
    for col in ("name", "description", "licence", "source"):
        t.add_column(col)
    for m in builtin():
        t.add_row(
            m["name"] + (" (default)" if m["name"] == DEFAULT_MODEL else ""),
            m["description"],
            m["licence"],
            m["source"],
        )
    out.print(t)


COMPRESSION_HELP = (
    "gzip[:LEVEL] (any HDF5 reader), lz4 or zstd[:LEVEL] (4-6x cheaper to write; "
    "readers need hdf5plugin, which caloquant imports), none."
)


@app.command()
def sample(
    n: Annotated[int, typer.Option("--n", help="Number of showers.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output HDF5 file.")],
    model: Annotated[
        Optional[str], typer.Option("--model", help=MODEL_HELP + DEFAULT_MODEL_HELP)
    ] = None,
    energy: Annotated[
        Optional[float], typer.Option("--energy", help="Fixed incident energy (GeV).")
    ] = _d(SampleConfig, "energy"),
    energy_range: Annotated[
        Optional[str], typer.Option("--energy-range", help="LO:HI in GeV, uniform.")
    ] = _d(SampleConfig, "energy_range"),
    energies: Annotated[
        Optional[Path], typer.Option("--energies", help=".npy file of N energies (GeV).")
    ] = None,
    noise: Annotated[
        Optional[Path],
        typer.Option("--noise", help=".npy raw N(0,1) noise, float32 (N, noise_dim)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = _d(SampleConfig, "seed"),
    batch: Annotated[int, typer.Option("--batch")] = _d(SampleConfig, "batch"),
    threads: Annotated[int, typer.Option("--threads")] = 2,
    fmt: Annotated[str, typer.Option("--format", help="3dgan or calochallenge.")] = _d(
        SampleConfig, "fmt"
    ),
    allow_extrapolation: Annotated[
        bool,
        typer.Option("--allow-extrapolation", help="Allow energies outside the model's range."),
    ] = False,
    compression: Annotated[str, typer.Option("--compression", help=COMPRESSION_HELP)] = "gzip",
    skip_self_check: Annotated[
        bool, typer.Option("--skip-self-check", help=SKIP_CHECK_HELP)
    ] = False,
) -> None:
    """Draw showers from a model and write them (GeV) in the 3DGAN or CaloChallenge format."""
    from caloquant.api import load
    from caloquant.data import ShowerWriter, compression_options, provenance
    from caloquant.models import check_energy_range, generate_batches

    # every option first (no model is loaded, nothing is drawn or written before)
    check_output(output)
    compression_options(compression)
    set_threads(threads)
    e_arr = _load_npy(energies, "energies") if energies is not None else None
    asked = SampleConfig(n, seed, energy, energy_range, e_arr, batch=batch, fmt=fmt)
    noise_arr = _load_npy(noise, "noise") if noise is not None else None
    e = asked.values()
    m = load(model, threads, skip_self_check)
    gen = m.generator
    check_energy_range(e, gen.spec, allow_extrapolation)
    extra = {} if m.self_check is None else {"self_check": json.dumps(m.self_check, default=str)}
    attrs = provenance(
        model=m.source,
        model_arch=gen.spec.arch,
        precision=m.precision,
        backend=m.backend,
        seed=seed,
        noise_source=str(noise) if noise is not None else "seeded",
        **extra,
    )
    # the writer compresses and writes on its own thread while the model draws the next batch
    try:
        with (
            ShowerWriter(
                output, gen.spec.grid, fmt, attrs, expected_n=n, compression=compression
            ) as w,
            progress() as bar,
        ):  # type: ignore[arg-type]
            task = bar.add_task("sampling", total=n)
            for showers, eb in generate_batches(gen, e, seed, noise_arr, batch):
                w.append(showers, eb)
                bar.advance(task, len(eb))
    except KeyboardInterrupt:  # the writer removed its temporary file: OUTPUT never appeared
        raise Interrupted("interrupted, nothing written") from None
    _tell(f"wrote {n} showers to {output}")


@app.command()
def generate(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output directory (shards + manifest.json).")
    ],
    n: Annotated[int, typer.Option("--n", help="Number of showers.")],
    model: Annotated[
        Optional[str],
        typer.Option("--model", help=MODEL_HELP + " Workers load it from the same path."),
    ] = _d(GenerateConfig, "model"),
    engine: Annotated[
        Optional[str],
        typer.Option("--engine", help="Monte Carlo engine instead of a model: geant4 or gflash."),
    ] = _d(GenerateConfig, "engine"),
    energy_range: Annotated[
        Optional[str], typer.Option("--energy-range", help="LO:HI in GeV, uniform.")
    ] = _d(GenerateConfig, "energy_range"),
    energies: Annotated[
        Optional[Path], typer.Option("--energies", help=".npy file of N energies (GeV).")
    ] = None,
    shard_size: Annotated[
        Optional[int],
        typer.Option(
            "--shard-size",
            help="Showers per shard file, one Dask task each "
            "(default 1000 for models, 20 for geant4, 500 for gflash).",
        ),
    ] = _d(GenerateConfig, "shard_size"),
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            "--scheduler", help="Address of an existing Dask scheduler, tcp:// or tls://."
        ),
    ] = _d(GenerateConfig, "scheduler"),
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers", help="Local cluster: worker processes (default cores / 2; engines: cores)."
        ),
    ] = _d(GenerateConfig, "workers"),
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", help="Engine threads per worker (default cores / workers)."),
    ] = _d(GenerateConfig, "threads"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in OUTPUT: keep shards with valid checksums, make the rest.",
        ),
    ] = _d(GenerateConfig, "resume"),
    seed: Annotated[int, typer.Option("--seed")] = _d(GenerateConfig, "seed"),
    batch: Annotated[int, typer.Option("--batch")] = _d(GenerateConfig, "batch"),
    compression: Annotated[str, typer.Option("--compression", help=COMPRESSION_HELP)] = _d(
        GenerateConfig, "compression"
    ),
    allow_extrapolation: Annotated[
        bool,
        typer.Option("--allow-extrapolation", help="Allow energies outside the model's range."),
    ] = _d(GenerateConfig, "allow_extrapolation"),
    tls_ca_file: Annotated[
        Optional[Path],
        typer.Option("--tls-ca-file", help="TLS: CA certificate of the cluster (PEM)."),
    ] = None,
    tls_cert: Annotated[
        Optional[Path], typer.Option("--tls-cert", help="TLS: this client's certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Optional[Path], typer.Option("--tls-key", help="TLS: this client's private key (PEM).")
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="Seconds to reach the scheduler.")
    ] = _d(GenerateConfig, "connect_timeout"),
    retries: Annotated[
        int, typer.Option("--retries", help="Re-runs of a shard whose task raised an error.")
    ] = _d(GenerateConfig, "retries"),
) -> None:
    """Mass production on Dask: N showers in sharded, checksummed files; resumable, fault \
tolerant."""
    from caloquant.distributed import GenerateProgress, generate as run_generate, security_from

    check_output(output, folder=True)
    e_arr = _load_npy(energies, "energies") if energies is not None else None
    security = security_from(tls_ca_file, tls_cert, tls_key) if scheduler is not None else None
    # every option is checked here, before a cluster is started or anything is written
    cfg = GenerateConfig(
        n=n,
        model=model,
        engine=engine,
        energy_range=energy_range,  # "LO:HI", parsed and checked by the config
        energies=e_arr,
        shard_size=shard_size,
        seed=seed,
        scheduler=scheduler,
        workers=workers,
        threads=threads,
        security=security,
        resume=resume,
        batch=batch,
        compression=compression,
        allow_extrapolation=allow_extrapolation,
        connect_timeout=connect_timeout,
        retries=retries,
    )
    with progress(rate=True) as bar:
        tasks: list[Any] = []

        def on_progress(p: GenerateProgress) -> None:
            if (
                not tasks
            ):  # created at the first report, so that reused shards do not count as speed
                tasks.append(
                    bar.add_task("generating", total=p.showers_total, completed=p.showers_done)
                )
            bar.update(
                tasks[0],
                completed=p.showers_done,
                description=f"shards {p.shards_done}/{p.shards_total}",
            )

        try:
            res = run_generate(
                output,
                cfg,
                progress=on_progress,
                log=_note,
            )
        except KeyboardInterrupt as exc:  # it says how many shards are complete: one line
            raise Interrupted(str(exc) or "interrupted") from None
    _tell(
        f"wrote {n} showers in {res.manifest['n_shards']} shards to {output} "
        f"({res.shards_made} made, "
        f"{res.shards_reused} reused; {res.showers_per_s:.1f} showers/s over {res.seconds:.0f} s)"
    )


@app.command()
def simulate(
    n: Annotated[int, typer.Option("--n", help="Number of showers.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output HDF5 file.")],
    energy: Annotated[
        Optional[float], typer.Option("--energy", help="Fixed incident energy (GeV).")
    ] = None,
    energy_range: Annotated[
        Optional[str], typer.Option("--energy-range", help="LO:HI in GeV, uniform.")
    ] = None,
    energies: Annotated[
        Optional[Path], typer.Option("--energies", help=".npy file of N energies (GeV).")
    ] = None,
    engine: Annotated[
        str,
        typer.Option("--engine", help="geant4 (full simulation) or gflash (fast parametrization)."),
    ] = _d(SimConfig, "engine"),
    geometry: Annotated[
        Optional[Path],
        typer.Option(
            "--geometry", help="Calorimeter TOML file (default: the packaged W/Si layout)."
        ),
    ] = None,
    particle: Annotated[str, typer.Option("--particle", help="e-, gamma or e+.")] = _d(
        Gun, "particle"
    ),
    physics: Annotated[
        str,
        typer.Option(
            "--physics", help="em-analytic (no data sets needed) or standard (needs G4LEDATA etc.)."
        ),
    ] = _d(Physics, "list"),
    cut: Annotated[float, typer.Option("--cut", help="Production cut (mm).")] = _d(
        Physics, "cut_mm"
    ),
    smear_position: Annotated[
        float, typer.Option("--smear-position", help="Gun position smearing, sigma per axis (mm).")
    ] = _d(Gun, "position_sigma_mm"),
    smear_angle: Annotated[
        float, typer.Option("--smear-angle", help="Gun direction smearing, sigma per axis (mrad).")
    ] = _d(Gun, "angle_sigma_mrad"),
    cell_cut: Annotated[
        float,
        typer.Option(
            "--cell-cut", help="Cells below this energy (GeV) are set to 0 (3DGAN data: 1e-6)."
        ),
    ] = 1e-6,
    seed: Annotated[int, typer.Option("--seed")] = _d(SimConfig, "seed"),
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes (results do not depend on it).")
    ] = 1,
    fmt: Annotated[str, typer.Option("--format", help="3dgan or calochallenge.")] = "3dgan",
) -> None:
    """Simulate showers with Geant4 or GFlash and write them (GeV in silicon) like `sample`."""
    from caloquant.sim import draw_energies, load_geometry, simulate as run_simulate

    check_output(output)
    e_arr = _load_npy(energies, "energies") if energies is not None else None
    e = draw_energies(n, seed, energy, energy_range, e_arr)  # checked before anything is drawn
    cfg = SimConfig(
        engine=engine,
        geometry=load_geometry(geometry),
        physics=Physics(list=physics, cut_mm=cut),
        gun=Gun(particle=particle, position_sigma_mm=smear_position, angle_sigma_mrad=smear_angle),
        seed=seed,
    )
    with progress(rate=True) as bar:
        task = bar.add_task(f"simulating ({engine})", total=n)
        res = run_simulate(
            output,
            e,
            cfg,
            workers=workers,
            fmt=fmt,
            cell_cut_gev=cell_cut,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    reused = f", {res['reused_chunks']} chunks reused" if res["reused_chunks"] else ""
    _tell(
        f"wrote {n} showers to {output} ({engine}, {res['wall_s']:.1f} s, "
        f"{res['cpu_s_per_shower']:.4g} CPU s per shower{reused})"
    )


@app.command()
def validate(
    ref: Annotated[
        Path, typer.Argument(help="Reference shower file (3DGAN or CaloChallenge HDF5).")
    ],
    cand: Annotated[
        Path, typer.Argument(help="Candidate shower file (3DGAN or CaloChallenge HDF5).")
    ],
    bins: Annotated[
        str,
        typer.Option(
            "--bins",
            help="auto | paper | edges:E1,E2,... | width:W | points:E1,E2 "
            "| points:E1,E2/HALF (GeV).",
        ),
    ] = "auto",
    paired: Annotated[
        bool,
        typer.Option(
            "--paired",
            help="Samples share latent vectors row by row: pixel-wise metric, paired errors.",
        ),
    ] = False,
    classifier: Annotated[
        bool,
        typer.Option(
            "--classifier",
            help="Train classifiers to tell the samples apart (AUC, JSD): a feature classifier "
            "and the CaloChallenge protocol's low- and high-level ones (minutes).",
        ),
    ] = False,
    hit_threshold: Annotated[
        float,
        typer.Option(
            "--hit-threshold",
            help="Hit cells: energy above this, GeV (the 3DGAN authors count hits above 2e-4).",
        ),
    ] = 1e-6,
    zero_threshold: Annotated[
        float,
        typer.Option(
            "--zero-threshold",
            help="Set cells below this to 0 before any metric, GeV; 0 = none "
            "(the 3DGAN authors use 1e-6).",
        ),
    ] = 0.0,
    metric_points: Annotated[
        str,
        typer.Option(
            "--metric-points",
            help="Energy windows of the authors' optimisation metric: E1,E2,... or E1,E2,.../HALF "
            "(GeV, default half-width 5).",
        ),
    ] = "110,150,190",
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Write the full results as JSON.")
    ] = None,
    plots: Annotated[
        Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads")] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Compare two shower samples with the paper's physics metrics, the authors' optimisation \
metric, and modern generative metrics."""
    from caloquant.data import open_showers
    from caloquant.physics import parse_points, validate as run_validate
    from caloquant.report import validation_plots, validation_tables

    if json_out is not None:
        check_output(json_out, option="--json")
    if plots is not None:
        check_output(plots, folder=True, option="--plots")
    set_threads(threads)
    try:
        points, half = parse_points(metric_points)
    except ValueError:
        raise CaloquantError(
            "--metric-points must look like 110,150,190 or 110,150,190/5 (GeV), "
            f"got '{metric_points}'"
        ) from None
    with open_showers(ref) as r1, open_showers(cand) as r2:
        total = r1.n + r2.n
    with progress() as bar:
        task = bar.add_task("validating", total=total)
        report = run_validate(
            ref,
            cand,
            bins=bins,
            paired=paired,
            classifier=classifier,
            seed=seed,
            hit_threshold=hit_threshold,
            zero_threshold=zero_threshold,
            metric_points=points,
            metric_half_width=half,
            progress=lambda k: bar.advance(task, k),
        ).to_dict()
    for table in validation_tables(report):
        out.print(table)
    _write_outputs(report, json_out, plots, validation_plots)


@app.command()
def quantize(
    output: Annotated[Path, typer.Option("-o", "--output", help="Artifact directory to write.")],
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            help="Built-in model name, float32 checkpoint (.pt) or Keras 2 "
            "generator weights (.hdf5)." + DEFAULT_MODEL_HELP,
        ),
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help=" | ".join(PRECISIONS) + ".")] = _d(
        QuantizeConfig, "precision"
    ),
    backend: Annotated[str, typer.Option("--backend", help=" | ".join(BACKENDS) + ".")] = _d(
        QuantizeConfig, "backend"
    ),
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe", help="physics (tolerance-driven search) | naive (backend defaults)."
        ),
    ] = _d(QuantizeConfig, "recipe"),
    tolerance: Annotated[
        str, typer.Option("--tolerance", help="Preset (default, strict, loose) or a JSON file.")
    ] = "default",
    calibration: Annotated[
        str,
        typer.Option(
            "--calibration",
            help="First range estimator: minmax | percentile | histogram, "
            "each also with asymmetric activations (-asym, OpenVINO).",
        ),
    ] = _d(QuantizeConfig, "calibration"),
    calib_n: Annotated[int, typer.Option("--calib-n", help="Calibration latents.")] = _d(
        QuantizeConfig, "calib_n"
    ),
    eval_n: Annotated[
        int, typer.Option("--eval-n", help="Paired evaluation showers per energy point.")
    ] = _d(QuantizeConfig, "eval_n_per_point"),
    seed: Annotated[int, typer.Option("--seed")] = _d(QuantizeConfig, "seed"),
    # not the config's None (the caller's torch setting): the command line pins its own threads
    threads: Annotated[int, typer.Option("--threads")] = 2,
    batch: Annotated[int, typer.Option("--batch", help="Batch size for speed measurements.")] = _d(
        QuantizeConfig, "batch"
    ),
    rewrite: Annotated[
        bool,
        typer.Option(
            "--rewrite/--no-rewrite",
            help="Exact sub-pixel rewrite of upsample+conv chains (physics recipe).",
        ),
    ] = _d(QuantizeConfig, "rewrite"),
    equalize: Annotated[
        bool,
        typer.Option(
            "--equalize/--no-equalize",
            help="Try exactly equalized graphs (input ranges moved into the weights) on the units "
            "int8 had to leave float (physics int8).",
        ),
    ] = True,
    head_to_head: Annotated[
        bool,
        typer.Option(
            "--head-to-head",
            help="Also run NNCF accuracy control, INC autotune and LiteRT at the same tolerance.",
        ),
    ] = _d(QuantizeConfig, "head_to_head"),
    qat_minutes: Annotated[
        float,
        typer.Option(
            "--qat-minutes",
            help="Quantization-aware fine-tuning of the units post-training int8 left float, "
            "at most this many minutes (0: off; resumed when interrupted).",
        ),
    ] = _d(QATConfig, "minutes"),
) -> None:
    """Build a reduced-precision variant, tuned so that the physics stays within tolerance."""
    from caloquant.models import model_ref
    from caloquant.precision import Tolerance, check_artifact_dir, quantize as run_quantize
    from caloquant.report import head_to_head_table, quantize_summary

    check_artifact_dir(output)  # refused now, not after the tuning
    set_threads(threads)
    cfg = QuantizeConfig(
        backend=backend,
        precision=precision,
        recipe=recipe,
        tolerance=Tolerance.load(tolerance),  # type: ignore[arg-type]
        calibration=calibration,
        calib_n=calib_n,
        eval_n_per_point=eval_n,
        seed=seed,  # type: ignore[arg-type]
        threads=threads,
        batch=batch,
        rewrite=rewrite,
        head_to_head=head_to_head,
        qat=QATConfig(minutes=qat_minutes),
        **({} if equalize else {"equalize_alphas": ()}),
    )
    ref = model_ref(model)
    res = run_quantize(ref.float_checkpoint(), cfg, source=ref.name)
    res.save(output)
    out.print(quantize_summary(res.manifest))
    h2h = head_to_head_table(res.manifest)
    if h2h is not None:
        out.print(h2h)
    if not res.ok:
        conf = res.manifest.confirmation
        failed_second = conf is not None and not conf["passes"]
        worst = conf["physics"] if failed_second else res.manifest.physics
        msg = (
            (
                "passed the tuning latents but not the independent confirmation set: "
                if failed_second
                else ""
            )
            + f"physics outside tolerance (deviation + {cfg.tolerance.margin_sigma:g} "
            "standard errors): "
            f"worst |Ecal/Ecal_fp32 - 1| = {worst['worst_ecal_rel']:.4f} "
            f"(limit {cfg.tolerance.ecal_rel}), "
            f"worst moment shift {worst['worst_moment_shift']:.3f} cells "
            f"(limit {cfg.tolerance.moment_shift}); artifact written to {output} for inspection"
        )
        if recipe == "naive":
            out.print(Text(f" WARNING: {msg} ", style="bold white on red"))
        else:
            raise CaloquantError(f"tolerance not reachable; best found: {msg}")


# the defaults of the full and the quick study are written once, in RunConfig: the help shows them
@app.command("run", epilog=RunConfig.describe_defaults())
def run_cmd(
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            help="Run folder: report.html, report.json, steps/ (cached), models/, samples/.",
        ),
    ],
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            help="Built-in model name, checkpoint (.pt) or Keras 2 generator "
            "weights; repeatable (default: below).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A few minutes: the quick study (below) instead of the full one."
        ),
    ] = _d(RunConfig, "quick"),
    showers: Annotated[
        Optional[int],
        typer.Option("--showers", help="Reference showers flat over the model's energy range."),
    ] = _d(RunConfig, "n_flat"),
    per_point: Annotated[
        Optional[int], typer.Option("--per-point", help="Reference showers at each of 100-500 GeV.")
    ] = _d(RunConfig, "n_per_point"),
    engine: Annotated[
        Optional[str], typer.Option("--engine", help="Reference engine: geant4 or gflash.")
    ] = _d(RunConfig, "engine"),
    tune_budget: Annotated[
        Optional[float], typer.Option("--tune-budget", help="Seconds per quantize tuning.")
    ] = _d(RunConfig, "tune_budget_s"),
    bench_duration: Annotated[
        Optional[float], typer.Option("--bench-duration", help="Timed seconds per benchmark point.")
    ] = _d(RunConfig, "bench_duration_s"),
    mc_budget: Annotated[
        Optional[float], typer.Option("--mc-budget", help="Seconds for timing the Monte Carlo.")
    ] = _d(RunConfig, "mc_budget_s"),
    threads: Annotated[int, typer.Option("--threads")] = _d(RunConfig, "threads"),
    seed: Annotated[int, typer.Option("--seed")] = _d(RunConfig, "seed"),
) -> None:
    """The whole study in one command: reference showers, every precision variant, validation, \
benchmark, one HTML report."""
    from caloquant.run import run

    check_output(output, folder=True)
    set_threads(threads)
    cfg = RunConfig(
        models=tuple(model or ()),
        quick=quick,
        threads=threads,
        seed=seed,
        n_flat=showers,
        n_per_point=per_point,
        engine=engine,
        tune_budget_s=tune_budget,
        bench_duration_s=bench_duration,
        mc_budget_s=mc_budget,
    )
    run(cfg, output, console=out)


@app.command()
def bench(
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            help="Built-in model name or checkpoint (.pt), MODEL@BACKEND:PRECISION "
            "(e.g. cern-3dgan@openvino:bf16), or quantize artifact directory; repeatable. "
            "Default: cern-3dgan.",
        ),
    ] = None,
    threads: Annotated[
        str, typer.Option("--threads", help="Intra-op threads per stream, comma-separated.")
    ] = _csv(BenchConfig, "threads"),
    streams: Annotated[
        str, typer.Option("--streams", help="Concurrent inference streams, comma-separated.")
    ] = _csv(BenchConfig, "streams"),
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")] = _csv(
        BenchConfig, "batches"
    ),
    duration: Annotated[
        float,
        typer.Option(
            "--duration", help="Timed seconds per grid point (after a warm-up of a quarter of it)."
        ),
    ] = _d(BenchConfig, "duration_s"),
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            help="Repetitions: windows each point's time is split into, spread over the run "
            "(median reported).",
        ),
    ] = _d(BenchConfig, "rounds"),
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Write the full results as JSON.")
    ] = None,
    plots: Annotated[
        Optional[Path], typer.Option("--plots", help="Write PNG plots into this folder.")
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile/--no-profile", help="Per-op time profile of each model.")
    ] = _d(BenchConfig, "profile"),
    ceilings: Annotated[
        bool,
        typer.Option("--ceilings/--no-ceilings", help="Measure matmul ceilings for the roofline."),
    ] = _d(BenchConfig, "ceilings"),
    mc_command: Annotated[
        Optional[str],
        typer.Option(
            "--mc-command", help="A Monte Carlo command to time in this run (with --mc-showers)."
        ),
    ] = _d(BenchConfig, "mc_command"),
    mc_showers: Annotated[
        Optional[int], typer.Option("--mc-showers", help="Showers the --mc-command simulates.")
    ] = _d(BenchConfig, "mc_showers"),
    mc: Annotated[
        Optional[str],
        typer.Option(
            "--mc",
            help="Time caloquant's own Monte Carlo in this run (geant4 or gflash) "
            "at 100-500 GeV; speed-ups per energy and over a flat spectrum.",
        ),
    ] = _d(BenchConfig, "mc_engine"),
    mc_per_point: Annotated[
        int, typer.Option("--mc-per-point", help="Showers timed per energy point with --mc.")
    ] = _d(BenchConfig, "mc_showers_per_point"),
    mc_budget: Annotated[
        float, typer.Option("--mc-budget", help="Time budget (s) of the --mc timing.")
    ] = _d(BenchConfig, "mc_budget_s"),
    seed: Annotated[int, typer.Option("--seed")] = _d(BenchConfig, "seed"),
    skip_self_check: Annotated[bool, typer.Option("--skip-self-check", help=SKIP_CHECK_HELP)] = _d(
        BenchConfig, "skip_self_check"
    ),
) -> None:
    """Inference speed over threads x streams x batch, memory, per-op profile, roofline, speed-up \
vs Monte Carlo."""
    import shlex

    from caloquant.bench import run_bench
    from caloquant.models import DEFAULT_MODEL
    from caloquant.report import (
        bench_machine_line,
        bench_mc_table,
        bench_models_table,
        bench_plots,
        bench_profile_table,
        bench_results_table,
    )

    if json_out is not None:
        check_output(json_out, option="--json")
    if plots is not None:
        check_output(plots, folder=True, option="--plots")
    # every option is checked here, before a model is loaded or anything measured
    cfg = BenchConfig(
        threads=threads,
        streams=streams,
        batches=batch,
        duration_s=duration,
        rounds=rounds,
        profile=profile,
        ceilings=ceilings,
        seed=seed,
        mc_command=mc_command,
        mc_showers=mc_showers,
        skip_self_check=skip_self_check,
        mc_engine=mc,
        mc_showers_per_point=mc_per_point,
        mc_budget_s=mc_budget,
    )
    with progress() as bar:
        task = bar.add_task("benchmarking", total=None)

        def on_progress(total: int, done: int, what: str) -> None:
            bar.update(task, total=total, completed=done, description=what[:60])

        report = run_bench(model or [DEFAULT_MODEL], cfg, progress=on_progress)
    report["command"] = "caloquant " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.print(bench_machine_line(report), highlight=False)
    out.print(bench_results_table(report))
    out.print(bench_models_table(report))
    mct = bench_mc_table(report)
    if mct is not None:
        out.print(mct)
    prof = bench_profile_table(report)
    if prof is not None:
        out.print(prof)
    out.print(f"grid finished in {report['wall_s']:.0f} s")
    _write_outputs(report, json_out, plots, bench_plots)


@app.command("train")
def train_cmd(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="Training shower file (3DGAN or CaloChallenge HDF5); repeatable; "
            "a quoted glob pattern picks several.",
        ),
    ],
    # required, unlike TrainConfig's "conv2d" default: the command always asked which to train
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="conv2d (the paper's Conv2D generator) or gan3d (the CERN Conv3D 3DGAN).",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Run directory: last.pt, model.pt, log.csv, validation.json."
        ),
    ],
    width: Annotated[
        float,
        typer.Option(
            "--width", help="Channel-width multiplier of the conv2d model (1.0 = the paper's size)."
        ),
    ] = _d(TrainConfig, "width"),
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            help="Start from this model of the same architecture: built-in name (see `caloquant "
            "models`), checkpoint (.pt) or Keras 2 generator weights (.hdf5).",
        ),
    ] = _d(TrainConfig, "init"),
    epochs: Annotated[
        Optional[int],
        typer.Option(
            "--epochs", help="Epochs (default: the recipe's, 30 for conv2d, 50 for gan3d)."
        ),
    ] = _d(TrainConfig, "epochs"),
    batch: Annotated[
        int, typer.Option("--batch", help="Global batch size, split over the processes.")
    ] = _d(TrainConfig, "batch"),
    precision: Annotated[
        str, typer.Option("--precision", help="fp32, or bf16 (CPU autocast; float32 weights).")
    ] = _d(TrainConfig, "precision"),
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in the output directory from its last.pt."),
    ] = _d(TrainConfig, "resume"),
    seed: Annotated[int, typer.Option("--seed")] = _d(TrainConfig, "seed"),
    val_data: Annotated[
        Optional[Path],
        typer.Option(
            "--val-data",
            help="Held-out reference file for the per-epoch validation "
            "(default: the last --val-fraction of every training file).",
        ),
    ] = _d(TrainConfig, "val_data"),
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            help="Fraction of each training file held out when --val-data is not given.",
        ),
    ] = _d(TrainConfig, "val_fraction"),
    val_n: Annotated[
        int, typer.Option("--val-n", help="Held-out showers used per validation.")
    ] = _d(TrainConfig, "val_n"),
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every", help="Steps between checkpoints (last.pt); every epoch end too."
        ),
    ] = _d(TrainConfig, "checkpoint_every"),
    shuffle_buffer: Annotated[
        int, typer.Option("--shuffle-buffer", help="Showers held in memory for shuffling.")
    ] = _d(TrainConfig, "shuffle_buffer"),
    channels_last: Annotated[
        Optional[bool],
        typer.Option(
            "--channels-last/--no-channels-last",
            help="Channels-last memory layout of the convolutions "
            "(default: where measured faster: fp32, and gan3d in bf16).",
        ),
    ] = _d(TrainConfig, "channels_last"),
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads", help="Threads per process (default: cores / processes on the node)."
        ),
    ] = _d(TrainConfig, "threads"),
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard", help="Also write TensorBoard logs (needs the tensorboard package)."
        ),
    ] = _d(TrainConfig, "tensorboard"),
    ecal_fit: Annotated[
        str,
        typer.Option(
            "--ecal-fit",
            help="ECAL-sum target of generated showers: "
            "data (the authors' form fitted to the training data) "
            "or recipe (their published constants).",
        ),
    ] = _d(TrainConfig, "ecal_fit"),
    energy_stage: Annotated[
        bool,
        typer.Option(
            "--energy-stage/--no-energy-stage",
            help="Two-stage model: Ecal/Ep from a conditional flow fitted to the training "
            "showers, the shape from the GAN (docs/training.md); default: the authors' single "
            "generator.",
        ),
    ] = _d(TrainConfig, "energy_stage"),
    d_input_power: Annotated[
        float,
        typer.Option(
            "--d-input-power",
            help="The discriminator sees cells to this power (below 1: the low-energy cells "
            "weigh more; 1: the authors' raw cells).",
        ),
    ] = _d(TrainConfig, "d_input_power"),
    physics_loss: Annotated[
        float,
        typer.Option(
            "--physics-loss",
            help="Weight of the generator's physics term: the batch means of the cell spectrum, "
            "shower centres and widths pulled towards the real batch's (0: the authors' loss).",
        ),
    ] = _d(TrainConfig, "physics_loss"),
    physics_layers: Annotated[
        bool,
        typer.Option(
            "--physics-layers/--no-physics-layers",
            help="The physics term also matches each layer's energy fraction and transverse "
            "centres and widths (what the CaloChallenge high-level classifier reads).",
        ),
    ] = _d(TrainConfig, "physics_layers"),
    physics_layer_cells: Annotated[
        bool,
        typer.Option(
            "--physics-layer-cells/--no-physics-layer-cells",
            help="The physics term also matches each layer's count of cells above 1 keV and "
            "its radial width (CaloChallenge's sparsity and wr per layer).",
        ),
    ] = _d(TrainConfig, "physics_layer_cells"),
    generator_dropout: Annotated[
        bool,
        typer.Option(
            "--generator-dropout/--no-generator-dropout",
            help="Dropout in the generator's training updates (the authors' recipe); off, the "
            "network that is trained is the one that is deployed.",
        ),
    ] = _d(TrainConfig, "generator_dropout"),
    ema: Annotated[
        float,
        typer.Option(
            "--ema",
            help="Decay of the moving average of the generator's weights that is validated and "
            "exported (0: the raw generator).",
        ),
    ] = _d(TrainConfig, "ema"),
    energy_range: Annotated[
        Optional[str],
        typer.Option(
            "--energy-range",
            help="LO:HI in GeV: the incident energies the training data were made for, the "
            "model's valid range (default: as the data's generator declared it, else the lowest "
            "and highest training energy).",
        ),
    ] = _d(TrainConfig, "energy_range"),
) -> None:
    """Train a 3DGAN-family model with its authors' recipe; run under torchrun for data \
parallelism."""
    from caloquant.train import train

    check_output(output, folder=True)
    cfg = TrainConfig(
        data=data,
        out=str(output),
        model=model,
        width=width,
        init=init,
        epochs=epochs,
        batch=batch,
        precision=precision,
        resume=resume,
        seed=seed,  # type: ignore[arg-type]
        val_data=str(val_data) if val_data else None,
        val_fraction=val_fraction,
        val_n=val_n,
        checkpoint_every=checkpoint_every,
        shuffle_buffer=shuffle_buffer,
        channels_last=channels_last,
        threads=threads,
        tensorboard=tensorboard,
        ecal_fit=ecal_fit,
        energy_stage=energy_stage,
        ema=ema,
        d_input_power=d_input_power,
        physics_loss=physics_loss,
        physics_layers=physics_layers,
        physics_layer_cells=physics_layer_cells,
        generator_dropout=generator_dropout,
        energy_range=energy_range,  # "LO:HI", parsed and checked by the config
    )
    with progress() as bar:
        task = bar.add_task("training", total=None)

        def on_step(p: dict[str, Any]) -> None:
            loss = p["losses"]
            bar.update(
                task,
                total=p["total_steps"],
                completed=p["step"],
                description=f"epoch {p['epoch']}/{p['epochs']}  "
                f"D {loss['d_loss']:.3g}  G {loss['g_loss']:.3g}  "
                f"{p['showers_per_s']:.1f} showers/s",
            )

        res = train(cfg, progress=on_step, log=_note)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    if res.model is not None:
        _tell(f"selected epoch {res.best_epoch} by {res.selected_by}: {res.model}")
    _tell(f"{res.steps} steps, {res.epochs_done} epochs done; run directory {res.run_dir}")


def _write_outputs(
    report: dict[str, Any],
    json_out: Path | None,
    plots: Path | None,
    plotter: Callable[[dict[str, Any], Path], list[Path]],
) -> None:
    """The --json / --plots tail shared by validate and bench."""
    from caloquant.fileio import write_json

    if json_out is not None:
        write_json(json_out, report)
        _tell(f"wrote {json_out}")
    if plots is not None:
        paths = plotter(report, plots)
        _tell(f"wrote {len(paths)} plots to {plots}")


class Interrupted(Exception):
    """Ctrl-C, with what the command has to say about it (printed by :func:`main`, exit 130).
    Not a KeyboardInterrupt: click would turn that into a silent exit."""


def _say(label: str, message: str) -> None:
    """One line on stderr, the message verbatim: it quotes user text (file names like
    'run[red].h5'), which rich would otherwise read as markup."""
    text = Text.assemble((label, "bold red"), " ", message) if label else Text(message, "bold red")
    console.print(text, highlight=False, soft_wrap=True)


def _refuse_empty_arguments(args: list[str]) -> None:
    """An empty value (``-o ''``, ``--json=``) names nothing: Typer would read it as the current
    folder. Refused before any command runs, naming the option."""
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if a.startswith("--") and eq and not value.strip():
            raise CaloquantError(f"{flag}: empty value")
        if not a.strip():
            before = args[i - 1] if i and args[i - 1].startswith("-") else None
            raise CaloquantError(f"{before}: empty value" if before else "empty argument")


def main() -> None:
    """Entry point: one-line errors and a non-zero exit for bad input, never a traceback."""
    # click's UsageError as this Typer raises it (Typer 0.2x vendors click as typer._click):
    # the public BadParameter derives from it in every version
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        _setup_output()
        _refuse_empty_arguments(sys.argv[1:])
        # not standalone: usage errors come back here (said in one line, not in a box), and
        # Ctrl-C comes back as exit code 130 (or Abort) instead of a silent exit
        code = app(standalone_mode=False, prog_name="caloquant")
    except usage_error as exc:  # a bad option value, an unknown command or option, ...
        if type(exc).__name__ == "NoArgsIsHelpError":  # `caloquant` alone: the help is printed
            sys.exit(2)
        err: Any = exc
        msg = " ".join(err.format_message().split()).rstrip(".")
        _say("error:", msg[:1].lower() + msg[1:] if msg[1:2].islower() else msg)
        where = err.ctx.command_path if getattr(err, "ctx", None) is not None else "caloquant"
        console.print(Text(f"try '{where} --help'"), highlight=False, soft_wrap=True)
        sys.exit(2)
    except CaloquantError as exc:
        _say("error:", str(exc))
        sys.exit(2)
    except Interrupted as exc:
        _say("", str(exc))
        sys.exit(130)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:
        _say("", "interrupted")
    # always a SystemExit, as click's standalone mode ends (callers in-process rely on it)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
