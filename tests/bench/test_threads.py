"""A loaded machine: bench cells take the cores the load leaves free and say so; the codec's default does not move."""

from __future__ import annotations

import pytest

from bpcbench import environment
from bpcbench.llama import binding


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cores: int, load: float, busy: float | None = None):
        """`cores` usable, load average `load`; `busy` cores in use now (None: /proc/stat unreadable)."""
        monkeypatch.setattr(binding.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(binding.os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(binding, "busy_cores", lambda: busy)
        binding.measurement_threads.cache_clear()

    yield set_machine
    binding.measurement_threads.cache_clear()


@pytest.mark.parametrize("cores, load, threads", [(2, 0.1, 2), (2, 1.2, 1), (2, 3.7, 1), (16, 4.2, 8), (16, 12.0, 4)])
def test_measurement_threads_leave_the_busy_cores_alone(machine, cores, load, threads):
    machine(cores, load)
    assert binding.measurement_threads() == threads
    assert binding.default_threads() == min(8, cores)  # a decoder's default must not follow the load


@pytest.mark.parametrize("cores, busy, threads", [(2, 0.05, 2), (2, 1.1, 1), (2, 2.0, 1), (16, 4.4, 8), (16, 12.0, 4)])
def test_the_cores_busy_now_decide_not_the_lagging_load_average(machine, cores, busy, threads):
    """Right after a run the 1-minute load average still counts it: back-to-back runs must agree."""
    machine(cores, load=1.74, busy=busy)
    assert binding.measurement_threads() == threads


def test_busy_cores_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  150 0 150 900 0 0 0 0 0 0\n"])

    def fake_sleep(seconds):
        stat.write_text(next(samples))

    stat.write_text(next(samples))
    monkeypatch.setattr("time.sleep", fake_sleep)
    monkeypatch.setattr(binding.os, "cpu_count", lambda: 4)
    binding.busy_cores.cache_clear()
    try:
        assert binding.busy_cores(0.0, str(stat)) == pytest.approx(100 / 200 * 4)  # half of 4 CPUs busy
        assert binding.busy_cores.__wrapped__(0.0, str(tmp_path / "missing")) is None
    finally:
        binding.busy_cores.cache_clear()


def test_a_busy_machine_gets_one_warning_line(machine):
    machine(2, 2.5, busy=1.8)
    line = binding.load_warning()
    assert line is not None and "keep 1.8 of 2 usable core(s) busy" in line and "1 thread(s)" in line
    machine(2, 2.5, busy=0.3)
    assert binding.load_warning() is None


def test_env_json_records_the_load(machine):
    machine(2, 1.5, busy=0.7)
    env = environment.collect()
    assert env["load"]["load_1m"] == 1.5 and env["load"]["busy_cores"] == 0.7 and "cpu_frequency" in env


@pytest.mark.parametrize("given, expected", [(None, "passive"), ("active", "active")])
def test_openmp_threads_wait_passively_unless_the_user_says_otherwise(given, expected):
    """Spinning OpenMP threads beside a busy core ran 1.69x slower (benchmarks/wait_policy.py)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, bpcbench.llama.binding as b, bpcbench.environment as e; "
            "print(os.environ['OMP_WAIT_POLICY'], b.OMP_WAIT_POLICY, e.llama_system_info()['omp_wait_policy'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected] * 3
