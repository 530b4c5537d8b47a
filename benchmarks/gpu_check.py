"""The one prepared GPU check: the kernels' correctness on the GPU first, then benchmarks.

    bash benchmarks/gpu_check.sh [--dry-run] [--skip-compile] [--skip-benchmarks]

Runs with the python3 of the GPU machine as it is (PYTHONPATH=., no network, no install).
Correctness, each against an independent reference:
  compile     every kernel configuration, for sm_80 and sm_90, with this machine's Triton
              (``python -m minway.kernels.gpu_compile``); its cache then serves the launches below
  projection  the Triton kernel against the float64 score matrix: top-k, scores, margins, under
              dot, l2 and cos, E in fp32 and bf16; ties on exact data must go to the lowest index
  attention   forward and backward, padding mask, after a cached prefix, and packed rows of
              different lengths (the varlen kernel against SDPA on each row alone): the Triton
              kernel's largest difference to the fp64 formula against SDPA's own
  model       GPT-2 forward and backward (logits, gradient to the prompt) with Triton attention
              against SDPA, both against fp64
  train       20 steps of train.py on gpt2-large-shaped random weights, bf16, --attention triton
Then benchmarks, as ratios measured in this process (the modules of benchmarks/): the
projection against torch and the roofline, attention forward+backward against SDPA (padded
batches, and packed rows against SDPA on them padded), the
prompt-tuning step (with SDPA and with Triton attention) against HF transformers + PEFT, K = 8
prompts per batch against 8 sequential steps; and, in a process of its own,
benchmarks/bench_train.py: real sst2 and agnews training steps and evaluation against HF +
PEFT.

Everything goes to benchmarks/results/<device>-<date>-gpu-check.json, and to $OUT when set.
``--dry-run`` runs the same code on a CPU with tiny sizes, the kernels in Triton's interpreter.
Exits non-zero if a correctness check fails.
"""
import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch  # imports no Triton: TRITON_INTERPRET may still be set

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    vocab: int
    width: int  # d of the projection
    large_vocab: tuple  # (rows, width) of a 152k vocabulary: correctness at M = 14, benchmark at bench_M
    projection_M: tuple  # queries in the correctness cases
    bench_M: tuple  # and in the benchmark
    attention_cases: tuple  # (queries, cached prefix) of the correctness cases
    packed_cases: tuple  # (longest text row, prompt keys) of the packed-rows correctness cases
    grouped_cases: tuple  # (longest text row, prompt keys, query heads, key/value heads, head dim) of grouped heads
    bench_T: tuple  # query lengths of the attention benchmark
    batch: int
    heads: int
    model: dict  # GPT2Config fields of the model check
    model_batch: tuple  # its rows and text tokens (after a 14-vector prompt)
    train_model: tuple  # arguments of weights.random_checkpoint
    train_steps: int
    step_model: str  # the size in SIZES of the step and multi-prompt benchmarks
    train_bench: tuple  # arguments of benchmarks/bench_train.py
    repeats: int
    warmup: int


FULL = Sizes(
    vocab=50257, width=1280, large_vocab=(151936, 4096), projection_M=(1, 14, 1024), bench_M=(14, 64, 1024, 8192),
    # prefixes of 30 and 62: the first query two below a multiple of the key block, where a wrong diagonal shows
    attention_cases=((78, 0), (64, 14), (1, 14), (200, 62), (100, 30), (1024, 0)), bench_T=(78, 256, 1024),
    packed_cases=((78, 14), (200, 0), (300, 62), (1024, 14)),
    grouped_cases=((300, 14, 32, 8, 128), (200, 62, 32, 8, 64), (256, 14, 14, 2, 64)),  # Llama 3 8B, 1B; Qwen 2.5 0.5B
    batch=8, heads=20, model=dict(n_embd=768, n_layer=12, n_head=12), model_batch=(4, 50),
    train_model=("--size", "gpt2-large"),
    train_steps=20, step_model="gpt2-large", repeats=20, warmup=5,
    train_bench=("--size", "gpt2-large", "--dtype", "bf16", "--steps", "5", "--warmup", "2", "--eval", "64"))
# the dry run's sizes: every code path of the check once, at the least interpreter time (V = 160 is 3 tiles
# of the interpreter's 64 rows, the last one part-filled; d = 40 two blocks of 32)
DRY = Sizes(
    vocab=160, width=40, large_vocab=(200, 48), projection_M=(14,), bench_M=(14,), attention_cases=((5, 14),),
    bench_T=(6,), packed_cases=((6, 14),), grouped_cases=((6, 14, 4, 2, 16),),
    batch=2, heads=2, model=dict(n_embd=32, n_layer=1, n_head=2, n_positions=128), model_batch=(2, 12),
    train_model=("--n-embd", "32", "--n-layer", "1", "--n-head", "2"), train_steps=2, step_model="tiny",
    repeats=1, warmup=0,
    train_bench=("--size", "tiny", "--dtype", "fp32", "--steps", "1", "--warmup", "0", "--eval", "4", "--tasks", "sst2"))


class Report:
    """Each check's outcome and figures, printed as it comes and kept for the summary."""

    def __init__(self):
        self.checks, self.benchmarks = [], []

    def check(self, name, fn):
        start = time.perf_counter()
        try:
            status, detail, data = fn()
        except Exception as error:  # one broken check must not hide the others
            status, detail, data = "FAIL", f"{type(error).__name__}: {error}", {}
        entry = dict(name=name, status=status, detail=detail, seconds=time.perf_counter() - start, data=data)
        self.checks.append(entry)
        print(f"{status:4}  {name:10} {detail}  ({entry['seconds']:.0f} s)", flush=True)

    def benchmark(self, name, fn):
        start = time.perf_counter()
        try:
            lines, data = fn()
        except Exception as error:
            lines, data = [f"ERROR {type(error).__name__}: {error}"], {}
        self.benchmarks.append(dict(name=name, lines=lines, seconds=time.perf_counter() - start, data=data))
        for line in lines:
            print(f"      {name:10} {line}", flush=True)

    @property
    def failed(self):
        return [c["name"] for c in self.checks if c["status"] == "FAIL"]


# ---------------------------------------------------------------- correctness


def check_compile(dry, cache_dir, json_path):
    """The compile check, against this machine's Triton, in a process without the interpreter."""
    command = [sys.executable, "-m", "minway.kernels.gpu_compile", "--json", str(json_path), "--cache-dir", cache_dir]
    if dry:
        command += ["--arch", "90", "--match", "projection M=14 bf16 dot kp=2", "attention fwd D=64 bf16 packed",
                    "--jobs", "1"]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if not json_path.is_file():
        return "FAIL", f"no result (exit {done.returncode}): {done.stderr.strip()[-300:]}", {}
    found = json.loads(json_path.read_text())
    results = found["results"]
    failed = [f"{r['arch']} {r['name']}: {'; '.join(r['problems'])}" for r in results if r["problems"]]
    spills = sum(1 for r in results if r.get("spill_stores"))
    detail = (f"{len(results)} configurations, triton {found['triton']}, {found['seconds']:.0f} s: "
              f"{len(failed)} over shared memory, failing or hot and spilling; {spills} spill in all")
    if failed:
        detail += " | " + " | ".join(failed[:3])
    return ("FAIL" if failed or done.returncode else "PASS"), detail, {"file": str(json_path), "failed": failed}


def projection_reference(q, E, metric):
    """The kernel's reference scores in float64 (``projection_triton.reference_scores``): ranking
    scores, higher is better, and the reported score of each."""
    from minway.kernels.projection_triton import reference_scores

    reported = reference_scores(q, E, metric)
    return (-reported if metric == "l2" else reported), reported


def check_projection(s, device):
    """Random data: the rows chosen must have the k best float64 scores (up to fp32 rounding of
    nearly equal ones), scores and margins as float64's. Exact data (multiples of 1/8, and
    entries in {-1, 0, 1}, and duplicated rows): indices exactly as a stable sort's."""
    from minway.kernels.projection import METRICS, nearest_tokens

    g = torch.Generator(device).manual_seed(0)
    worst, cases, failures = dict(rank=0.0, score=0.0, margin=0.0), 0, []
    shapes = [(s.vocab, s.width, s.projection_M), (*s.large_vocab, (14,))]
    for (V, d, Ms), dtype in ((shape, dtype) for shape in shapes for dtype in (torch.float32, torch.bfloat16)):
        E = (0.1 * torch.randn(V, d, generator=g, device=device)).to(dtype)
        for M in Ms:
            q = 0.1 * torch.randn(M, d, generator=g, device=device)
            for metric in METRICS:
                rank, reported = projection_reference(q, E, metric)
                scale = 1e-5 * (1 + reported.abs().amax(1, keepdim=True))  # fp32 rounding of the largest score
                best = rank.topk(8, dim=1).values
                for k in (1, 8):
                    got = nearest_tokens(q, E, k=k, metric=metric, backend="triton")
                    gaps = {"rank": (best[:, :k] - rank.gather(1, got.indices)).abs() / scale,
                            "score": (got.scores.double() - reported.gather(1, got.indices)).abs() / scale,
                            "margin": (got.margin.double() - (best[:, 0] - best[:, 1]).abs()).abs() / scale[:, 0]}
                    for key, gap in gaps.items():
                        worst[key] = max(worst[key], gap.max().item())
                    cases += 1
                    if max(gap.max().item() for gap in gaps.values()) > 1:
                        failures.append(f"{dtype} V={V} d={d} M={M} {metric} k={k}")
    ties = exact_ties(s, device)
    failures += ties
    detail = (f"{cases} random cases (V = {s.vocab} and {s.large_vocab[0]}), worst error in units of fp32 rounding: "
              f"rank {worst['rank']:.2f}, score "
              f"{worst['score']:.2f}, margin {worst['margin']:.2f}; ties {'exact' if not ties else 'WRONG'}")
    if failures:
        detail += " | " + ", ".join(failures[:4])
    return ("FAIL" if failures else "PASS"), detail, dict(cases=cases, worst=worst, failures=failures)


def exact_ties(s, device):
    """Cases whose scores are exact in fp32, where the indices must be exactly a stable sort's:
    entries that are multiples of 1/8, entries in {-1, 0, 1} (many ties at the k-th score) and
    copies of rows in other tiles and vocabulary slices."""
    from minway.kernels.projection import METRICS, nearest_tokens
    from minway.kernels.projection_triton import reference

    g = torch.Generator(device).manual_seed(1)
    failures = []

    def grid(*shape):
        return torch.randint(-8, 9, shape, generator=g, device=device).float() / 8

    def tri(*shape):
        return torch.randint(-1, 2, shape, generator=g, device=device).float()
    M, V = s.projection_M[-1], s.vocab
    duplicated = grid(V, 64)
    duplicated[V // 2:V // 2 + M] = duplicated[:M]
    cases = [("grid", grid(M, 64), grid(V, 64)), ("{-1,0,1}", tri(80, 4), tri(517, 4)),
             ("duplicates", 4 * duplicated[:M], duplicated)]
    for name, q, E in cases:
        for dtype in (torch.float32, torch.bfloat16):
            for metric in ("dot", "l2") if name == "{-1,0,1}" else METRICS:
                rank, _ = projection_reference(q, E.to(dtype), metric)
                order = reference(q, E.to(dtype), 8, metric)[0]
                for backend in ("triton", "torch"):
                    got = nearest_tokens(q, E.to(dtype), k=8, metric=metric, backend=backend)
                    if metric == "cos":  # rounded cosines: rows may swap only where the true ones are that close
                        exact = (rank.gather(1, got.indices) - rank.gather(1, order)).abs().max() <= 1e-6
                    else:
                        exact = torch.equal(got.indices, order)
                    if not exact:
                        failures.append(f"ties {name} {dtype} {metric} {backend}")
    return failures


def check_attention(s, device):
    """Triton's largest difference to the fp64 formula may be at most twice SDPA's (plus a few
    units of rounding), output and the three gradients: on padded batches, with and without
    a padding mask, and on packed rows of different lengths after a prompt's keys (Triton on
    the packed rows, SDPA on each row alone)."""
    from bench_attention import inputs, max_errors, packed_errors, packed_rows

    worst_ratio, failures, rows = 0.0, [], []

    def judge(dtype, errors, case):
        nonlocal worst_ratio
        floor = 4 * torch.finfo(dtype).eps if dtype != torch.float32 else 1e-5
        ratio = errors["triton"] / (2 * errors["sdpa"] + floor)
        worst_ratio = max(worst_ratio, ratio)
        rows.append(dict(dtype=str(dtype), **case, **errors))
        if not ratio <= 1:  # NaN fails too
            failures.append(f"{dtype} {case}: {errors}")

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for TQ, prefix in s.attention_cases:
            for padded in (False, True):
                qkv, grad, mask = inputs(TQ, dtype, device, padded, prefix, B=min(s.batch, 2), H=s.heads)
                judge(dtype, max_errors(["triton", "sdpa"], qkv, grad, mask), dict(T=TQ, prefix=prefix, padded=padded))
        for T, prefix in s.packed_cases:
            qkv, grad, lengths, key_lengths = packed_rows(T, prefix, dtype, device, B=s.batch, H=s.heads)
            judge(dtype, packed_errors(qkv, grad, lengths, key_lengths), dict(T=T, prefix=prefix, packed=lengths))
        for T, prefix, H, H_kv, D in s.grouped_cases:
            qkv, grad, lengths, key_lengths = packed_rows(T, prefix, dtype, device, B=s.batch, H=H, H_kv=H_kv, D=D)
            judge(dtype, packed_errors(qkv, grad, lengths, key_lengths),
                  dict(T=T, prefix=prefix, packed=lengths, heads=f"{H}/{H_kv}", D=D))
    detail = (f"{len(rows)} cases (fp32, bf16, fp16; padded T, prefix {sorted({c[1] for c in s.attention_cases})}, "
              f"with and without padding; packed rows up to T {sorted({c[0] for c in s.packed_cases})}, and with "
              f"grouped heads {sorted({f'{c[2]}/{c[3]} of {c[4]}' for c in s.grouped_cases})}): "
              f"Triton's error at most {worst_ratio:.2f} of 2x SDPA's + rounding")
    if failures:
        detail += " | " + " | ".join(failures[:3])
    return ("FAIL" if failures else "PASS"), detail, dict(rows=rows, failures=failures)


def check_model(s, device):
    """A prompt of 14 vectors as a row of its own, run once, and text rows of different lengths
    (one of a single token) that continue it, packed as in training; logits everywhere and the
    gradient to the prompt, Triton attention against SDPA, both measured against the same
    model in fp64."""
    from minway.model import GPT2, GPT2Config, init_weights
    from minway.packing import pack

    config = GPT2Config(**s.model)
    model = init_weights(GPT2(config)).to(device).freeze()
    g = torch.Generator(device).manual_seed(0)
    (B, T), P = s.model_batch, 14
    lengths = [T, T - 7, T // 2, 1][:B]
    ids = torch.randint(0, config.vocab_size, (sum(lengths),), generator=g, device=device)
    layout = pack([P, *lengths], [(), *[[(0, P)]] * len(lengths)], device=device)
    prompt = 0.02 * torch.randn(P, config.n_embd, generator=g, device=device)

    def run(dtype, backend):
        m = copy.deepcopy(model).to(dtype)
        m.set_attention(backend)
        p = prompt.to(dtype).requires_grad_()
        logits = m(embeds=torch.cat([p, m.embed(ids)]), packed=layout).logits.float()
        (grad,) = torch.autograd.grad(logits.log_softmax(-1)[..., :100].sum(), p)
        return logits.double(), grad.double()

    exact = run(torch.float64, "sdpa")  # (the naive formula rounds its scores to fp32)
    figures, failures = {}, []
    for dtype in (torch.float32, torch.bfloat16):
        errors = {}
        for backend in ("sdpa", "triton"):
            got = run(dtype, backend)
            errors[backend] = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, exact)]
        figures[str(dtype)] = errors
        floor = 1e-6 if dtype == torch.float32 else torch.finfo(dtype).eps  # one unit of rounding
        if not all(t <= 2 * s_ + floor for t, s_ in zip(errors["triton"], errors["sdpa"])):
            failures.append(f"{dtype}: {errors}")
    detail = "relative error to fp64 (logits, prompt gradient): " + "; ".join(
        f"{d.split('.')[-1]} triton {e['triton'][0]:.1e}, {e['triton'][1]:.1e} / sdpa {e['sdpa'][0]:.1e}, "
        f"{e['sdpa'][1]:.1e}" for d, e in figures.items())
    if failures:
        detail += " | " + " | ".join(failures)
    return ("FAIL" if failures else "PASS"), detail, dict(errors=figures)


def simplemma_path(work):
    """A directory to put on PYTHONPATH for simplemma: '' if it is installed, the wheel from
    benchmarks/wheels/ unpacked under ``work`` if one is there, else None."""
    import importlib.util
    if importlib.util.find_spec("simplemma") is not None:
        return ""
    wheels = sorted((ROOT / "benchmarks" / "wheels").glob("simplemma-*.whl"))
    if not wheels:
        return None
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(work / "wheels")
    return str(work / "wheels")


def check_train(s, device, dry, work):
    """train.py end to end: random checkpoint, a tiny SST-2, 20 steps, evaluation."""
    lemmatiser = simplemma_path(work)
    if lemmatiser is None:
        return "SKIP", ("simplemma is not installed and benchmarks/wheels/ has no simplemma wheel: "
                        "pip download simplemma --no-deps -d benchmarks/wheels, and carry it"), {}
    path = (lemmatiser, str(ROOT), os.environ.get("PYTHONPATH", ""))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    checkpoint, data, out = work / "checkpoint", work / "data" / "sst2", work / "runs"
    made = subprocess.run([sys.executable, "-m", "weights.random_checkpoint", str(checkpoint), *s.train_model],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if made.returncode:
        return "FAIL", f"weights.random_checkpoint: {made.stderr.strip()[-300:]}", {}
    data.mkdir(parents=True)
    words = ["good", "bad", "great", "dull", "fine", "awful", "warm", "cold"]
    for split, n in (("train", 64), ("test", 32)):
        rows = [f"a {words[i % 8]} film about {words[(3 * i) % 8]} people\t{(i + i // 8) % 2}" for i in range(n)]
        (data / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    command = [sys.executable, "train.py", "--task", "sst2", "--target", "Write a question about the given fact.",
               "--model", str(checkpoint), "--data-dir", str(data.parent), "--out", str(out), "--no-progress",
               "--steps", str(s.train_steps), "--k", "4", "--max-eval", "8" if dry else "32",
               "--device", device.type, "--dtype", "fp32" if dry else "bf16", "--attention", "triton",
               "--dropout", "0"]  # attention dropout has no Triton kernel
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        return "FAIL", f"train.py exit {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}", {}
    losses = [json.loads(line)["loss"] for log in out.glob("*/log.jsonl") for line in log.read_text().splitlines()]
    if len(losses) != s.train_steps or not all(math.isfinite(x) for x in losses):
        return "FAIL", f"expected {s.train_steps} finite losses, got {losses}", {}
    detail = f"{len(losses)} steps, {' '.join(s.train_model)}, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    return "PASS", detail, dict(losses=losses)


# ---------------------------------------------------------------- benchmarks


def bench_projection(s, device):
    import bench_projection as bp
    from common import copy_bandwidth

    bandwidth = copy_bandwidth(device, (1 << 30) if device.type == "cuda" else (1 << 20))
    g = torch.Generator(device).manual_seed(0)
    records, lines = [], [f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"]
    for name, dtype in bp.DTYPES.items():
        E = (0.1 * torch.randn(s.vocab, s.width, generator=g, device=device)).to(dtype)
        parts = []
        for M in s.bench_M:
            q = 0.1 * torch.randn(M, s.width, generator=g, device=device)
            r = bp.measure(q, E, 1, device, s.repeats, s.warmup, bandwidth, backend="triton")
            records.append(r)
            parts.append(f"M={M} {r['speedup']:.2f}x torch, {100 * r['roofline_fraction']:.0f}% roofline")
        lines.append(f"E {name}, d {s.width}, top-1: " + "; ".join(parts))
    V, d = s.large_vocab
    E = (0.1 * torch.randn(V, d, generator=g, device=device)).bfloat16()
    parts = []
    for M in s.bench_M:
        q = 0.1 * torch.randn(M, d, generator=g, device=device)
        r = bp.measure(q, E, 1, device, s.repeats, s.warmup, bandwidth, backend="triton")
        records.append(r)
        parts.append(f"M={M} {1e3 * r['minway_s']:.3f} ms, {100 * r['roofline_fraction']:.0f}% of "
                     f"{1e3 * r['roofline_s']:.3f} ms roofline, {r['speedup']:.2f}x torch")
    lines.append(f"E bf16, V {V}, d {d}, top-1: " + "; ".join(parts))
    return lines, dict(copy_bandwidth_Bps=bandwidth, rows=records)


def bench_attention(s, device):
    import bench_attention as ba

    records, lines = [], []
    for prefix in (0, 14):
        parts = []
        for T in s.bench_T:
            rows = ba.measure(T, torch.bfloat16, False, prefix, ["triton", "sdpa"], device, s.repeats, s.warmup,
                              B=s.batch, H=s.heads)
            records += rows
            both = rows[-1]  # forward + backward
            parts.append(f"T={T} {both['speedup']['triton/sdpa']:.2f}x ({1e3 * both['seconds']['triton']:.3f} ms)")
        lines.append(f"fwd+bwd bf16 vs SDPA, prefix {prefix}: " + "; ".join(parts))
    parts = []
    for T in s.bench_T:
        r = ba.measure_packed(T, torch.bfloat16, 14, device, s.repeats, s.warmup, B=s.batch, H=s.heads)
        records.append(r)
        parts.append(f"T={T} {r['speedup']['triton/sdpa']:.2f}x ({1e3 * r['seconds']['triton']:.3f} ms, "
                     f"{100 * r['real_share']:.0f}% real)")
    lines.append("fwd+bwd bf16, packed rows after a 14-key prompt, Triton packed vs SDPA padded: " + "; ".join(parts))
    return lines, dict(rows=records)


def bench_step(s, device, dry):
    """minway's prompt-tuning step with SDPA and with Triton attention, and HF + PEFT's when
    peft is installed, timed in turns."""
    import importlib.util

    import bench_step as bs
    from minway.model import SIZES, GPT2Config

    config = SIZES.get(s.step_model) or GPT2Config(**DRY.model)
    dtype = torch.float32 if dry else torch.bfloat16
    ids = torch.randint(0, config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0)).to(device)
    steps = {f"minway {attention}": bs.minway_step(config, ids, 14, dtype, device, attention)
             for attention in ("sdpa", "triton")}
    peft = importlib.util.find_spec("peft") is not None
    if peft:
        steps["hf+peft"] = bs.hf_peft_step(config, ids, 14, dtype, device)
    seconds = bs.time_steps(steps, device, max(1, s.repeats // 4), min(2, s.warmup))
    times = ", ".join(f"{name} {1e3 * t:.1f} ms" for name, t in seconds.items())
    line = f"{s.step_model} {str(dtype)[6:]}, batch 8 x 64 after a 14-token prompt: {times}"
    if peft:
        line += f"; {seconds['hf+peft'] / seconds['minway sdpa']:.2f}x HF+PEFT"
    else:
        line += "; no HF+PEFT baseline: peft is not installed"
    return [line], dict(seconds=seconds)


def bench_multi_prompt(s, device, dry):
    from types import SimpleNamespace

    import bench_multi_prompt as bm
    from minway.model import GPT2, SIZES, GPT2Config, init_weights

    config = SIZES.get(s.step_model) or GPT2Config(**DRY.model)
    dtype = torch.float32 if dry else torch.bfloat16
    model = init_weights(GPT2(config)).to(device, dtype).freeze()
    K = 2 if dry else 8
    r = bm.measure(model, K, SimpleNamespace(batch=8, tokens=64, prompt=14), device, max(1, s.repeats // 4),
                   min(2, s.warmup))
    return [f"K={K} prompts in one batch: {r['speedup']:.2f}x {K} sequential steps "
            f"(largest prompt difference {r['max_prompt_diff']:.1e})"], r


def bench_train(s, device, work):
    """benchmarks/bench_train.py: real sst2 and agnews training steps and evaluation, minway (SDPA
    and Triton attention) against HF transformers + PEFT, in a process of its own."""
    out = work / "bench-train.json"
    command = [sys.executable, "benchmarks/bench_train.py", *s.train_bench, "--device", device.type,
               "--attention", "sdpa,triton", "--no-save", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"bench_train.py exit {done.returncode}: {done.stderr.strip()[-400:]}")
    record = json.loads(out.read_text())
    lines = []
    for task, r in record["tasks"].items():
        rates = ", ".join(f"{name} {r['steps_per_second'][name]:.2f}/{r['eval_examples_per_second'][name]:.1f}"
                          for name in r["steps_per_second"])
        lines.append(f"{task} (batch {r['batch_size']}, {100 * r['real_token_share']:.0f}% real tokens when "
                     f"padded), steps/s / eval examples/s: {rates}")
    return lines, record


# ---------------------------------------------------------------- main


def hub_cache_models():
    """{cache directory: {model repo: has safetensors weights}} of this machine's Hugging Face
    caches: real GPT-2 weights found there would let a GPU session run the paper's Table 2."""
    from weights.resolve import hub_cache_dir

    listing = {}
    for cache in dict.fromkeys([hub_cache_dir(), Path.home() / ".cache" / "huggingface" / "hub"]):
        if cache.is_dir():
            listing[str(cache)] = {repo.name.removeprefix("models--").replace("--", "/"):
                                   any(repo.glob("snapshots/*/*.safetensors"))
                                   for repo in sorted(cache.glob("models--*"))}
    return listing


def describe_hub_cache(listing):
    if not listing:
        return "Hugging Face cache: none on this machine"
    return "; ".join(f"Hugging Face cache {cache}: " + (", ".join(
        f"{repo}{'' if weights else ' (no safetensors)'}" for repo, weights in repos.items()) or "empty")
        for cache, repos in listing.items())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, kernels in Triton's interpreter")
    p.add_argument("--skip-compile", action="store_true", help="leave out the compile check")
    p.add_argument("--skip-benchmarks", action="store_true", help="correctness only")
    args = p.parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported
    cache_dir = tempfile.mkdtemp(prefix="minway-triton-cache-")
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # the compile check fills it, the launches below read it
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from common import device_name, triton_version
    from minway.run.storage import atomic_write_text

    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no GPU seen by torch: run with --dry-run on a CPU")
    s = DRY if args.dry_run else FULL
    stem = f"{device_name(device)}-{time.strftime('%Y-%m-%d')}-{{}}{'-dry-run' if args.dry_run else ''}.json"
    results = ROOT / "benchmarks" / "results"
    directories = sorted({results, Path(os.environ.get("OUT") or results)})
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    header = (f"minway GPU check{' (dry run)' if args.dry_run else ''}: {device_name(device)}, torch "
              f"{torch.__version__}, triton {triton_version()}, commit {commit.stdout.strip() or '?'}")
    print(header, flush=True)
    hub_cache = hub_cache_models()
    print(describe_hub_cache(hub_cache), flush=True)
    start = time.perf_counter()
    report = Report()
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_compile:
            compile_json = directories[0] / stem.format("compile")
            report.check("compile", lambda: check_compile(args.dry_run, cache_dir, compile_json))
            for directory in directories[1:]:
                if compile_json.is_file():
                    atomic_write_text(directory / compile_json.name, compile_json.read_text())
        report.check("projection", lambda: check_projection(s, device))
        report.check("attention", lambda: check_attention(s, device))
        report.check("model", lambda: check_model(s, device))
        report.check("train", lambda: check_train(s, device, args.dry_run, Path(work)))
    if not args.skip_benchmarks:
        report.benchmark("projection", lambda: bench_projection(s, device))
        report.benchmark("attention", lambda: bench_attention(s, device))
        report.benchmark("step", lambda: bench_step(s, device, args.dry_run))
        report.benchmark("prompts", lambda: bench_multi_prompt(s, device, args.dry_run))
        with tempfile.TemporaryDirectory() as work:
            report.benchmark("train", lambda: bench_train(s, device, Path(work)))
    seconds = time.perf_counter() - start

    record = dict(header=header, dry_run=args.dry_run, seconds=seconds, sizes=asdict(s), checks=report.checks,
                  benchmarks=report.benchmarks, device=device_name(device), torch=torch.__version__,
                  triton=triton_version(), commit=commit.stdout.strip(), hub_cache=hub_cache)
    name = stem.format("gpu-check")
    for directory in directories:
        atomic_write_text(directory / name, json.dumps(record, indent=1, default=str, allow_nan=False) + "\n")

    print(f"\n{header}, {seconds:.0f} s")
    print(f"  {describe_hub_cache(hub_cache)}")
    for c in report.checks:
        print(f"  {c['status']:4}  {c['name']:10} {c['detail'][:300]}")
    for b in report.benchmarks:
        for line in b["lines"]:
            print(f"  bench {b['name']:10} {line}")
    print(f"  results: {', '.join(str(d / name) for d in directories)}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    if report.failed:
        print(f"FAILED: {', '.join(report.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
