"""Device choice: `auto` picks CUDA when present; asking for CUDA without it is a clear error."""

from __future__ import annotations

import time

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


def matmul_gflops(device: str | torch.device, seconds: float = 1.0) -> dict[str, float]:
    """This machine's dense matmul throughput, float32 and bfloat16 (1024 x 1024 x 1024, repeated ~`seconds`)."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, 1024, device=device, dtype=dtype)
        b = torch.randn(1024, 1024, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while n < 5 or time.perf_counter() - t0 < seconds:
            a @ b
            n += 1
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        out[str(dtype).replace("torch.", "")] = 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9
    return out
