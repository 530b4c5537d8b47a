"""A sweep's results in the form of the paper's tables, from its run directories.

Each finished constrained run is paired with its unconstrained twin (gamma = 0,
same target and seed). A row of the report averages the pairs of one model, task,
target group and gamma, over targets and seeds:

    Acc(p*c) -> Acc(p~c)   accuracy of the twin, then of the constrained prompt
    relative drop          relative_drop(twin, constrained), per pair, in %
    prompt F1              of the constrained prompt's projection
    dev accuracy           of the twin, then of the constrained prompt, on the dev set (the
                           released split's 10 % of the training file; n/a for runs without one)

each as mean and standard deviation (population std, ddof = 0). For a model with
several gammas the report also picks, per task and group, the most accurate gamma whose
mean prompt F1 exceeds 0.98, the rule of the paper's Fig. 5.

The Avg rows of Table 2 average the groups of irrelevant targets (all but TRUE); when
the report also holds TRUE targets (for example ``--report-with sweeps/main`` on the
``true`` sweep) it sets their drop against that average, per task, as Table 5 does.

    python -m minway.experiments.report sweeps/main        # rewrite report.md and report.json
    python -m minway.experiments.report sweeps/true sweeps/main   # the first sweep's report, with the runs of both
"""
from collections import defaultdict
from pathlib import Path

import numpy as np

from minway.run.cli import Parser, run_cli
from minway.metrics import relative_drop
from minway.run.files import atomic_write_json, atomic_write_text
from minway.experiments.presets import GROUP_FILES, MODEL_SIZES, PAPER_TASKS

F1_THRESHOLD = 0.98
MEASURES = ("acc_unconstrained", "acc_constrained", "relative_drop", "f1", "f1_unconstrained", "length",
            "dev_unconstrained", "dev_constrained")


def collect_pairs(state):
    """One dict per finished constrained run whose twin is finished too."""
    from minway.run.storage import read_results  # imports torch: not before --help has been answered
    pairs = []
    for entry in state["runs"]:
        if entry["gamma"] == 0 or entry["status"] != "done":
            continue
        constrained, twin = (read_results(Path(state["out"]) / entry[key]) for key in ("run_id", "twin"))
        if constrained is None or twin is None:
            continue
        pairs.append({
            "model": Path(entry["model"]).name, "task": entry["task"], "group": entry["group"],
            "gamma": entry["gamma"], "seed": entry["seed"], "target_name": entry["target_name"],
            "run_id": entry["run_id"], "twin": entry["twin"],
            "acc_unconstrained": twin["accuracy"], "acc_constrained": constrained["accuracy"],
            "relative_drop": relative_drop(twin["accuracy"], constrained["accuracy"]),
            "f1": constrained["prompt_f1"], "f1_unconstrained": twin["prompt_f1"],
            "length": len(constrained["target_ids"]), "random_weights": bool(constrained.get("random_weights")),
            "dev_unconstrained": twin.get("dev_accuracy"), "dev_constrained": constrained.get("dev_accuracy"),
            "data_note": (constrained.get("data") or {}).get("note")})
    return pairs


def _order(value, known):
    return (known.index(value), "") if value in known else (len(known), value)


def row_order(row):
    return (_order(row["model"], MODEL_SIZES), _order(row["task"], PAPER_TASKS),
            _order(row["group"], tuple(GROUP_FILES)), row["gamma"])


def aggregate(pairs):
    """Rows of mean and std per (model, task, group, gamma), in the paper's order."""
    grouped = defaultdict(list)
    for pair in pairs:
        grouped[pair["model"], pair["task"], pair["group"], pair["gamma"]].append(pair)
    rows = []
    for (model, task, group, gamma), members in grouped.items():
        row = {"model": model, "task": task, "group": group, "gamma": gamma, "n": len(members)}
        for measure in MEASURES:
            values = np.array([m[measure] for m in members if m[measure] is not None], dtype=float)
            row[measure] = ({"mean": float(values.mean()), "std": float(values.std())} if len(values)
                            else {"mean": None, "std": None})
        rows.append(row)
    return sorted(rows, key=row_order)


def average_over_groups(rows):
    """The Avg rows of Table 2: per model, task and gamma with several groups of irrelevant targets,
    the mean of the groups' means (each group weighs the same, however many targets it holds)."""
    by_setting = defaultdict(list)
    for row in rows:
        if row["group"] != "TRUE":
            by_setting[row["model"], row["task"], row["gamma"]].append(row)
    averages = []
    for (model, task, gamma), members in by_setting.items():
        if len(members) < 2:
            continue
        average = {"model": model, "task": task, "group": "Avg", "gamma": gamma, "n": sum(m["n"] for m in members)}
        for measure in MEASURES:
            means = [m[measure]["mean"] for m in members if m[measure]["mean"] is not None]
            average[measure] = {"mean": float(np.mean(means)) if means else None,
                                "std": float(np.std(means)) if means else None}
        averages.append(average)
    return sorted(averages, key=row_order)


def true_against_irrelevant(rows, averages):
    """Table 5: per model and gamma, each task's drop with its true definitions as targets and
    with irrelevant ones (its Avg row, or its one group of irrelevant targets), and their means."""
    irrelevant = {(r["model"], r["task"], r["gamma"]): r for r in rows if r["group"] != "TRUE"}
    irrelevant.update({(r["model"], r["task"], r["gamma"]): r for r in averages})
    drops = defaultdict(dict)  # (model, gamma) -> task -> (drop with TRUE targets, drop with irrelevant ones)
    for row in rows:
        other = irrelevant.get((row["model"], row["task"], row["gamma"]))
        if row["group"] == "TRUE" and other and None not in (row["relative_drop"]["mean"],
                                                              other["relative_drop"]["mean"]):
            drops[row["model"], row["gamma"]][row["task"]] = (row["relative_drop"]["mean"],
                                                              other["relative_drop"]["mean"])
    tables = []
    for (model, gamma), by_task in sorted(drops.items(), key=lambda item: (_order(item[0][0], MODEL_SIZES),
                                                                            item[0][1])):
        tasks = sorted(by_task, key=lambda task: _order(task, PAPER_TASKS))
        true, other = [by_task[t][0] for t in tasks], [by_task[t][1] for t in tasks]
        tables.append({"model": model, "gamma": gamma, "tasks": tasks, "true_drop": true, "irrelevant_drop": other,
                       "true_drop_mean": float(np.mean(true)), "irrelevant_drop_mean": float(np.mean(other))})
    return tables


def choose_gammas(rows, threshold=F1_THRESHOLD):
    """Per model, task and group with several gammas: of the gammas whose mean F1 exceeds the
    threshold, the one of the highest accuracy (as the paper's code picks; ties to the smaller
    gamma); when none does, the gamma of the highest F1, marked ``meets_threshold: false``."""
    by_setting = defaultdict(list)
    for row in rows:
        by_setting[row["model"], row["task"], row["group"]].append(row)
    chosen = []
    for candidates in by_setting.values():
        if len(candidates) < 2:
            continue
        passing = [r for r in candidates if r["f1"]["mean"] > threshold]
        if passing:
            best = max(passing, key=lambda r: (r["acc_constrained"]["mean"], -r["gamma"]))
        else:
            best = max(candidates, key=lambda r: r["f1"]["mean"])
        chosen.append({**best, "meets_threshold": bool(passing)})
    return sorted(chosen, key=row_order)


def build_report(sweep_dir, also=()):
    """The report of one sweep; its tables also take in the finished runs of the sweeps ``also``."""
    from minway.experiments.state import SweepState  # imports torch: not before --help has been answered
    state = SweepState.read(sweep_dir)
    pairs = {p["run_id"]: p for d in (*also, sweep_dir) for p in collect_pairs(SweepState.read(d))}
    pairs = list(pairs.values())
    rows = aggregate(pairs)
    averages = average_over_groups(rows)
    runs = state["runs"]
    return {
        "sweep_dir": str(sweep_dir), "out": state["out"], "settings": state.get("settings", {}),
        "counts": {status: sum(r["status"] == status for r in runs) for status in ("done", "failed", "pending")},
        "random_weights": any(p["random_weights"] for p in pairs),
        "data_notes": sorted({p["data_note"] for p in pairs if p["data_note"]}),
        "rows": rows,
        "also": [str(d) for d in also],
        "averages": averages,
        "true_against_irrelevant": true_against_irrelevant(rows, averages),
        "chosen_gamma": choose_gammas(rows),
        "failed": [{"run_id": r["run_id"], "error": r["error"]} for r in runs if r["status"] == "failed"],
    }


# ---------------------------------------------------------------- Markdown

def _stat(stat, scale=1, digits=1):
    if stat["mean"] is None:
        return "n/a"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _pct(stat):
    return _stat(stat, 100)


def _row_cells(row):
    """Accuracies and the drop in %, as the paper's tables; prompt F1 from 0 to 1, as everywhere in minway."""
    return [row["model"], row["task"], row["group"], f"{row['gamma']:g}", f"{row['length']['mean']:.1f}",
            str(row["n"]), _stat(row["relative_drop"]),
            f"{_pct(row['acc_unconstrained'])} → {_pct(row['acc_constrained'])}", _stat(row["f1"], digits=2),
            f"{_pct(row['dev_unconstrained'])} → {_pct(row['dev_constrained'])}"]


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines]


def to_markdown(report):
    counts = report["counts"]
    header = ["model", "task", "targets", "γ", "L", "n", "Δ̂ (%)", "Acc(p*c) → Acc(p̃c) (%)", "prompt F1 (0 to 1)",
              "dev: Acc(p*c) → Acc(p̃c) (%)"]
    settings = report["settings"]
    lines = [
        f"# Sweep report: {settings.get('plan') or settings.get('preset') or report['sweep_dir']}", "",
        f"Runs: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending. "
        "Each row: mean ± std (population) over target prompts and seeds; L is the target length in tokens, "
        "n the number of (constrained, unconstrained twin) pairs. Rows of one task and group at several γ "
        "are the gamma trade-off (Fig. 3); the PILE-L groups are the prompt-length study (Fig. 4). Accuracies "
        "are on the test set; the dev set, where a run has one, is the released split's 10 % of the training file.",
        "", *(["**Some runs used a random-weight checkpoint: their accuracies mean nothing.**", ""]
              if report["random_weights"] else []),
        *[line for note in report["data_notes"] for line in (note[0].upper() + note[1:], "")],
        "## Accuracy and prompt F1", ""]
    lines += _table(header, [_row_cells(r) for r in report["rows"]]) if report["rows"] else ["(no finished pairs)"]
    if report["averages"]:
        lines += ["", "## Average over target groups (the Avg rows of Table 2; ± is the spread of the groups)", ""]
        lines += _table(header, [_row_cells(r) for r in report["averages"]])
    for table in report["true_against_irrelevant"]:
        lines += ["", f"## Drop with true task definitions (Δ̂T) and with irrelevant targets (Δ̂), "
                      f"{table['model']}, γ = {table['gamma']:g} (Table 5)", ""]
        lines += _table(["", *table["tasks"], "Avg"],
                        [[name, *(f"{d:.1f}" for d in drops), f"{mean:.1f}"] for name, drops, mean in
                         (("Δ̂T", table["true_drop"], table["true_drop_mean"]),
                          ("Δ̂", table["irrelevant_drop"], table["irrelevant_drop_mean"]))])
    if report["chosen_gamma"]:
        lines += ["", f"## The most accurate γ with prompt F1 > {F1_THRESHOLD} (the rule of Fig. 5)", ""]
        lines += _table(header + [f"F1 > {F1_THRESHOLD}"],
                        [_row_cells(r) + ["yes" if r["meets_threshold"] else "no"] for r in report["chosen_gamma"]])
    if report["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- `{f['run_id']}`: {f['error']}" for f in report["failed"]]
    return "\n".join(lines) + "\n"


def write_report(sweep_dir, also=()):
    """Write report.json and report.md into the sweep directory; their paths."""
    report = build_report(sweep_dir, also)
    json_path, md_path = Path(sweep_dir) / "report.json", Path(sweep_dir) / "report.md"
    atomic_write_json(json_path, report, "the report", indent=1)
    atomic_write_text(md_path, to_markdown(report), "the report")
    return [md_path, json_path]


def main(argv=None):
    p = Parser(prog="python -m minway.experiments.report", description="Rewrite a sweep's report.md and report.json.")
    p.add_argument("sweep_dir", help="the sweep directory (it holds sweep.json)")
    p.add_argument("also", nargs="*", help="other sweep directories whose finished runs the tables take in")
    args = p.parse_args(argv)
    print("written: " + ", ".join(map(str, write_report(args.sweep_dir, args.also))))


if __name__ == "__main__":
    run_cli(main)
