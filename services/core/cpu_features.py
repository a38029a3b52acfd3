"""What the CPU can do fast, read from the kernel's `/proc/cpuinfo` flags.

bfloat16 weights are only worth it where the CPU multiplies bfloat16 natively (AMX tiles or
AVX-512 BF16): there a forward pass costs about half as much as in float32; elsewhere the
same weights are converted on every use and run several times slower than float32.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU listed (x86 `flags`; empty where unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_native_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether the CPU computes in bfloat16 natively (AMX-BF16 or AVX-512 BF16)."""
    return bool(cpu_flags(cpuinfo) & NATIVE_BFLOAT16_FLAGS)
