"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def assert_one_line_error(res: Any, *needles: str) -> None:
    assert res.code != 0, f"expected failure, got exit 0: {res.out}"
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{res.err}"
    assert "Traceback" not in res.err
    assert lines[0].startswith("error:"), lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as h5:
        for k, v in datasets.items():
            h5.create_dataset(k, data=v)
    return path
