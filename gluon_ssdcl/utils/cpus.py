"""How many CPUs this process may use (imports nothing: ``__init__`` needs it before MXNet)."""
import os

__all__ = ['available_cpus']


def available_cpus() -> int:
    """CPUs this process may run on: its affinity set where the platform has one (Linux),
    else the machine's count (macOS, Windows)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
