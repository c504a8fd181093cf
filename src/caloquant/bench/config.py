"""What `caloquant bench` measures: the grid, the timing budget and the Monte Carlo reference,
checked on construction (`BenchConfig`, the one place of every bench option's check, for the CLI
and the Python API), and the comma-separated integer options it is built from
(`parse_int_list`)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from caloquant.bench.montecarlo import check_mc_engine
from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    MAX_SECONDS,
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    as_int,
    check_bool,
    check_float,
    check_int,
    check_seconds,
    check_seed,
)
from caloquant.timing import TimingConfig

MAX_ROUNDS = 1000  # windows per grid point: more only cut each window below a timer's grain
MAX_CALLS = 1_000_000  # calls per window (the timing's max_calls)
MAX_RETRIES = 100


def parse_int_list(
    text: str | Sequence[int], option: str, hi: int | None = None
) -> tuple[int, ...]:
    """'1,2,4' (or a sequence of integers) -> (1, 2, 4): integers from 1 to ``hi``, duplicates
    dropped, order kept; else a one-line error naming ``option``."""
    bad = f"{option} must be a comma-separated list of positive integers, got {text!r}"
    if not isinstance(text, str):
        try:
            items = list(text)
        except TypeError:
            raise CaloquantError(bad) from None
        vals = [as_int(v, option) for v in items]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise CaloquantError(bad) from None
    if not vals or any(v < 1 for v in vals):
        raise CaloquantError(bad)
    if hi is not None:
        for v in vals:
            check_int(v, option, 1, hi)
    return tuple(dict.fromkeys(vals))


@dataclass(frozen=True)
class BenchConfig:
    """What `caloquant bench` measures.

    ``duration_s`` is the timed budget per grid point, split into ``rounds`` windows (each at
    least ``min_calls`` call per stream); the first window of a point is preceded by a warm-up
    of ``warmup_s`` (default a quarter of ``duration_s``, at least one call per stream).
    """

    # integers, or their text '1,2' (the CLI's), kept as a tuple
    threads: tuple[int, ...] | str = (1, 2)
    streams: tuple[int, ...] | str = (1, 2)
    batches: tuple[int, ...] | str = (1, 8, 32, 128)
    duration_s: float = 2.0
    warmup_s: float | None = None
    rounds: int = 4
    min_calls: int = 1
    profile: bool = True
    profile_batch: int | None = None  # default: 32 if in the grid, else the largest batch
    ceilings: bool = True
    seed: int = 0
    # re-measure a window when other processes took more of the CPUs
    max_other_load_pct: float = 25.0
    retries: int = 1
    mc_command: str | None = None
    mc_showers: int | None = None
    # a model whose first call takes longer is timed by that call alone
    first_call_budget_s: float = 20.0
    skip_self_check: bool = False  # load artifacts without running their canary on this CPU
    mc_engine: str | None = None  # caloquant.sim engine timed in this run (--mc geant4)
    mc_showers_per_point: int = 3
    mc_budget_s: float = 300.0
    # also time grid points whose threads x streams exceed the usable cores
    oversubscribe: bool = True

    def __post_init__(self) -> None:
        """Every option is checked here, before a model is loaded, a ceiling measured or a
        Monte Carlo run: one-line errors naming the command-line flag (the field's name where
        the CLI has none). Lists given as text ('1,2,4') are parsed here."""
        checked: dict[str, Any] = {
            "threads": parse_int_list(self.threads, "--threads", MAX_THREADS),
            "streams": parse_int_list(self.streams, "--streams", MAX_THREADS),
            "batches": parse_int_list(self.batches, "--batch", MAX_BATCH),
            "duration_s": check_seconds(self.duration_s, "--duration"),
            "rounds": check_int(self.rounds, "--rounds", 1, MAX_ROUNDS),
            "min_calls": check_int(self.min_calls, "min_calls", 1, MAX_CALLS),
            "seed": check_seed(self.seed),
            "max_other_load_pct": check_float(
                self.max_other_load_pct, "max_other_load_pct", minimum=0
            ),
            "retries": check_int(self.retries, "retries", 0, MAX_RETRIES),
            "first_call_budget_s": check_seconds(self.first_call_budget_s, "first_call_budget_s"),
            "mc_showers_per_point": check_int(
                self.mc_showers_per_point, "--mc-per-point", 1, MAX_SHOWERS_PER_CALL
            ),
            "mc_budget_s": check_seconds(self.mc_budget_s, "--mc-budget"),
        }
        for name, flag in (
            ("profile", "--profile/--no-profile"),
            ("ceilings", "--ceilings/--no-ceilings"),
            ("skip_self_check", "--skip-self-check"),
            ("oversubscribe", "oversubscribe"),
        ):
            checked[name] = check_bool(getattr(self, name), flag)
        if self.warmup_s is not None:
            w = check_float(self.warmup_s, "warmup_s", minimum=0)
            if w > MAX_SECONDS:
                raise CaloquantError(f"warmup_s must be at most {MAX_SECONDS:,.0f} s, got {w:g}")
            checked["warmup_s"] = w
        if self.profile_batch is not None:
            checked["profile_batch"] = check_int(self.profile_batch, "profile_batch", 1, MAX_BATCH)
        if self.mc_command is not None:
            checked["mc_command"] = _check_command(self.mc_command, "--mc-command")
        if self.mc_showers is not None:
            checked["mc_showers"] = check_int(
                self.mc_showers, "--mc-showers", 1, MAX_SHOWERS_PER_CALL
            )
        if (self.mc_command is None) != (self.mc_showers is None):
            raise CaloquantError(
                "--mc-command and --mc-showers go together "
                "(the command simulates --mc-showers showers)"
            )
        for k, v in checked.items():
            object.__setattr__(self, k, v)
        if self.mc_engine is not None:  # last: for geant4 it asks whether the engine runs here
            check_mc_engine(self.mc_engine)
        self.timing  # noqa: B018 - validates the derived timing settings

    @property
    def timing(self) -> TimingConfig:
        """The shared timing settings (caloquant.timing) this grid uses for each window."""
        return TimingConfig(
            window_s=self.duration_s / self.rounds,
            rounds=self.rounds,
            warmup_s=self.warmup,
            min_calls=self.min_calls,
            max_calls=1_000_000,
            first_call_budget_s=self.first_call_budget_s,
        )

    @property
    def warmup(self) -> float:
        return 0.25 * self.duration_s if self.warmup_s is None else self.warmup_s

    @property
    def profile_at(self) -> int:
        if self.profile_batch is not None:
            return self.profile_batch
        return 32 if 32 in self.batches else max(self.batches)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("threads", "streams", "batches"):
            d[k] = list(d[k])
        d["warmup_s"] = self.warmup
        d["timing"] = self.timing.to_dict()
        return d


def _check_command(command: Any, flag: str) -> str:
    """A command line to run (split as a shell would, not run by one)."""
    if not isinstance(command, str):
        raise CaloquantError(f"{flag} must be a command line (text), got {command!r}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # "No closing quotation"
        raise CaloquantError(f"{flag} {command!r}: {str(exc).lower()}") from None
    if not argv:
        raise CaloquantError(f"{flag} is empty")
    return command
