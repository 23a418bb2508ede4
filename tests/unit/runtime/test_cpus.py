"""The CPUs an engine step starts threads for (toolwire/stack/cpus.py): a container's CPU
quota caps its affinity, on cgroup v2 (the smallest quota up the tree) and v1."""

import math
import os

from toolwire.runtime import cpus


def _v2(tmp_path, limits: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    for group, line in limits.items():
        d = tmp_path / group if group else tmp_path
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(line + "\n")
    return tmp_path


def test_quota_line():
    assert cpus.quota_cpus("200000 100000") == 2.0
    assert cpus.quota_cpus("150000 100000\n") == 1.5
    assert cpus.quota_cpus("max 100000") is None
    assert cpus.quota_cpus("-1 100000") is None  # v1's "no limit"
    assert cpus.quota_cpus("garbage") is None
    assert cpus.quota_cpus("") is None


def test_v2_smallest_quota_up_the_tree(tmp_path):
    root = _v2(tmp_path, {"": "max 100000", "pod": "150000 100000", "pod/ctr": "max 100000"})
    assert cpus.cgroup_cpus(root, "0::/pod/ctr\n") == 1.5
    root2 = _v2(tmp_path / "r2", {"": "max 100000", "a": "400000 100000", "a/b": "50000 100000"})
    assert cpus.cgroup_cpus(root2, "0::/a/b\n") == 0.5


def test_v2_no_quota_anywhere(tmp_path):
    root = _v2(tmp_path, {"": "max 100000", "pod": "max 100000"})
    assert cpus.cgroup_cpus(root, "0::/pod\n") is None
    assert cpus.cgroup_cpus(root, "0::/gone\n") is None  # a group that is not there


def test_v1_container_view(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_cpus(tmp_path, "4:cpu,cpuacct:/\n") == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.cgroup_cpus(tmp_path, "4:cpu,cpuacct:/\n") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: None)
    assert cpus.usable_cpus() == affinity
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: 0.5)
    assert cpus.usable_cpus() == 1
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: affinity + 8.0)
    assert cpus.usable_cpus() == affinity
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: 1.2)
    assert cpus.usable_cpus() == min(affinity, math.ceil(1.2))


def test_the_startup_line_says_where_the_count_comes_from(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: None)
    assert (
        cpus.explain() == f"{affinity} ({affinity} CPUs in this process's affinity, no CPU quota)"
    )
    monkeypatch.setattr(cpus, "cgroup_cpus", lambda: 0.5)
    assert cpus.explain().startswith("1 (") and "a CPU quota of 0.5" in cpus.explain()
    assert cpus.explain(3) == "3 (--threads)"


def test_idle_cpus_of_the_affinity_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    now = [100.0]

    def write(cpu0_idle: int, cpu1_idle: int, cpu2_idle: int) -> None:
        stat.write_text(
            "cpu  1 2 3 4 5 6 7 8 9 10\n"
            f"cpu0 10 0 5 {cpu0_idle} 0 0 0 0 0 0\n"
            f"cpu1 10 0 5 {cpu1_idle} 3 0 0 0 0 0\n"
            f"cpu2 10 0 5 {cpu2_idle} 0 0 0 0 0 0\n"
            "intr 1 2 3\n"
        )

    tick = 1 / os.sysconf("SC_CLK_TCK")
    reader = cpus.IdleCpus(stat, cpus={0, 1}, clock=lambda: now[0])  # cpu2 is not ours
    write(1000, 1000, 1000)
    assert reader.read() is None  # the first reading only starts the interval
    now[0] += 1.0
    write(1000 + round(0.5 / tick), 1000 + round(1.0 / tick), 9999)
    idle, seconds = reader.read()
    assert seconds == 1.0 and math.isclose(idle, 1.5, rel_tol=0.05)
    assert cpus.IdleCpus(tmp_path / "missing").read() is None
