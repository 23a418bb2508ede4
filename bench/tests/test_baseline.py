"""bench/baseline.py against a small git repository made here (real git, real interpreters),
and bench/run.py's turn-taking sweep and before/after table on made-up results."""

import asyncio
import os
import pathlib
import subprocess
import sys

import pytest

from bench import baseline, run


@pytest.fixture(autouse=True)
def _plain_git(monkeypatch):
    """Commits without the machine's git config (no signing, no hooks, a fixed author)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "bench test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "bench@example.invalid")


def git(repo: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: pathlib.Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


# The installed layout's folders (setup.py's package_dir), each saying which commit it is.
LAYOUT = {
    "toolwire/__init__.py": "",
    "toolwire/grpc_gen/__init__.py": "",
    "services/__init__.py": "",
    "gateway/__init__.py": "",
}


@pytest.fixture
def repo(tmp_path) -> pathlib.Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(repo, {**LAYOUT, "which.txt": "old\n"}, "old")
    commit(repo, {"which.txt": "new\n"}, "new")
    return repo


def test_a_worktree_of_the_commit_outside_the_repo(repo, tmp_path):
    old = git(repo, "rev-parse", "HEAD~1")
    tree = baseline.checkout("HEAD~1", repo, tmp_path / "trees")
    assert tree.sha == old and old.startswith(tree.short)
    assert tree.path == (tmp_path / "trees" / old).resolve()
    assert (tree.path / "which.txt").read_text() == "old\n"
    assert (repo / "which.txt").read_text() == "new\n"  # the repo's own checkout untouched
    assert str(tree.path) in git(repo, "worktree", "list")


def test_a_clean_tree_is_reused_and_a_changed_or_deleted_one_made_again(repo, tmp_path):
    root = tmp_path / "trees"
    tree = baseline.checkout("HEAD~1", repo, root)
    (tree.path / "untracked").write_text("kept")  # stubs and links are untracked, like this
    assert baseline.checkout(tree.sha, repo, root) == tree
    assert (tree.path / "untracked").exists()

    (tree.path / "which.txt").write_text("edited\n")
    assert baseline.checkout("HEAD~1", repo, root) == tree
    assert (tree.path / "which.txt").read_text() == "old\n"
    assert not (tree.path / "untracked").exists()

    subprocess.run(["rm", "-rf", str(tree.path)], check=True)  # still registered with git
    assert baseline.checkout("HEAD~1", repo, root) == tree
    assert (tree.path / "which.txt").read_text() == "old\n"


def test_a_ref_that_names_no_commit_and_a_root_inside_the_repo_are_refused(repo, tmp_path):
    with pytest.raises(ValueError, match="names no commit"):
        baseline.checkout("no-such-branch", repo, tmp_path / "trees")
    with pytest.raises(ValueError, match="inside the repository"):
        baseline.checkout("HEAD~1", repo, repo / "trees")


def test_env_puts_the_tree_first(repo, tmp_path):
    tree = baseline.checkout("HEAD", repo, tmp_path / "trees")
    env = tree.env({"PYTHONPATH": "/elsewhere", "KEEP": "1"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(tree.path), "/elsewhere"])
    assert env["KEEP"] == "1"
    assert tree.env({})["PYTHONPATH"] == str(tree.path)


def test_the_tree_runs_its_own_packages_only_once_linked(repo, tmp_path):
    """Without the links, toolwire.services and toolwire.gateway are not the tree's: with this
    venv's editable install they are the current checkout's, without one not importable."""
    tree = baseline.checkout("HEAD~1", repo, tmp_path / "trees")
    with pytest.raises(RuntimeError, match="toolwire.services from") as e:
        baseline.check_imports(tree)
    assert "toolwire.gateway from" in str(e.value)

    baseline.link_packages(tree)
    baseline.link_packages(tree)  # again: the links are there, nothing changes
    found = baseline.check_imports(tree)
    assert set(found) == set(baseline.CHECKED)
    for f in found.values():
        assert tree.path in pathlib.Path(f).parents
    assert git(tree.path, "status", "--porcelain", "--untracked-files=no") == ""


def test_stubs_are_made_by_the_trees_own_script(repo, tmp_path):
    tree = baseline.checkout("HEAD~1", repo, tmp_path / "trees")
    with pytest.raises(RuntimeError, match="no protos/generate.py"):
        baseline.generate_stubs(tree)
    script = "import pathlib; pathlib.Path('toolwire/grpc_gen/made.txt').write_text('here')\n"
    commit(repo, {"protos/generate.py": script}, "stubs")
    tree = baseline.checkout("HEAD", repo, tmp_path / "trees")
    baseline.generate_stubs(tree)
    assert (tree.path / "toolwire/grpc_gen/made.txt").read_text() == "here"


def test_check_processes_reads_where_a_service_was_started(repo, tmp_path):
    tree = baseline.checkout("HEAD", repo, tmp_path / "trees")
    wait = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    right = subprocess.Popen(wait, cwd=tree.path, env=tree.env(), stdin=subprocess.PIPE)
    wrong = subprocess.Popen(wait, cwd=tmp_path, env=tree.env(), stdin=subprocess.PIPE)
    try:
        baseline.check_processes(tree, {"right": right.pid})
        with pytest.raises(RuntimeError, match="wrong service runs in"):
            baseline.check_processes(tree, {"wrong": wrong.pid})
    finally:
        for proc in (right, wrong):
            proc.communicate(b"")


def test_the_loads_take_turns_and_the_first_changes_each_round():
    order = []

    def load(label, tok_s):
        async def run_one(bodies):
            order.append((label, len(bodies)))
            return {"tok_s": tok_s + len(order), "ttft_p50_ms": 1.0, "itl_p50_ms": 1.0}

        return run_one

    loads = {"baseline (abc)": (load("b", 0), "m"), "current": (load("c", 100), "m")}
    res = asyncio.run(run.sweep(loads, ["text"], [1, 2], 3, 8))
    assert [label for label, _ in order] == ["b", "c", "c", "b", "b", "c"] * 2
    assert [n for _, n in order] == [1] * 6 + [2] * 6
    assert res["baseline (abc)"]["text/1"]["tok_s"] == 4  # the median of rounds 1, 4, 5
    assert res["current"]["text/2"]["tok_s"] == 109  # of 108, 109, 112


def _result(tok_s, **cpu):
    return {"tok_s": tok_s, "ttft_p50_ms": 1.0} | {f"cpu_us_{n}": v for n, v in cpu.items()}


def test_comparison_table_rows():
    base = {
        "text/1": _result(100.0, template=10, decode=500, extractor=20, gateway=70),
        "text/16": _result(400.0, template=5, decode=300, extractor=10, gateway=40),
    }
    cur = {
        "text/1": _result(120.0, template=10, decode=480, extractor=15, gateway=35),
        "text/16": _result(380.0, decode=310),  # the other services' CPU unread
    }
    lines = run.comparison_table(base, cur, "baseline (abc1234)").splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == [
        "workload",
        "C",
        "tok/s baseline (abc1234)",
        "tok/s current",
        "ratio current / baseline",
        "serving µs/token baseline (abc1234)",
        "serving µs/token current",
        "decode µs/token baseline (abc1234)",
        "decode µs/token current",
    ]
    assert lines[2] == "| text | 1 | 100.0 | 120.0 | 1.20 | 100 | 60 | 500 | 480 |"
    assert lines[3] == "| text | 16 | 400.0 | 380.0 | 0.95 | 55 | - | 300 | 310 |"


def test_a_row_one_stack_lacks_prints_dashes():
    base = {"tool/1": _result(50.0, template=1, decode=2, extractor=3, gateway=4)}
    lines = run.comparison_table(base, {}, "baseline (abc)").splitlines()
    assert lines[2] == "| tool | 1 | 50.0 | - | - | 8 | - | 2 | - |"
