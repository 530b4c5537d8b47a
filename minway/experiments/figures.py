"""The paper's figures, drawn from a sweep's report (PNG, matplotlib's Agg backend).

* ``gamma.png``: accuracy and prompt F1 against gamma (Fig. 3); gamma = 0 is the
  unconstrained twin, also drawn as a dotted line;
* ``length.png``: accuracy of both prompts and prompt F1 against the target length
  L of the PILE-L groups (Fig. 4);
* ``size.png``: the same against model size, each size at its chosen gamma (Fig. 5);
* ``positions.png``: one prompt, position by position: the distance to its nearest
  token (green where that token is the target's, red where not), the distance to
  the target token, and the margin between the nearest and second nearest token.

Each figure is drawn only when the sweep holds what it needs (several gammas, lengths
or models).
"""
import math
from collections import defaultdict
from pathlib import Path

import torch

from minway.errors import MinwayError
from minway.run.files import atomic_write
from minway.prompt import d_proj
from minway.experiments.report import build_report
from minway.run.storage import check_run_dir, load_prompt
from minway.experiments.state import SweepState
from minway.run.bpe_files import checkpoint_tokenizer
from weights import load_token_embeddings, resolve_checkpoint

ACCURACY_COLOUR, F1_COLOUR = "tab:blue", "tab:orange"


def require_matplotlib():
    """pyplot on the Agg backend, or a one-line error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise MinwayError("figures need matplotlib, which is not installed: pip install minway[sweep] "
                          "(or pass --no-figures)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _panels(plt, n):
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(5 * cols, 3.6 * math.ceil(n / cols)), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _accuracy_and_f1(ax, xs, acc, acc_err, f1, f1_err, baseline=None):
    """Accuracy on the left axis in %, as the paper's; prompt F1 on a right one, from 0 to 1, as everywhere
    in minway."""
    ax.errorbar(xs, [100 * a for a in acc], [100 * e for e in acc_err], color=ACCURACY_COLOUR, marker="o",
                capsize=3, label="Acc(p̃c)")
    if baseline is not None:
        ax.plot(xs, [100 * b for b in baseline], color=ACCURACY_COLOUR, linestyle=":", label="Acc(p*c)")
    ax.set_ylabel("accuracy (%)", color=ACCURACY_COLOUR)
    right = ax.twinx()
    right.errorbar(xs, f1, f1_err, color=F1_COLOUR, marker="s", capsize=3)
    right.set_ylabel("prompt F1", color=F1_COLOUR)
    ax.legend(loc="lower left", fontsize="small")


def _column(rows, measure, part="mean"):
    return [r[measure][part] for r in rows]


def _save(fig, path):
    fig.tight_layout()
    _fit_titles(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix[1:]), "the figure")
    fig.clf()
    return path


def _fit_titles(fig, smallest=5):
    """Each title that sticks out of the figure (a run id, a checkpoint's path) in a smaller font, the
    layout made again around it, until every title fits."""
    renderer = fig.canvas.get_renderer()
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    while True:
        wide = [t for t in titles
                if t.get_fontsize() > smallest and not _inside(t.get_window_extent(renderer), fig.bbox)]
        if not wide:
            return
        for title in wide:
            title.set_fontsize(title.get_fontsize() - 0.5)
        fig.tight_layout()


def _inside(box, outer):
    return outer.x0 <= box.x0 and box.x1 <= outer.x1


def gamma_figure(plt, rows, path):
    """Fig. 3: per model, task and group with several gammas."""
    settings = defaultdict(list)
    for row in rows:
        settings[row["model"], row["task"], row["group"]].append(row)
    settings = {k: sorted(v, key=lambda r: r["gamma"]) for k, v in settings.items() if len(v) > 1}
    if not settings:
        return None
    fig, axes = _panels(plt, len(settings))
    for ax, ((model, task, group), members) in zip(axes, settings.items()):
        twin = members[0]  # the twins (gamma = 0) of the smallest gamma's runs: the point at gamma = 0
        xs = [0.0] + [r["gamma"] for r in members]
        _accuracy_and_f1(ax, xs, [twin["acc_unconstrained"]["mean"]] + _column(members, "acc_constrained"),
                         [twin["acc_unconstrained"]["std"]] + _column(members, "acc_constrained", "std"),
                         [twin["f1_unconstrained"]["mean"]] + _column(members, "f1"),
                         [twin["f1_unconstrained"]["std"]] + _column(members, "f1", "std"),
                         baseline=[twin["acc_unconstrained"]["mean"]] * len(xs))
        ax.set_xlabel("γ")
        ax.set_title(f"{task}, {group} targets ({model})")
    return _save(fig, path)


def length_figure(plt, rows, path):
    """Fig. 4: per model and task, over the PILE-L groups."""
    settings = defaultdict(list)
    for row in rows:
        if row["group"].startswith("PILE-"):
            settings[row["model"], row["task"], row["gamma"]].append(row)
    settings = {k: sorted(v, key=lambda r: r["length"]["mean"]) for k, v in settings.items() if len(v) > 1}
    if not settings:
        return None
    fig, axes = _panels(plt, len(settings))
    for ax, ((model, task, gamma), members) in zip(axes, settings.items()):
        xs = _column(members, "length")
        _accuracy_and_f1(ax, xs, _column(members, "acc_constrained"), _column(members, "acc_constrained", "std"),
                         _column(members, "f1"), _column(members, "f1", "std"),
                         baseline=_column(members, "acc_unconstrained"))
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("prompt length L (tokens)")
        ax.set_title(f"{task}, γ = {gamma:g} ({model})")
    return _save(fig, path)


def size_figure(plt, rows, chosen, path):
    """Fig. 5: per task and group, one point per model at its chosen gamma (its only one if single)."""
    picked = {(r["model"], r["task"], r["group"]): r for r in rows}  # rows are sorted by gamma: the last stays
    picked.update({(r["model"], r["task"], r["group"]): r for r in chosen})
    settings = defaultdict(list)
    for (model, task, group), row in picked.items():
        settings[task, group].append(row)
    settings = {k: v for k, v in settings.items() if len(v) > 1}
    if not settings:
        return None
    fig, axes = _panels(plt, len(settings))
    for ax, ((task, group), members) in zip(axes, settings.items()):
        xs = list(range(len(members)))
        _accuracy_and_f1(ax, xs, _column(members, "acc_constrained"), _column(members, "acc_constrained", "std"),
                         _column(members, "f1"), _column(members, "f1", "std"),
                         baseline=_column(members, "acc_unconstrained"))
        ax.set_xticks(xs, [f"{r['model']}\nγ={r['gamma']:g}" for r in members])
        ax.set_title(f"{task}, {group} targets")
    return _save(fig, path)


def positions_figure(plt, run_dir, path):
    """Per position of one prompt: nearest-token distance, target-token distance, margin."""
    prompt, config, target_ids = load_prompt(check_run_dir(run_dir) / "prompt.safetensors")
    checkpoint = resolve_checkpoint(config.model)
    embeddings = load_token_embeddings(checkpoint)
    prompt = prompt.float()
    nearest_l2 = d_proj(prompt, embeddings, "l2", k=1)
    nearest = d_proj(prompt, embeddings, config.metric, k=1)
    nearest_distance = nearest_l2.scores[:, 0].sqrt().tolist()  # l2 scores are squared distances
    target_distance = (prompt - embeddings[torch.tensor(target_ids)]).norm(dim=1).tolist()
    hits = [int(i) == t for i, t in zip(nearest.indices[:, 0].tolist(), target_ids)]

    xs = list(range(len(target_ids)))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.35 * len(xs) + 2), 6))
    top.bar(xs, nearest_distance, color=["tab:green" if h else "tab:red" for h in hits], label="to nearest token")
    top.plot(xs, target_distance, "k_", markersize=12, label="to target token")
    top.set_ylabel("L2 distance")
    top.legend(fontsize="small")
    top.set_title(f"{Path(run_dir).name}\n{sum(hits)}/{len(hits)} positions project to the target ({config.metric})")
    bottom.bar(xs, nearest.margin.tolist(), color="tab:gray")
    bottom.set_ylabel(f"margin ({config.metric})")
    bottom.set_xticks(xs, checkpoint_tokenizer(checkpoint).token_strings(target_ids), rotation=90,
                      fontsize="small")
    return _save(fig, path)


def first_constrained_run(report_state):
    for entry in report_state["runs"]:
        if entry["gamma"] > 0 and entry["status"] == "done":
            return entry["run_id"]
    return None


def write_figures(sweep_dir, positions_run=None):
    """Draw every figure the sweep has data for into the sweep directory; their paths."""
    plt = require_matplotlib()
    sweep_dir = Path(sweep_dir)
    report = build_report(sweep_dir)
    state = SweepState.read(sweep_dir)
    written = [gamma_figure(plt, report["rows"], sweep_dir / "gamma.png"),
               length_figure(plt, report["rows"], sweep_dir / "length.png"),
               size_figure(plt, report["rows"], report["chosen_gamma"], sweep_dir / "size.png")]
    positions_run = positions_run or first_constrained_run(state)
    if positions_run:
        run_dir = Path(state["out"]) / positions_run
        if not (run_dir / "prompt.safetensors").exists():
            raise MinwayError(f"--positions-run {positions_run}: {run_dir} holds no finished prompt")
        written.append(positions_figure(plt, run_dir, sweep_dir / "positions.png"))
    plt.close("all")
    return [p for p in written if p is not None]
