"""Turn a pytest-benchmark JSON file from benches/test_pipeline.py into the README's tables.

    python benches/report.py out/bench.json

Ratios are of medians measured in the same run: peer / ctfp (higher is better for ctfp).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

N_IMAGES = 64
# (what, numerator, denominator, at least) per dtype; only the bound against OpenCV differs
TARGETS = {
    dtype: [
        ("ctfp vs single-warp OpenCV, 1 thread", "opencv_single_warp", "ctfp[1]", vs_opencv),
        (
            "ctfp + decode cache vs single-warp OpenCV, 1 thread",
            "opencv_single_warp",
            "ctfp_cached[1]",
            4.0,
        ),
        ("ctfp speed-up, 1 -> all threads", "ctfp[1]", "ctfp[all]", 1.85),
    ]
    for dtype, vs_opencv in (("uint8", 2.5), ("float32", 2.0))
}


def _key(bench: dict) -> str:
    info = bench["extra_info"]
    if info["library"] != "ctfp":
        return info["library"]
    threads = "1" if info["threads"] == 1 else "all"
    return f"ctfp{'_cached' if info.get('cache') else ''}[{threads}]"


def report(path: str) -> str:
    data = json.loads(Path(path).read_text())
    cpu = data["machine_info"].get("cpu", {}).get("brand_raw", "unknown CPU")
    lines = [
        f"Machine: {cpu}, {data['machine_info'].get('cpu', {}).get('count', '?')} cores; "
        f"ctfp release build; {N_IMAGES} CT-like 256x256 PNGs -> (64, 3, 224, 224) per call.",
        "",
    ]
    for dtype in ("uint8", "float32"):
        group = [b for b in data["benchmarks"] if b["group"] == f"load+augment {dtype}"]
        if not group:
            continue
        med = {_key(b): b["stats"]["median"] for b in group}
        threads = {_key(b): b["extra_info"]["threads"] for b in group}
        base = med["ctfp[1]"]
        lines += [
            f"**{dtype}** (median of each; ratio = its time / ctfp 1-thread time)",
            "",
            "| pipeline | threads | ms / batch | images/s | time vs ctfp (1 thread) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, m in sorted(med.items(), key=lambda kv: kv[1]):
            lines.append(
                f"| {name} | {threads[name]} | {m * 1e3:.1f} | {N_IMAGES / m:,.0f} "
                f"| {m / base:.2f}x |"
            )
        lines += ["", "| target | measured | at least | met |", "|---|---:|---:|---|"]
        for what, num, den, goal in TARGETS[dtype]:
            ratio = med[num] / med[den]
            lines.append(
                f"| {what} | {ratio:.2f}x | {goal}x | {'yes' if ratio >= goal else 'NO'} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1] if len(sys.argv) > 1 else "out/bench.json"))
