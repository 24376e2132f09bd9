"""What this machine can run on, found without importing torch or any GPU runtime.

Importing torch just to ask "is there a GPU?" costs seconds and hundreds of MB; the NVIDIA driver leaves
cheaper traces: `/proc/driver/nvidia/version` on Linux and `nvidia-smi` on PATH everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast, get_args

import psutil

from lokal.config import Settings, get_settings

Device = Literal["cpu", "cuda", "npu", "webgpu"]  # webgpu: runs in the browser (the playground), not here
KNOWN_DEVICES: tuple[str, ...] = get_args(Device)
_NVIDIA_PROC = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class HardwareInfo:
    cpu_count: int
    memory_bytes: int
    devices: list[Device]  # preference order, best first; always ends with "cpu"
    gpus: list[Gpu] = field(default_factory=list)


@lru_cache(maxsize=1)
def default_threads() -> int:
    """CPU threads an engine computes with when LOKAL_N_THREADS is unset: the physical cores, for every engine
    alike (ONNX Runtime's own default decoded 36% slower than this inside lokal serve on 2 cores)."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def cuda_available() -> bool:
    return _NVIDIA_PROC.exists() or shutil.which("nvidia-smi") is not None


def devices(settings: Settings | None = None) -> list[Device]:
    """Devices to try, best first. LOKAL_DEVICE (Settings.device) forces one, with cpu kept as fallback."""
    settings = settings or get_settings()
    forced = (settings.device or "").strip().lower()
    if forced and forced != "auto":
        if forced not in KNOWN_DEVICES:
            from lokal.errors import InvalidRequest

            raise InvalidRequest(
                f"LOKAL_DEVICE={settings.device!r} is not a device lokal knows; use one of "
                f"{', '.join(KNOWN_DEVICES)} or 'auto'",
                param="device",
            )
        device = cast(Device, forced)
        return [device] if device == "cpu" else [device, "cpu"]
    return ["cuda", "cpu"] if cuda_available() else ["cpu"]


def nvidia_gpus(timeout: float = 5.0) -> list[Gpu]:
    """Names and memory of NVIDIA GPUs via nvidia-smi; empty when there is none or it does not answer."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            gpus.append(Gpu(name=name.strip(), memory_bytes=int(mib.strip()) * 2**20))
    return gpus


def detect(settings: Settings | None = None) -> HardwareInfo:
    return HardwareInfo(
        cpu_count=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        devices=devices(settings),
        gpus=nvidia_gpus() if cuda_available() else [],
    )
