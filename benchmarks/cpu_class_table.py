"""The per-CPU-class table of docs/findings.md (issue 25): what the default
`caloquant quantize --precision int8` returns on this CPU, its speed against PyTorch fp32 and
the engine's exact fp32 model, its size and tuning time, and the check of the issue: one
`caloquant bench --model Q --model F --threads 2 --streams 1 --batch 32 --mc geant4` run of the
tuner's artifact Q against the exact fp32 engine artifact F (`--precision fp32 --backend
openvino`), ratio Q / F >= 0.97.

    .venv/bin/python benchmarks/cpu_class_table.py [--emulate avx2|avx512-bf16] [--model M]

``--emulate`` runs every command with the kernels of another CPU class
(tests/cpu_class/sitecustomize.py: oneDNN inside OpenVINO and PyTorch limited by
``ONEDNN_MAX_CPU_ISA``, precision hints compiled as OpenVINO compiles them on that class, the
class's flags as caloquant reads them): ``avx2`` the AMD Zen 3 class, ``avx512-bf16`` the AMD
Zen 4 class (AVX-512 VNNI and BF16, no AMX, no fp16 arithmetic), on a CPU that has more.
Labelled as emulated in the result: not the real CPU's caches, clocks or memory. Run on a
quiet host: nothing else should use the CPU (pause long jobs first). Writes
benchmarks/results/cpu_class/<cpu class>[-emulated-on-<real class>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from caloquant.runtime import cpu_identity  # noqa: E402

# --emulate: oneDNN's ISA limit and the CPU class it stands for (tests/cpu_class/sitecustomize.py)
EMULATE = {"avx2": ("AVX2", "x86-avx2"), "avx512-bf16": ("AVX512_CORE_BF16", "x86-avx512-bf16")}


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cern-3dgan")
    ap.add_argument("--emulate", choices=sorted(EMULATE), default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cq_cpu_class"))
    a = ap.parse_args()
    cq = str(Path(sys.executable).with_name("caloquant"))
    env = dict(os.environ)
    ident = cpu_identity()
    label = str(ident["cpu_class"])
    if a.emulate:
        env |= {
            "ONEDNN_MAX_CPU_ISA": EMULATE[a.emulate][0],
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "tests" / "cpu_class"), env.get("PYTHONPATH", "")]
            ),
        }
        label = f"{EMULATE[a.emulate][1]}-emulated-on-{label}"
    w = a.work / label
    w.mkdir(parents=True, exist_ok=True)
    q, f, b = w / "q_int8", w / "f_fp32", w / "bench.json"
    for p in (q, f):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    common = ["--model", a.model, "--threads", "2"]
    t_q = run([cq, "quantize", *common, "-o", str(q)], env, w / "quantize_int8.log")
    t_f = run(
        [cq, "quantize", *common, "--precision", "fp32", "--backend", "openvino", "-o", str(f)],
        env,
        w / "quantize_fp32.log",
    )
    bench = [cq, "bench", "--model", str(q), "--model", str(f), "--threads", "2", "--streams", "1"]
    bench += ["--batch", "32", "--mc", "geant4", "--json", str(b)]
    t_b = run(bench, env, w / "bench.log")
    mq = json.loads((q / "manifest.json").read_text())
    rep = json.loads(b.read_text())
    sps = {m["model"]: m["best"]["showers_per_s"] for m in rep["models"]}
    names = list(sps)
    row = rep["results"][0]
    out = {
        "cpu": ident,
        "emulated": a.emulate and {"class": EMULATE[a.emulate][1], "on": ident["cpu_class"]},
        "model": a.model,
        "returned": {
            "decision": (mq.get("race") or {}).get("decision"),
            "why": (mq.get("race") or {}).get("why"),
            "executed_precision": mq["executed_precision"],
            "layer_precisions": mq["layer_precisions"],
            "int8_search": mq.get("int8_search"),
            "skipped_precisions": mq.get("skipped_precisions"),
            "speedup_vs_torch_fp32": mq["speed"]["speedup_vs_torch_fp32"],
            "speedup_vs_engine_fp32_same_graph": mq["speed"]["speedup_vs_openvino_fp32_same_graph"],
            "size_bytes": mq["size_bytes"],
            "fp32_param_bytes": mq["fp32_param_bytes"],
            "tuning_seconds": mq["tuning_seconds"],
            "race_host_load": (mq.get("race") or {}).get("host_load"),
        },
        "bench": {
            "showers_per_s": sps,
            "ratio_tuned_over_exact_fp32": sps[names[0]] / sps[names[1]],
            "speedup_vs_mc_engine_per_core": {
                m["model"]: m["best"].get("speedup_vs_mc_engine_per_core") for m in rep["models"]
            },
            "row_keys_example": sorted(k for k in row if "per_core" in k),
            "load_before": rep["machine"].get("load_before"),
            "load_after": rep["machine"].get("load_after"),
        },
        "wall_seconds": {"quantize_int8": t_q, "quantize_fp32": t_f, "bench": t_b},
    }
    dst = ROOT / "benchmarks" / "results" / "cpu_class" / f"{label}.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("returned", "bench", "wall_seconds")}, indent=1))


if __name__ == "__main__":
    main()
