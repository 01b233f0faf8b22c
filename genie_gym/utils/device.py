"""Device choice: `auto` picks CUDA when present; asking for CUDA without it is a clear error."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"--device {name} was requested but CUDA is not available on this machine; "
            "use --device cpu or --device auto"
        )
    return dev


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory for new allocations on `device`: CUDA's free memory, or Linux's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
