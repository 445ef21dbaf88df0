"""The quality report's figures as PNGs: the paper's Figure 3 (ROUGE-L of each kept instruction against its
most similar seed instruction) and Figure 4 (length distributions). matplotlib is imported only here, when
a worker draws them at export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.method.outputs.report import FIGURES


def draw(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw Figure 3 and Figure 4 as PNGs into out_dir; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rouge = report["rouge_l_to_nearest_seed"]
    width = rouge["bin_width"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([i * width for i in range(len(rouge["counts"]))], rouge["counts"], width=width, align="edge")
    ax.set_xlabel("ROUGE-L with the most similar seed instruction")
    ax.set_ylabel("# instructions")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES["rouge"], dpi=100, metadata={"Software": None})
    plt.close(fig)

    titles = {
        "instruction_words": "Instruction",
        "non_empty_input_words": "Non-empty input",
        "output_words": "Output",
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (name, title) in zip(axes, titles.items(), strict=True):
        counts = {int(k): v for k, v in report["lengths"][name].items()}
        ax.bar(list(counts), list(counts.values()), width=1.0)
        ax.set_title(title)
        ax.set_xlabel("length (words)")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES["lengths"], dpi=100, metadata={"Software": None})
    plt.close(fig)
    return list(FIGURES.values())
