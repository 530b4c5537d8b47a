"""Compile every kernel configuration the CUDA path can choose, for GPUs that are not here.

    python -m minway.kernels.gpu_compile [--arch 80 90] [--jobs N] [--json FILE]

Triton compiles for a target named by hand (``GPUTarget``): no GPU or driver is needed. Each
configuration is what a launch on that GPU would compile: the kernels' own wrappers
(``projection_triton.candidates``, ``flash_attention._forward`` and ``_backward``) run on
empty CPU tensors shaped as in GPT-2, Llama 3 and Qwen 2.5, with each launch
``kernel[grid](...)`` recorded instead of run, and Triton's own binder specialises its
arguments as it does at a launch. Configurations that specialise alike (another vocabulary or
number of heads: the kernels do not specialise on those sizes) are compiled once. Of each
compiled kernel it records the shared memory (Triton's dynamic amount plus ptxas' static
one), registers, stack frame and spill bytes (from the ``ptxas -v`` log of Triton's own
ptxas run).

Exits non-zero when a configuration fails to compile, needs more shared memory than the
architecture gives one block, or spills registers although it is one of the ``hot``
configurations (those training and evaluation run). Needs TRITON_INTERPRET unset or 0.
"""
import argparse
import io
import json
import os
import re
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, redirect_stdout
from multiprocessing import get_context
from pathlib import Path

# Largest shared memory one block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin): A100, H100.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
# torch's dtypes by name: torch is imported by the launches, so that --help answers at once
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

# Representative shapes: gpt2-large (d = 1280, 20 heads of 64), GPT-2's vocabulary, batch 8
# of 64 text tokens after a 14-token prompt; M = 14 is one prompt, 1024 a batch of them.
VOCAB, WIDTH, BATCH, HEADS, TOKENS, PROMPT = 50257, 1280, 8, 20, 64, 14
PROJECTION_M = (14, 32, 64, 1024)  # one of each block size _config picks
PROJECTION_KP = (2, 4, 8)  # k = 1..2, 3..4, 5..8
# (rows, width) of the vocabularies of Llama 3 at 1B and of Qwen 2.5's at Llama 3 8B's width
LARGE_VOCABULARIES = ((128256, 2048), (151936, 4096))
HEAD_DIMS = (16, 32, 64, 128)
# packed: the model's call, rows end to end, each text row after its prompt's keys, no mask;
# padded: a (B, H, T, D) batch of views into one projection, with a key padding mask
ATTENTION_LAYOUTS = ("packed", "padded")
# grouped-query heads (query heads, key/value heads) of Llama 3 (8B; 1B at D = 64), packed
GROUPED_HEADS = (32, 8)


def configurations(archs):
    """Every configuration as a plain dict. ``hot``: what training and evaluation run, where a spill
    fails the check: the projection of bf16 and fp32 rows at top-k slots 2 (minway asks for
    k <= 2), attention at GPT-2's head dim in 16 bits."""
    configs = []
    for arch in archs:
        for M in PROJECTION_M:
            for storage in ("fp32", "bf16", "fp16"):
                for metric in ("dot", "l2", "cos"):
                    for kp in PROJECTION_KP:
                        hot = storage != "fp16" and kp == 2
                        configs.append(dict(kernel="projection", arch=arch, M=M, dtype=storage, metric=metric,
                                            kp=kp, hot=hot))
                        configs += [dict(kernel="projection", arch=arch, M=M, dtype=storage, metric=metric, kp=kp,
                                         hot=hot, vocab=vocab, width=width)
                                    for vocab, width in LARGE_VOCABULARIES if hot]
        for D in HEAD_DIMS:
            for dtype in DTYPES:
                for layout in ATTENTION_LAYOUTS:
                    for kernel in ("fwd", "dq", "dkdv"):
                        hot = D == 64 and dtype != "fp32"
                        configs.append(dict(kernel=kernel, arch=arch, D=D, dtype=dtype, layout=layout, hot=hot))
                        if layout == "packed" and D >= 64:
                            configs.append(dict(kernel=kernel, arch=arch, D=D, dtype=dtype, layout=layout, hot=hot,
                                                heads=GROUPED_HEADS))
    return configs


def pairwise(configs):
    """A subset of ``configs`` in which, for each architecture and each of the two kernels, every pair
    of values two settings take together in some configuration (M = 1024 with kp = 8, fp32 with cos,
    dkdv with the padded layout, ...) still occurs: chosen greedily, each pick the configuration that
    covers the most pairs not yet covered. An error that needs two settings at once to show is caught
    as by the whole grid, with an eighth of its compiles. The vocabulary is no setting here: the whole
    grid shows that the kernel does not specialise on it."""
    def pairs(config):
        settings = sorted((key, str(value)) for key, value in config.items() if key not in ("hot", "vocab", "width"))
        return {(a, b) for i, a in enumerate(settings) for b in settings[i + 1:]}

    chosen = []
    for group in {(c["arch"], c["kernel"] == "projection") for c in configs}:
        candidates = [c for c in configs if (c["arch"], c["kernel"] == "projection") == group]
        uncovered = set().union(*map(pairs, candidates))
        while uncovered:
            best = max(candidates, key=lambda config: len(pairs(config) & uncovered))
            chosen.append(best)
            uncovered -= pairs(best)
    return [config for config in configs if any(config is c for c in chosen)]


def name(config):
    if config["kernel"] == "projection":
        vocabulary = f"V={config['vocab']} d={config['width']} " if "vocab" in config else ""
        return f"projection {vocabulary}M={config['M']} {config['dtype']} {config['metric']} kp={config['kp']}"
    heads = " heads={}/{}".format(*config["heads"]) if "heads" in config else ""
    return f"attention {config['kernel']} D={config['D']} {config['dtype']} {config['layout']}{heads}"


class _Recorder:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **kwargs)`` records the launch instead of running it."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.kernel, args, kwargs))


@contextmanager
def _recorded(module, *kernels):
    """The launches of ``module``'s ``kernels`` (names) made in the block, recorded instead of run: a
    list of (kernel, arguments, keyword arguments)."""
    launches, originals = [], {kernel: getattr(module, kernel) for kernel in kernels}
    for kernel, original in originals.items():
        setattr(module, kernel, _Recorder(original, launches))
    try:
        yield launches
    finally:
        for kernel, original in originals.items():
            setattr(module, kernel, original)


def _projection_launch(config):
    import torch

    from minway.kernels import projection_triton

    M, kp, width = config["M"], config["kp"], config.get("width", WIDTH)
    q = torch.zeros(M, width)  # (split into bf16 parts: zeros split fastest)
    E = torch.empty(config.get("vocab", VOCAB), width, dtype=getattr(torch, DTYPES[config["dtype"]]))
    inv_qn = torch.empty(M) if config["metric"] == "cos" else None
    programs = 4 * 132  # an H100's SMs; only the vocabulary's split depends on it
    with _recorded(projection_triton, "_nearest_kernel") as launches:
        projection_triton.candidates(q, E, kp, config["metric"], inv_qn, config["arch"], programs)
    return launches[0]


def _attention_launch(config):
    """Inputs laid out as their callers make them. packed: q, k, v contiguous (N, heads, D), the keys
    of each row its prompt's then its own, as ``GPT2`` gathers them; padded: q, k, v and the output
    gradient views into (B * T, 3C) and (B * T, C) tensors, as ``flash_attention`` packs them."""
    import torch

    from minway.kernels import flash_attention

    D, dtype = config["D"], getattr(torch, DTYPES[config["dtype"]])
    heads, kv_heads = config.get("heads", (HEADS, HEADS))
    C = heads * D
    offsets = torch.arange(BATCH + 1)
    if config["layout"] == "packed":
        q, do = (torch.empty(BATCH * TOKENS, heads, D, dtype=dtype) for _ in range(2))
        k, v = (torch.empty(BATCH * (PROMPT + TOKENS), kv_heads, D, dtype=dtype) for _ in range(2))
        rows = flash_attention.Rows(offsets * TOKENS, offsets * (PROMPT + TOKENS), TOKENS, PROMPT + TOKENS)
    else:
        q, k, v = (x.view(-1, heads, D) for x in torch.empty(BATCH * TOKENS, 3 * C, dtype=dtype).split(C, dim=1))
        do = torch.empty(BATCH * TOKENS, C, dtype=dtype).view(-1, heads, D)
        rows = flash_attention.Rows(offsets * TOKENS, offsets * TOKENS, TOKENS, TOKENS,
                                    torch.ones(BATCH * TOKENS, dtype=torch.bool))
    o, lse = torch.empty(q.shape, dtype=dtype), torch.empty(q.shape[:2])
    with _recorded(flash_attention, "_fwd", "_bwd_dq", "_bwd_dkdv") as launches:
        if config["kernel"] == "fwd":
            flash_attention._forward(q, k, v, rows, config["arch"])
        else:
            flash_attention._backward(q, k, v, o, lse, do, rows, config["arch"])  # dq, then dkdv
    return launches[{"fwd": 0, "dq": 0, "dkdv": 1}[config["kernel"]]]


def _source(config):
    """What Triton compiles for a configuration: (the kernel's source, its target, the compile
    options, the block sizes), specialised as at a launch. With ``unaligned`` set in the config,
    without the divisibility Triton finds in the arguments (16-byte aligned pointers, integers
    that are multiples of 16), as for inputs of odd sizes."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel, args, kwargs = (_projection_launch if config["kernel"] == "projection" else _attention_launch)(config)
    target = GPUTarget("cuda", config["arch"], 32)
    backend = make_backend(target)
    # what JITFunction.run does before it compiles: bind, specialise, pack
    bound, specialization, options = create_function_from_signature(kernel.signature, kernel.params,
                                                                     backend)(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    if config.get("unaligned"):
        attrs = {}
    blocks = {k: v for k, v in kwargs.items() if k.startswith("BLOCK")}
    return ASTSource(kernel, signature, constexprs, attrs), target, options, blocks


def specialisation(config):
    """A key that two configurations share exactly when Triton compiles the same kernel for both (one
    of its own where its launch fails: ``compile_one`` then says why)."""
    try:
        source, target, options, _ = _source(config)
    except Exception:
        return name(config), config["arch"]
    return repr((source.hash(), target, options))


def compile_one(config):
    """Compile one configuration; the config with its measurements (or its error) added."""
    import triton

    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")  # a note on Triton 3.10's default
    start = time.perf_counter()
    result = dict(config, name=name(config), shared_limit=SHARED_LIMIT[config["arch"]])
    try:
        source, target, options, blocks = _source(config)
        log = io.StringIO()
        with redirect_stdout(log):  # TRITON_DUMP_PTXAS_LOG prints ptxas' -v report
            compiled = triton.compile(source, target=target, options=options.__dict__)
        result.update(_ptxas_report(log.getvalue()), dynamic_shared=compiled.metadata.shared,
                      num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages, blocks=blocks)
        result["shared"] = result["dynamic_shared"] + result["static_shared"]
    except Exception as error:  # a failure to compile is a finding, not a crash of the check
        result["error"] = f"{type(error).__name__}: {error}".strip()[:2000]
    result["seconds"] = time.perf_counter() - start
    result["problems"] = problems(result)
    return result


def _ptxas_report(log):
    numbers = {}
    for key, pattern in (("registers", r"Used (\d+) registers"), ("static_shared", r"(\d+) bytes smem"),
                         ("stack", r"(\d+) bytes stack frame"), ("spill_stores", r"(\d+) bytes spill stores"),
                         ("spill_loads", r"(\d+) bytes spill loads")):
        found = re.search(pattern, log)
        numbers[key] = int(found.group(1)) if found else 0
        if key == "registers" and not found:
            raise RuntimeError(f"no ptxas report in Triton's output: {log[-500:]!r}")
    return numbers


def problems(result):
    """What makes a configuration fail the check, in words (empty: it passes)."""
    if "error" in result:
        return ["does not compile"]
    found = []
    if result["shared"] > result["shared_limit"]:
        found.append(f"{result['shared'] / 1024:.0f} KiB shared > {result['shared_limit'] // 1024} KiB")
    if result["hot"] and (result["spill_stores"] or result["spill_loads"]):
        found.append(f"hot configuration spills {result['spill_stores']} B")
    return found


@contextmanager
def _mapping(jobs):
    """``map`` in this process, or over ``jobs`` spawned ones (a forked one would share Triton's state)."""
    if jobs == 1:
        yield map
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            yield pool.map


def compile_all(configs, jobs, cache_dir=None, report=print):
    """Compile each distinct configuration once, ``jobs`` at a time, calling ``report`` with each result
    as it comes; the results, in the order of ``configs``, those that specialise like an earlier one
    with its figures and ``same_as`` its name. The kernels go to ``cache_dir`` (default: a fresh
    cache, removed after), where launches with the same arguments find them."""
    # compile even what the cache holds, so that ptxas reports
    os.environ.update(TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1")
    first = {}  # specialisation -> index in configs of the first configuration that has it
    with tempfile.TemporaryDirectory() as fresh:
        os.environ["TRITON_CACHE_DIR"] = cache_dir or fresh
        with _mapping(jobs) as parallel_map:
            same = [first.setdefault(key, i) for i, key in enumerate(parallel_map(specialisation, configs))]
            distinct = sorted(set(same))
            compiled = {}
            for i, result in zip(distinct, parallel_map(compile_one, [configs[i] for i in distinct])):
                compiled[i] = result
                report(result)
    results = []
    for config, i in zip(configs, same):
        result = compiled[i]
        if configs[i] is not config:
            measured = {key: value for key, value in result.items() if key not in configs[i]}
            result = {**config, **measured, "name": name(config), "same_as": result["name"], "seconds": 0.0}
            result["problems"] = problems(result)
            report(result)
        results.append(result)
    return results


HEADER = (f"{'arch':>4} {'configuration':44} {'warps':>5} {'stages':>6} {'shared KiB':>10} {'regs':>4} "
          f"{'stack':>5} {'spill st':>8} {'spill ld':>8} {'s':>5}  problems")


def row(r):
    mark = "*" if r["hot"] else " "
    if "same_as" in r:
        return f"{r['arch']:>4} {mark}{r['name']:43} = {r['same_as']}  {'; '.join(r['problems'])}"
    if "error" in r:
        return f"{r['arch']:>4}  {r['name']:43} {'':46} {r['seconds']:5.1f}  {r['error'].splitlines()[0][:80]}"
    return (f"{r['arch']:>4} {mark}{r['name']:43} {r['num_warps']:>5} {r['num_stages']:>6} "
            f"{r['shared'] / 1024:>10.1f} {r['registers']:>4} {r['stack']:>5} {r['spill_stores']:>8} "
            f"{r['spill_loads']:>8} {r['seconds']:5.1f}  {'; '.join(r['problems'])}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minway.kernels.gpu_compile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SHARED_LIMIT))
    p.add_argument("--match", nargs="+", help="only the configurations whose name contains one of these")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="compiles at a time")
    p.add_argument("--cache-dir", help="Triton cache to fill, for launches to come (default: a fresh one, "
                                       "removed after)")
    p.add_argument("--unaligned", action="store_true",
                   help="compile without the divisibility of the arguments (as for odd sizes); spills then fail nothing")
    p.add_argument("--pairs", action="store_true",
                   help="only a subset with every pair of settings of the whole grid (see pairwise): the test "
                        "suite's check, an eighth of the compiles; CI compiles the whole grid too")
    p.add_argument("--json", help="write every configuration's figures here")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        raise SystemExit("error: unset TRITON_INTERPRET (or set it to 0): the interpreter compiles nothing")
    import triton

    configs = [dict(c, unaligned=args.unaligned, hot=c["hot"] and not args.unaligned) for c in configurations(args.arch)
               if not args.match or any(m in name(c) for m in args.match)]
    if args.pairs:
        configs = pairwise(configs)
    start = time.perf_counter()
    print(HEADER, flush=True)
    results = compile_all(configs, args.jobs, args.cache_dir, report=lambda r: print(row(r), flush=True))
    seconds = time.perf_counter() - start
    failed = [r for r in results if r["problems"]]
    spilling = [r for r in results if r.get("spill_stores")]
    distinct = sum("same_as" not in r for r in results)
    print(f"triton {triton.__version__}: {len(results)} configurations ({distinct} distinct, compiled; = marks one "
          f"compiled as the one it names) in {seconds:.0f} s with {args.jobs} jobs; {len(failed)} failed; "
          f"{len(spilling)} spill registers ({sum(r['hot'] for r in spilling)} of them hot); * marks the hot ones")
    if args.json:
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "seconds": seconds, "jobs": args.jobs,
                                               "results": results}, indent=1, allow_nan=False), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
