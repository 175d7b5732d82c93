"""The executor of independent fits: worker processes (and a Ray cluster) give the
serial run's results, and progress is one line per finished fit."""

from __future__ import annotations

import numpy as np
import pytest

from holomed.evaluation.compare import compare
from holomed.executor import Executor, LocalExecutor, make_executor


def _square(shared, job):
    return shared["k"] * job


def test_executors_return_results_in_job_order_and_report_each_finished_job():
    seen = []
    with LocalExecutor(2) as ex:
        out = ex.map(_square, {"k": 3}, [1, 2, 3, 4], lambda i, r: seen.append((i, r)))
    assert out == [3, 6, 9, 12]
    assert sorted(seen) == [(0, 3), (1, 6), (2, 9), (3, 12)]
    assert Executor().map(_square, {"k": 2}, [1, 2]) == [2, 4]


def test_auto_is_serial_on_one_core_and_unknown_kinds_are_named(monkeypatch):
    monkeypatch.setenv("HOLOMED_THREADS", "1")
    assert make_executor("auto").kind == "serial"
    assert make_executor("auto", workers=2).kind == "local"
    with pytest.raises(ValueError, match="'threads'"):
        make_executor("threads")


def _run(make_tiny_spec, tiny_cohort, executor):
    spec = make_tiny_spec(
        evaluation={"seeds": 2, "candidates": ["lr_early", "ensemble"], "ablations": False}
    )
    ticks = []
    res, outs = compare(
        spec,
        tiny_cohort,
        ["late"],
        tick=lambda msg, units=1: ticks.append((msg, units)),
        executor=executor,
    )
    return res, outs, ticks


def test_local_processes_give_the_serial_results(make_tiny_spec, tiny_cohort):
    serial = _run(make_tiny_spec, tiny_cohort, Executor())
    with LocalExecutor(2) as ex:
        local = _run(make_tiny_spec, tiny_cohort, ex)
    (r1, o1, t1), (r2, o2, t2) = serial, local
    assert set(o1) == set(o2)
    for name in o1:  # every entry, every seed: the same predictions
        for a, b in zip(o1[name], o2[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert r1["selected"] == r2["selected"]
    for a, b in zip(r1["selection_detail"], r2["selection_detail"], strict=True):
        assert a["cv_scores"] == pytest.approx(b["cv_scores"], abs=1e-9)
        assert a["selected"] == b["selected"]
    assert sorted(t1) == sorted(t2)  # one progress line per fit, whoever ran it


def test_a_ray_cluster_gives_the_serial_results(make_tiny_spec, tiny_cohort):
    ray = pytest.importorskip("ray", reason="the ray package (holomed[scale]) is not installed")
    serial = _run(make_tiny_spec, tiny_cohort, Executor())
    try:
        ex = make_executor("ray", workers=2)
        assert ex.kind == "ray" and ex.workers == 2
        _, o2, t2 = _run(make_tiny_spec, tiny_cohort, ex)
    finally:
        ray.shutdown()
    for name, outs in serial[1].items():
        for a, b in zip(outs, o2[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert sorted(serial[2]) == sorted(t2)
