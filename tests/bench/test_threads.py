"""A loaded machine: bench cells take the cores the load leaves free and say so; the codec's default does not move."""

from __future__ import annotations

import pytest

from bpcbench import environment
from bpcbench.llama import binding


@pytest.fixture
def machine(monkeypatch):
    def set_machine(cores: int, load: float):
        monkeypatch.setattr(binding.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(binding.os, "getloadavg", lambda: (load, load, load))
        binding.measurement_threads.cache_clear()

    yield set_machine
    binding.measurement_threads.cache_clear()


@pytest.mark.parametrize("cores, load, threads", [(2, 0.1, 2), (2, 1.2, 1), (2, 3.7, 1), (16, 4.2, 8), (16, 12.0, 4)])
def test_measurement_threads_leave_the_busy_cores_alone(machine, cores, load, threads):
    machine(cores, load)
    assert binding.measurement_threads() == threads
    assert binding.default_threads() == min(8, cores)  # a decoder's default must not follow the load


def test_a_busy_machine_gets_one_warning_line(machine):
    machine(2, 2.5)
    line = binding.load_warning()
    assert line is not None and "load average 2.5 on 2 usable core(s)" in line and "1 thread(s)" in line
    machine(2, 0.5)
    assert binding.load_warning() is None


def test_env_json_records_the_load(machine):
    machine(2, 1.5)
    env = environment.collect()
    assert env["load"]["load_1m"] == 1.5 and "cpu_frequency" in env
