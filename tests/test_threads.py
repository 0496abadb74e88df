"""One thread-count policy (imharmony._threads) for every parallel loop."""

from __future__ import annotations

import os

import pytest
from threadpoolctl import threadpool_limits

from imharmony._threads import ENV_VAR, cpu_threads, io_threads


def available() -> int:
    return len(os.sched_getaffinity(0))


def test_cpu_threads_follow_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert 1 <= cpu_threads() <= available()
    with threadpool_limits(limits=1):
        assert cpu_threads() == 1
        assert io_threads() == 2
    monkeypatch.setenv(ENV_VAR, "1")
    assert cpu_threads() == 1


def test_bad_env_value_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_VAR, "zero")
    with caplog.at_level("WARNING"):
        n = cpu_threads()
    assert n >= 1 and "not a positive integer" in caplog.text
    assert 1 <= io_threads() <= 8


def test_combat_and_blur_use_the_policy() -> None:
    from imharmony.features import combat
    from imharmony.imaging import resolution

    assert combat.cpu_threads is cpu_threads
    assert resolution.cpu_threads is cpu_threads
