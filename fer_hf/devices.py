"""One answer to "which torch device": `--device auto` (CUDA, then Apple's MPS, then the CPU) and a sentence, not a
traceback deep inside `.to(device)`, for a device this machine does not have. Used by predict, evaluate and
`fer_hf.analyze`; torch is imported only when a device is resolved (the commands' --help stays fast)."""

from __future__ import annotations

AUTO = "auto"
DEVICE_HELP = "torch device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A --device this machine does not have, or not a device name at all."""


def resolve_device(name: str | None = AUTO) -> str:
    """'auto' -> the best device present; any other name -> itself once checked to exist here (DeviceError else)."""
    import torch

    text = (name or AUTO).strip().lower()
    if text == AUTO:
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name!r} is not a device name; expected {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or --device auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")
    elif device.type == "mps" and not _mps_available():
        raise DeviceError(f"--device {name}: Apple's MPS backend is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: not supported by fer_hf; expected {DEVICE_HELP}")
    return str(device)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


# ---------------------------------------------------------------- CPU threads for inference
THREADS_ENV = "FER_HF_THREADS"  # a positive integer overrides the fitted count below


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit), not the machine's."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def inference_threads(cores: int | None = None) -> int:
    """Intra-op threads for torch inference: the usable cores less one, at least one.

    Why one less: an OpenMP thread pool as large as the cores stalls at every barrier as soon as any other process
    takes a core (measured on 2 shared cores: a photo through torch took 450-830 ms with 2 threads beside one busy
    process, 40-77 ms with 1), and the spare core also serves the app's other requests.
    `FER_HF_THREADS` overrides it (DeviceError when it is not a positive integer)."""
    import os

    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise DeviceError(f"{THREADS_ENV}={text!r} is not a thread count; expected a positive integer, e.g. 1")
        return int(text)
    cores = usable_cores() if cores is None else cores
    return max(1, cores - 1)


def onnxruntime_threads(cores: int | None = None) -> int:
    """Intra-op threads for onnxruntime sessions (the exports and YuNet): every usable core.

    Unlike torch's OpenMP pool, onnxruntime's own pool with spinning turned off (as every session here sets it) does
    not stall beside another busy process. Measured on 2 shared cores, YuNet on a 640x480 photo, two runs: 8.7-8.8 ms
    with 1 thread and 5.3-7.2 ms with 2 idle; beside one busy-looping process 8.7 and 6.6-7.0 ms. `FER_HF_THREADS`
    overrides it."""
    import os

    if os.environ.get(THREADS_ENV, "").strip():
        return inference_threads()  # the override, checked there
    return usable_cores() if cores is None else cores


def fit_torch_threads() -> int:
    """Lower (never raise) torch's intra-op threads to `inference_threads()`; returns the count now in use.
    Called where torch runs inference on the CPU; training keeps torch's own choice."""
    import os

    import torch

    wanted = inference_threads()
    threads = wanted if os.environ.get(THREADS_ENV, "").strip() else min(torch.get_num_threads(), wanted)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
