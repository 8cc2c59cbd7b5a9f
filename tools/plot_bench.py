"""Bar chart of time and peak device memory from `cascadeseg bench cascade --json OUT.json`.

    tools/.venv/bin/python tools/plot_bench.py docs/bench/cascade_ch2.json -o docs/bench/cascade_ch2.png

One panel per measure, one bar per mode (single-stage, cascade, each with and without a memory
budget, and any other rows the JSON holds, e.g. the ONNX Runtime and PyTorch rows that
tools/bench_cascade_table.py adds, with `memory_title` naming what their memory is), the value
and the ratio against single-stage written on each bar. Numbers come only from the JSON, which
the bench commands wrote in the same run.
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="output of `cascadeseg bench cascade --json`")
    parser.add_argument("-o", "--out", required=True, help="PNG to write")
    args = parser.parse_args()
    with open(args.json) as f:
        bench = json.load(f)
    rows = bench["rows"]
    base = next((r for r in rows if r["mode"] == "single-stage"), rows[0])
    modes = [r["mode"] for r in rows]
    panels = [
        ("wall time (s)", [r["seconds"] for r in rows], base["seconds"]),
        (bench.get("memory_title", "peak device memory (MiB)"), [r["peak_device_bytes"] / 1048576 for r in rows],
         base["peak_device_bytes"] / 1048576),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 0.55 * len(rows)))
    colours = (["#777777", "#1f77b4", "#2ca02c", "#bbbbbb", "#d62728", "#ff7f0e"] * 2)[: len(rows)]
    for ax, (title, values, reference) in zip(axes, panels):
        bars = ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), modes)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for bar, v in zip(bars, values):
            ratio = reference / v if v else float("inf")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.1f} ({ratio:.1f}x less)" if ratio > 1.05 else f" {v:.1f}",
                    va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.45)
    budget = bench.get("memory_budget_bytes")
    subtitle = f"{bench['model']} on {bench['image'].split('/')[-1]}, {bench['device']}" + (f", budget {budget / 1048576:.0f} MiB" if budget else "")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
