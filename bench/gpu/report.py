"""Turn bench/gpu_check.sh's JSON results into a Markdown section that can be appended to bench/RESULTS.md.

    python bench/gpu/report.py RESULTS_DIR > RESULTS_DIR/gpu_check.md

Reads ``env.json``, ``tests.json``, ``sd15.json`` and ``generate.json`` (any may be missing: a stage that
failed or ran out of time is reported as such) and compares the figures with the targets of issue 12.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {  # figure -> (limit, what), all "at most"
    "minutes_per_10k_steps": (4.0, "10,000 SD 1.5 steps, minutes"),
    "peak_vram_gb": (6.0, "peak VRAM of the SJC loop, GiB"),
    "outside_unet_share": (0.15, "share of a step outside the UNet"),
}


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    f = folder / name
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def report(folder: Path) -> str:
    env, tests = _load(folder, "env.json") or {}, _load(folder, "tests.json")
    sd, gen = _load(folder, "sd15.json"), _load(folder, "generate.json")
    lines = [f"## GPU check ({env.get('date', '?')}, {env.get('gpu', '?')})", ""]
    lines.append(f"`bench/gpu_check.sh` (mode {env.get('mode', '?')}): torch {env.get('torch', '?')}, "
                 f"CUDA {env.get('cuda', '?')}, Python {env.get('python', '?')}, diffusers {env.get('diffusers', '?')}, "
                 f"transformers {env.get('transformers', '?')}; total {_fmt(env.get('total_s', float('nan')))} s.")
    lines.append("")
    if tests is None:
        lines.append("- CUDA-marked tests: did not run (see log.txt)")
    else:
        lines.append(f"- CUDA-marked tests (`pytest -m cuda`): exit {tests['rc']}: {tests['summary']}")
    if sd is None:
        lines.append("- SD 1.5-shaped UNet: did not finish (see log.txt)")
    else:
        shape = "tiny UNet (dry run)" if sd.get("tiny") else "SD 1.5-shaped random UNet"
        lines += [
            f"- {shape}, {sd['unet_params_m']:.3g}M parameters, {sd['dtype']}, grid {sd['grid']}, render {sd['render']}:",
            "",
            "| figure | value | target |",
            "| --- | --- | --- |",
            f"| guided UNet call (batch 2), ms | {_fmt(sd['unet_ms'])} | |",
            f"| same, channels_last, ms | {_fmt(sd.get('unet_ms_channels_last', float('nan')))} | |",
        ]
        if "unet_ms_compiled" in sd:
            lines.append(f"| same, torch.compile reduce-overhead, ms (compile {_fmt(sd['compile_s'])} s) | "
                         f"{_fmt(sd['unet_ms_compiled'])} | |")
        elif not sd.get("tiny"):
            lines.append("| same, torch.compile reduce-overhead, ms | not measured (see compile.log) | |")
        lines.append(f"| SJC steps per second ({sd['sjc_steps']} steps) | {_fmt(sd['steps_per_s'])} | |")
        for key, (limit, what) in TARGETS.items():
            if key in sd:
                ok = "not comparable: dry run" if sd.get("tiny") else ("met" if sd[key] <= limit else "MISSED")
                lines.append(f"| {what} | {_fmt(sd[key])} | <= {_fmt(limit)} ({ok}) |")
        if "weights_vram_gb" in sd:
            lines.append(f"| VRAM of the weights alone, GiB | {_fmt(sd['weights_vram_gb'])} | |")
        lines.append("")
    if gen is None:
        lines.append("- `sjc generate` with a tiny random SD pipeline: did not finish (see log.txt)")
    else:
        files = ", ".join(sorted(k for k in gen["files"] if not k.startswith("previews/")))
        lines.append(f"- `sjc generate` {gen['steps']} steps, tiny random SD pipeline (latent {gen['sample_size']}, "
                     f"grid {gen['grid']}): exit {gen['rc']}, {_fmt(gen['wall_s'])} s wall including model load and "
                     f"exports; wrote {files}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
