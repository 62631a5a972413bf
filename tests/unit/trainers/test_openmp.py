"""The OpenMP wait-policy decision (runtime/openmp.py): PASSIVE only on an oversubscribed
machine, and never over a policy the user set."""

from __future__ import annotations

import pytest

from speechtune.runtime import openmp


@pytest.mark.parametrize(("load", "cpus", "expected"), [
    (0.3, 2, None),  # idle: OpenMP's spinning default is fastest
    (2.0, 2, None),  # exactly one runnable process per core: still not oversubscribed
    (2.5, 2, "PASSIVE"),  # more runnable processes than cores
    (30.0, 16, "PASSIVE"),
    (0.5, 0, None),  # an unknown core count counts as one
    (1.5, 0, "PASSIVE"),
])
def test_passive_only_when_more_runnable_processes_than_cores(load: float, cpus: int, expected: str | None) -> None:
    assert openmp.choose({}, load=load, cpus=cpus) == expected


@pytest.mark.parametrize("own", ["ACTIVE", "PASSIVE"])
def test_a_policy_the_user_set_wins(own: str) -> None:
    assert openmp.choose({"OMP_WAIT_POLICY": own}, load=50.0, cpus=2) is None
    assert openmp.choose({"OMP_WAIT_POLICY": own}, load=0.0, cpus=2) is None


def test_apply_sets_the_variable_only_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    environ: dict[str, str] = {}
    monkeypatch.setattr(openmp, "one_minute_load", lambda: 9.0)
    monkeypatch.setattr(openmp, "usable_cpus", lambda: 2)
    assert openmp.apply(environ) == "PASSIVE" and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setattr(openmp, "one_minute_load", lambda: 0.1)
    idle: dict[str, str] = {}
    assert openmp.apply(idle) is None and idle == {}
