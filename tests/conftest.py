import os
import sys
from pathlib import Path

import torch

# Triton kernels run in the interpreter when there is no GPU. The variable must be
# set before triton is first imported, hence here, before any test module loads. It is
# set, not defaulted: without a GPU a TRITON_INTERPRET=0 left in the environment could
# only make every Triton test fail.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
