"""OpenMP's wait policy, chosen once at start-up from how busy the machine is.

Spinning OpenMP threads (the default) are fastest on an idle machine; on an
oversubscribed one (more runnable processes than cores: a shared CI box, a pod at its CPU
quota) they burn the CPU share other threads need. Issue 16's hand measurements on this
2-core machine: PASSIVE costs the Conformer 20-30 % idle, while the default cost one step
~10x the CPU time when busy. So PASSIVE only when the 1-minute load average exceeds the
cores this process may use; a user's own OMP_WAIT_POLICY always wins.

Torch-free: it must run before torch (and libgomp) load. `python -m
speechtune.runtime.openmp` prints the choice (empty: OpenMP's default) for the Makefile."""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping

VARIABLE = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"


def choose(environ: Mapping[str, str], *, load: float, cpus: int) -> str | None:
    """The policy to set, or None to leave the environment (OpenMP's default) alone."""
    if environ.get(VARIABLE):
        return None  # the user's (or the Makefile's) setting stands
    return PASSIVE if load > max(1, cpus) else None


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, as a container's cpuset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def one_minute_load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform: behave as on an idle machine
        return 0.0


def apply(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Sets OMP_WAIT_POLICY when `choose` says so; call before torch is imported."""
    policy = choose(environ, load=one_minute_load(), cpus=usable_cpus())
    if policy is not None:
        environ[VARIABLE] = policy
    return policy


if __name__ == "__main__":
    print(choose(os.environ, load=one_minute_load(), cpus=usable_cpus()) or "")
