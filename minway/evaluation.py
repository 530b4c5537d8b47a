"""Every measure of the paper for one trained prompt.

* accuracy of the continuous prompt on the test set;
* for each way of projecting (dot, l2, cos): the projected text, its prompt F1
  against the target (with and without lemmatisation, and as the released code
  computes it), the exact-position match
  rate, and the margins to the second nearest token;
* hard-prompt accuracy: the projection itself, as tokens, used as the prompt. The
  gap to the continuous accuracy is the waywardness made visible;
* c-dist to the target, and the target tokens no d-projection can produce.

A prompt from elsewhere (a PEFT adapter) may come without a target or a task: it then
gets the measures that need neither, and those of the one it has. Its length need not be
its target's: position matches and c-dist, which compare position by position, are then
left out.

A measure that is not finite (the c-dist of a prompt whose values are near float32's
largest) is None, and named under "not_finite" with its value: JSON has no NaN or infinity.
"""
import math
from collections import Counter

import torch

from minway.classify import predict
from minway.metrics import accuracy, mark_mismatches, position_match_rate, prompt_f1, released_f1
from minway.objective import c_dist
from minway.prompt import METRICS, c_proj, d_proj
from minway.reachability import UNREACHABLE, reachability


def projection_report(prompt, target_ids, tokenizer, embeddings, metric):
    """The projection under ``metric``, scored against the target unless ``target_ids`` is None."""
    nearest = d_proj(prompt, embeddings, metric)
    ids = nearest.indices[:, 0].tolist()
    text = tokenizer.decode(ids)
    if target_ids is None:
        return {"ids": ids, "text": text, "mean_margin": float(nearest.margin.mean())}
    target_text = tokenizer.decode(target_ids)
    status = reachability(target_ids, embeddings, metric)
    reachable_ids = [t for t, s in zip(target_ids, status) if s != UNREACHABLE]
    return {
        "ids": ids,
        "text": text,
        "f1": prompt_f1(text, target_text, lemmatize=True),
        "f1_no_lemma": prompt_f1(text, target_text, lemmatize=False),
        "f1_released_code": released_f1(text, target_text),
        "position_match": position_match_rate(ids, target_ids) if len(ids) == len(target_ids) else None,
        "mean_margin": float(nearest.margin.mean()),
        "unreachable_target_tokens": sorted({t for t, s in zip(target_ids, status) if s == UNREACHABLE}),
        "reachability_counts": dict(Counter(status)),
        # the best F1 possible if every reachable position were projected right
        "f1_ceiling": prompt_f1(tokenizer.decode(reachable_ids), target_text) if reachable_ids else 0.0,
        "marked": mark_mismatches(text, target_text),
    }


def null_non_finite(value, where=""):
    """(``value`` with every number that is not finite replaced by None, {where it was: "inf", "-inf" or
    "nan"}), through nested dicts and lists; ``where`` joins keys with dots."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, {where: str(value)}
    replaced = {}
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            items[key], found = null_non_finite(item, f"{where}.{key}" if where else str(key))
            replaced.update(found)
        return items, replaced
    if isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            item, found = null_non_finite(item, f"{where}.{i}" if where else str(i))
            items.append(item)
            replaced.update(found)
        return items, replaced
    return value, replaced


def task_accuracy(model, prompt, inputs, labels, options, batch_size=32, progress=False, desc="test"):
    """Accuracy of ``prompt`` on the encoded ``inputs``: the option of lowest loss is the prediction."""
    predictions, _ = predict(model, prompt, inputs, options, batch_size, progress, desc=desc)
    return accuracy(predictions.tolist(), labels)


@torch.no_grad()
def measure(model, tokenizer, options, prompt, target_ids, test_inputs, test_labels, metric="dot",
            batch_size=32, progress=False, hard_prompt=True):
    """``options``: the tokens each label's output puts after an input (``minway.tasks.Options.outputs``).
    ``target_ids`` None: no measure against a target; ``test_inputs`` None: no accuracy."""
    prompt = prompt.detach().float()
    results = {"metric": metric}
    if test_inputs is not None:
        results.update(accuracy=task_accuracy(model, prompt, test_inputs, test_labels, options, batch_size, progress,
                                              "test (continuous)"), n_test=len(test_labels))
    if target_ids is not None and len(target_ids) == len(prompt):
        results["c_dist"] = float(c_dist(prompt, c_proj(model, target_ids)))
    results["projections"] = {m: projection_report(prompt, target_ids, tokenizer, model.wte.weight, m)
                              for m in METRICS}
    main = results["projections"][metric]
    if target_ids is not None:
        results["prompt_f1"] = main["f1"]
    if hard_prompt and test_inputs is not None:
        hard = c_proj(model, main["ids"])
        results["hard_prompt_accuracy"] = task_accuracy(model, hard, test_inputs, test_labels, options, batch_size,
                                                        progress, "test (hard)")
    results, not_finite = null_non_finite(results)
    if not_finite:
        results["not_finite"] = not_finite
    return results


def _number(value, spec):
    return "not finite" if value is None else format(value, spec)


def data_lines(data):
    """What a run trained on, from its results' "data": the rows of the training file it took, and a note
    on the file where there is one."""
    taken = {"released": "the released split: the first 90 % after the released code's shuffle (NumPy seed "
                         "100), the other 10 % the dev set",
             "all": "the whole file"}[data["train_split"]]
    lines = [f"training rows: {data['train_rows']:,} of the {data['file_rows']:,} of {data['train_file']} ({taken}"
             + (f", then --k {data['k']} per class" if data.get("k") else "") + ")"]
    return lines + ([data["note"]] if data.get("note") else [])


def summary(results, target_text):
    """A short human-readable account of one run's results (``target_text`` None: of a prompt without target)."""
    main = results["projections"][results["metric"]]
    lines = data_lines(results["data"]) if results.get("data") else []
    if "accuracy" in results:
        lines.append(f"task accuracy (continuous prompt): {100 * results['accuracy']:.1f}%  on {results['n_test']} "
                     f"test examples")
    if results.get("dev_accuracy") is not None:
        lines.append(f"dev accuracy (continuous prompt): {100 * results['dev_accuracy']:.1f}%  on {results['n_dev']} "
                     f"dev examples (the training file's rows kept out of training)")
    label_map = results.get("config", {}).get("label_map")
    if label_map:
        lines.append(f"labels permuted by --label-map {','.join(map(str, label_map))}: accuracy counts the "
                     f"permuted labels as correct")
    if "hard_prompt_accuracy" in results:
        lines.append(f"hard-prompt accuracy (d-proj as text): {100 * results['hard_prompt_accuracy']:.1f}%")
    if "c_dist" in results:
        lines.append(f"c-dist to target: {_number(results['c_dist'], '.4f')}")
    if results.get("not_finite"):
        lines.append("not finite, so written as null: " + ", ".join(
            f"{where} ({value})" for where, value in results["not_finite"].items()))
    if target_text is None:
        for m, report in results["projections"].items():
            lines.append(f"projected [{m}{' (main)' if m == results['metric'] else ''}]: {report['text']!r}  "
                         f"(mean margin {_number(report['mean_margin'], '.4f')})")
        return "\n".join(lines)
    for m, report in results["projections"].items():  # F1 from 0 to 1, as in results.json and the progress bar
        ceiling = f", ceiling {report['f1_ceiling']:.2f}" if report["unreachable_target_tokens"] else ""
        matched = "" if report["position_match"] is None else \
            f", positions matched {100 * report['position_match']:.1f}%"
        lines.append(f"prompt F1 [{m}{' (main)' if m == results['metric'] else ''}]: {report['f1']:.2f} "
                     f"(no lemmas {report['f1_no_lemma']:.2f}, the released code's "
                     f"{report['f1_released_code']:.2f}){matched}{ceiling}")
    if main["unreachable_target_tokens"]:
        lines.append(f"target tokens unreachable under {results['metric']}: {main['unreachable_target_tokens']} "
                     f"(no gamma can project to them)")
    lines.append(f"target   : {' '.join(target_text.split())}")
    lines.append(f"projected: {main['marked']}   ([x] differs, [-x] missing)")
    if "compare" in results:
        c = results["compare"]
        lines.append(f"unconstrained vs constrained: Acc(p*c) {100 * c['accuracy_unconstrained']:.1f} -> "
                     f"Acc(p~c) {100 * c['accuracy_constrained']:.1f}, relative drop "
                     + ("n/a" if c["relative_drop"] is None else f"{c['relative_drop']:.1f}%")
                     + f"; prompt F1 {c['f1_unconstrained']:.2f} -> {results['prompt_f1']:.2f}")
    return "\n".join(lines)
