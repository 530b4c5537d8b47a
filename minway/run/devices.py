"""What the device options can be checked against before torch is imported (which takes seconds):
whether this machine has a GPU driver at all. Torch can see a CUDA device only through one, so
where none is, ``--device cuda`` is refused at once, and ``auto`` is the CPU; where one is, torch
decides later (``minway.run.model_and_data.resolve_device``), as it sees the devices."""
import os

from minway.errors import MinwayError

# The files a GPU driver makes: NVIDIA's (its control device, in a container too, and its /proc
# entry), AMD's ROCm (whose builds of torch call its GPUs cuda) and WSL's GPU bridge.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")


def has_gpu_driver():
    return any(os.path.exists(path) for path in GPU_DRIVER_FILES)


def check_device(device, attention):
    """Refuse, without torch, ``device`` (auto, cpu, cuda or cuda:N, already checked as text) where no
    GPU driver is, and ``attention`` that cannot run on the device it will be."""
    if device.startswith("cuda") and not has_gpu_driver():
        raise MinwayError(f"--device {device} was asked for but this machine has no GPU driver (none of "
                          f"{', '.join(GPU_DRIVER_FILES)} exists): use --device cpu")
    if device == "cpu" or not has_gpu_driver():
        check_attention(attention, "cpu")


def check_attention(attention, device_type):
    if attention == "triton" and device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise MinwayError("--attention triton runs on a CUDA device (or in Triton's interpreter with "
                          "TRITON_INTERPRET=1, slowly): use --attention sdpa on a CPU")
