"""The Triton tests run on a machine without a GPU even when TRITON_INTERPRET=0 is exported:
conftest.py sets the interpreter there, whatever the environment says."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

pytest.importorskip("triton")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels run compiled")
def test_triton_tests_pass_with_triton_interpret_0_exported():
    test = "tests/test_projection.py::test_zero_vectors_have_cosine_zero"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT,
                          env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-2000:]
