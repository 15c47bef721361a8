"""Reports of an offline evaluation (``recommender.ml.evaluation``): the tables,
the comparison lines, markdown and a chart, from the report dict alone."""

from __future__ import annotations

from recommender.ml.evaluation_fit import SERVED, STRATEGIES, STRATEGY_LABELS


def report_table(report: dict, *, protocol: str) -> list[list[str]]:
    """Rows (header first) of one protocol's table: strategy, AUC, the top-k
    metrics and (among everyone) exposure; values to 3 decimals ("–" where
    undefined)."""
    k = report["k"]
    columns = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    if protocol == "everyone":
        columns.append(f"mutual@{k}")
    header = ["strategy", "AUC", *columns]
    if protocol == "everyone":
        header += ["exposure Gini", "top 1 % share"]
    table = [header]
    for name in STRATEGIES:
        entry = report["strategies"].get(name)
        if entry is None:
            continue
        metrics = entry[protocol]
        row = [
            STRATEGY_LABELS[name],
            _fmt(entry["auc"]),
            *(_fmt(metrics.get(c)) for c in columns),
        ]
        if protocol == "everyone":
            row += [
                _fmt(entry["exposure"]["gini"]),
                _fmt(entry["exposure"]["top1_share"]),
            ]
        table.append(row)
    return table


def recall_table(report: dict) -> list[list[str]]:
    """Rows (header first): candidate recall and mean candidates per source."""
    table = [["candidate source", "recall of held-out likes", "mean candidates"]]
    for name, entry in report["candidate_recall"].items():
        table.append([name, _fmt(entry["recall"]), _fmt(entry["mean_candidates"], 1)])
    return table


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _markdown_table(table: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in table[1:]]


def comparison_lines(report: dict) -> list[str]:
    """The served pipeline minus the best other strategy, per metric, with the
    95 % bootstrap interval of the paired difference over viewers."""
    lines = []
    for metric, other in report["best_other"].items():
        entry = report["comparisons"][f"{SERVED}_minus_{other}:{metric}"]
        low, high = entry["ci95"]
        verdict = (
            "better"
            if low is not None and low > 0
            else "worse"
            if high is not None and high < 0
            else "not distinguishable"
        )
        lines.append(
            f"{metric}: served − best other ({STRATEGY_LABELS[other]}) = "
            f"{entry['mean']:+.3f} (95 % CI {_fmt(low)} … {_fmt(high)}): {verdict}"
        )
    return lines


def ceiling_line(report: dict) -> str:
    """What a perfect ranking among everyone would reach on these viewers."""
    k, ceiling = report["k"], report["counts"]["ceiling"]
    precision, mutual = ceiling[f"precision@{k}"], ceiling[f"mutual@{k}"]
    return (
        f"A perfect ranking would reach precision@{k} {precision:.3f} and "
        f"mutual@{k} {mutual:.3f} (each viewer's top {k} filled with their "
        "held-out likes, mutual ones first)."
    )


def report_markdown(report: dict, *, title: str, chart: str | None = None) -> str:
    """The report as Markdown: both protocols' tables, candidate recall, the
    comparisons, the split and counts."""
    counts = report["counts"]
    lines = [f"## {title}", ""]
    lines.append(
        f"{counts['members']:,} members, {counts['interactions']:,} interactions; "
        f"trained on {counts['training_interactions']:,} before the cut, tested on "
        f"{counts['test_interactions']:,} after it ({counts['test_likes']:,} likes, "
        f"{counts['test_dislikes']:,} dislikes; "
        f"{counts['mutual_pairs_formed_in_test']:,} mutual likes completed). "
        f"{counts['viewers_ranked_among_everyone']:,} viewers ranked among everyone. "
        f"Ranking model: {counts['ranking_model_type']}, reciprocal weight "
        f"{counts['reciprocal_weight']:g}."
    )
    if counts.get("serving_order", "model") != "model":
        lines[-1] += (
            f" The order {counts['serving_order']!r} beat the model on validation,"
            " so the served pipeline ranks its candidates by that order."
        )
    lines[-1] += " " + ceiling_line(report)
    lines.append("")
    for protocol, heading in (
        ("everyone", "Ranked among everyone the strategy may recommend"),
        ("labelled", "Ranked among the pairs rated in the test period"),
    ):
        lines += [f"**{heading}** (AUC: like vs dislike on held-out pairs)", ""]
        lines += _markdown_table(report_table(report, protocol=protocol))
        lines.append("")
    lines += ["**Candidate recall** (served sources, among everyone)", ""]
    lines += _markdown_table(recall_table(report))
    lines.append("")
    lines += [f"- {line}" for line in comparison_lines(report)]
    lines.append("")
    if chart:
        lines += [f"![{title}]({chart})", ""]
    return "\n".join(lines)


def report_chart(report: dict, path, *, title: str) -> None:
    """Write a PNG bar chart comparing the strategies (NDCG@k and mutual@k among
    everyone, AUC, exposure Gini) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    panels = (
        (f"NDCG@{k}, among everyone", lambda e: e["everyone"][f"ndcg@{k}"]),
        (f"mutual@{k}, among everyone", lambda e: e["everyone"][f"mutual@{k}"]),
        ("AUC (like vs dislike)", lambda e: e["auc"]),
        ("exposure Gini", lambda e: e["exposure"]["gini"]),
    )
    names = [name for name in STRATEGIES if name in report["strategies"]]
    labels = [STRATEGY_LABELS[name] for name in names]
    colors = ["#0d47a1" if name == SERVED else "#90a4ae" for name in names]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 4.4), dpi=80)
    for ax, (panel, get) in zip(axes, panels, strict=True):
        values = [get(report["strategies"][s]) for s in names]
        values = [0.0 if v is None else v for v in values]
        ax.barh(labels, values, color=colors)
        ax.set_title(panel, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.3f}", va="center", fontsize=7)
        ax.set_xlim(0, max(max(values) * 1.25, 0.05))
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
