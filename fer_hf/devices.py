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
