"""What `caloquant bench` measures: the grid, the timing budget and the Monte Carlo reference,
checked on construction (`BenchConfig`), and the comma-separated integer options it is built
from (`parse_int_list`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from caloquant.bench.montecarlo import check_mc_engine
from caloquant.errors import CaloquantError
from caloquant.timing import TimingConfig


def parse_int_list(text: str | Sequence[int], option: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): positive integers, duplicates dropped, order kept."""
    if not isinstance(text, str):
        vals = [int(v) for v in text]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise CaloquantError(
                f"{option} must be a comma-separated list of positive integers, got '{text}'"
            ) from None
    if not vals or any(v < 1 for v in vals):
        raise CaloquantError(
            f"{option} must be a comma-separated list of positive integers, got '{text}'"
        )
    return tuple(dict.fromkeys(vals))


@dataclass(frozen=True)
class BenchConfig:
    """What `caloquant bench` measures.

    ``duration_s`` is the timed budget per grid point, split into ``rounds`` windows (each at
    least ``min_calls`` call per stream); the first window of a point is preceded by a warm-up
    of ``warmup_s`` (default a quarter of ``duration_s``, at least one call per stream).
    """

    threads: tuple[int, ...] = (1, 2)
    streams: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8, 32, 128)
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
        for name, option in (
            ("threads", "--threads"),
            ("streams", "--streams"),
            ("batches", "--batch"),
        ):
            parse_int_list(getattr(self, name), option)
        if not self.duration_s > 0:
            raise CaloquantError(f"duration must be positive, got {self.duration_s}")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise CaloquantError(f"warm-up must not be negative, got {self.warmup_s}")
        if self.rounds < 1:
            raise CaloquantError(f"rounds must be at least 1, got {self.rounds}")
        if self.retries < 0:
            raise CaloquantError(f"retries must not be negative, got {self.retries}")
        if self.min_calls < 1:
            raise CaloquantError(f"min_calls must be at least 1, got {self.min_calls}")
        if (self.mc_command is None) != (self.mc_showers is None):
            raise CaloquantError(
                "mc_command and mc_showers go together (the command simulates that many showers)"
            )
        if self.mc_engine is not None:
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
