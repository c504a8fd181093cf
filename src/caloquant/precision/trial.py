"""One configuration the tuner tried (:mod:`caloquant.precision.tuner`): what it was, its
physics, whether it met the tolerance, its speed. A module of its own so that the tuner and
its recipe steps (:mod:`caloquant.precision.tuner_steps`) share it without importing each
other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Trial:
    name: str
    config: dict[str, Any]
    score: dict[str, Any]
    passes: bool
    badness: float
    speed: dict[str, float] | None = None
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)
    # the same check on a second, independent latent set
    confirmation: dict[str, Any] | None = None
    step: str = ""  # the tuner step (technique) that made this trial

    @property
    def ok(self) -> bool:
        """Passes, and passes again on the second latent set where it was confirmed."""
        return self.passes and (self.confirmation is None or bool(self.confirmation["passes"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "passes": self.passes,
            "badness": self.badness,
            "physics": {k: v for k, v in self.score.items() if k != "points"},
            "points": self.score.get("points", []),
            "speed": self.speed,
            "seconds": round(self.seconds, 2),
            "confirmation": self.confirmation,
            "step": self.step,
        }
