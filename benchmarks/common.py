"""Timing, tables and result files shared by the kernel benchmarks."""
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minway.run.storage import atomic_write_text  # noqa: E402


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return f"cpu-{torch.get_num_threads()}threads"


def bench(fn, device, repeats, warmup):
    """Median seconds of one call of fn: CUDA events on a GPU, perf_counter on a CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device, nbytes):
    """Bytes per second a device-to-device copy moves (read plus write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * nbytes / bench(lambda: dst.copy_(src), device, repeats=10, warmup=3)


def print_table(header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


def triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def save(name, device, extra):
    """Write results/<device>-<date>-<name>.json with what is needed to reproduce it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    record = {"benchmark": name, "device": device_name(device), "date": str(date.today()),
              "commit": commit.stdout.strip() or None, "torch": torch.__version__, "triton": triton_version(),
              "platform": platform.platform(), **extra}
    path = ROOT / "benchmarks" / "results" / f"{record['device']}-{record['date']}-{name}.json"
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
