import os
import sys
from pathlib import Path

import torch

# Triton kernels run in the interpreter when there is no GPU. The variable must be
# set before triton is first imported, hence here, before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
