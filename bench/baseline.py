"""An older commit's tree, ready to start its own stack beside the current one (bench.run
--baseline): a hot-path change is measured before and after in one run, the two stacks taking
turns, because two runs apart on a shared 2-core machine differ by more than most changes do.

The tree is a git worktree outside the repository (inside it, tests, ruff and the package
finder would find a second copy of everything), one folder per commit, reused while it is
still a clean checkout of that commit. A checkout has no gRPC stubs (toolwire/grpc_gen/ is
gitignored): they are generated in it, by its own protos/generate.py.

It runs on this venv's python, whose editable install maps toolwire, toolwire.services and
toolwire.gateway to the current checkout. PYTHONPATH (and the cwd, for `-m`) put the
worktree's toolwire first, but the worktree keeps the other two at services/ and gateway/,
where only setup.py's package_dir puts them under toolwire: nothing in the worktree's
toolwire/ answers `toolwire.services`, so the editable finder does, with the current tree's
code. Links toolwire/services -> ../services and toolwire/gateway -> ../gateway in the
worktree give it the installed layout, and check_imports asks the child interpreter where
each package loads from before any stack starts, so a baseline that is not the baseline
fails instead of measuring the current code twice.

The llama.cpp library needs nothing here: the ggml step finds it under toolwire's cache
(TOOLWIRE_CACHE, else ~/.cache/toolwire, see services/decode/steps/llama_cpp_build.py), not
beside the package, and only `make install` builds it, so a worktree's decode opens the same
cached build. An older commit may key that cache otherwise: bench.run reads which library each
decode process mapped and says so when the two differ.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass

from toolwire.runtime.model_source import CACHE_DIR

REPO = pathlib.Path(__file__).resolve().parent.parent
ROOT = CACHE_DIR / "bench-baseline"  # <sha>/ is the worktree of that commit
# setup.py's package_dir beyond toolwire itself: the folder and the package it is installed as.
LINKED = {"services": "toolwire/services", "gateway": "toolwire/gateway"}
# What a stack imports from each of the installed packages; all must load from the tree.
CHECKED = ("toolwire", "toolwire.services", "toolwire.gateway", "toolwire.grpc_gen")


@dataclass(frozen=True)
class Tree:
    path: pathlib.Path
    sha: str
    short: str

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """base (the environment, by default) with the tree ahead of every other import path."""
        env = dict(os.environ if base is None else base)
        rest = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(self.path), *([rest] if rest else [])])
        return env


def up_command(up_args: list[str], python: str = sys.executable) -> list[str]:
    """`toolwire up` on this venv's python: the current tree's from the repo, a Tree's with
    cwd=tree.path and env=tree.env()."""
    return [python, "-m", "toolwire.stack.cli", "up", *up_args]


def _git(cwd: pathlib.Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def _checked_out(path: pathlib.Path, sha: str, common_dir: str) -> bool:
    """path is a worktree of this repository at sha with no tracked file changed."""
    if not (path / ".git").exists():
        return False
    try:
        return (
            _git(path, "rev-parse", "HEAD") == sha
            and _resolved(path, _git(path, "rev-parse", "--git-common-dir")) == common_dir
            and _git(path, "status", "--porcelain", "--untracked-files=no") == ""
        )
    except RuntimeError:
        return False


def _resolved(cwd: pathlib.Path, p: str) -> str:
    return str((cwd / p).resolve())


def checkout(ref: str, repo: pathlib.Path = REPO, root: pathlib.Path = ROOT) -> Tree:
    """A worktree of ref's commit at root/<sha>: the one there if it is a clean checkout of
    it, else made anew (a changed or half-made one is removed first)."""
    repo = pathlib.Path(_git(repo, "rev-parse", "--show-toplevel"))
    root = root.resolve()
    if root == repo or repo in root.parents:
        raise ValueError(f"{root} is inside the repository {repo}: put the worktrees outside it")
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RuntimeError:
        raise ValueError(f"{ref!r} names no commit in {repo}") from None
    short = _git(repo, "rev-parse", "--short", sha)
    path = root / sha
    common = _resolved(repo, _git(repo, "rev-parse", "--git-common-dir"))
    if not _checked_out(path, sha, common):
        if path.exists():
            try:
                _git(repo, "worktree", "remove", "--force", str(path))
            except RuntimeError:  # not (or no longer) a worktree of this repository
                shutil.rmtree(path)
        _git(repo, "worktree", "prune")  # a folder deleted by hand stays registered until then
        root.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "add", "--detach", "--quiet", str(path), sha)
    return Tree(path, sha, short)


def link_packages(tree: Tree) -> None:
    """The installed layout in the tree, so toolwire.services and toolwire.gateway are the
    tree's (see the module docstring)."""
    for folder, package in LINKED.items():
        link, target = tree.path / package, tree.path / folder
        if link.is_symlink() or not target.is_dir() or link.exists():
            continue  # linked already, or a layout without that folder (then check_imports says)
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def generate_stubs(tree: Tree, python: str = sys.executable) -> None:
    script = tree.path / "protos" / "generate.py"
    if not script.exists():
        raise RuntimeError(f"{tree.short} has no protos/generate.py to make its gRPC stubs with")
    done = subprocess.run(
        [python, str(script)], cwd=tree.path, env=tree.env(), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{tree.short}'s protos/generate.py failed: {done.stderr.strip()}")


def check_imports(tree: Tree, python: str = sys.executable) -> dict[str, str]:
    """Where each CHECKED package loads from in python started as the stack is (cwd and env);
    raises unless every one is inside the tree."""
    code = (
        "import importlib, json, sys\n"
        "found = {}\n"
        f"for name in {list(CHECKED)!r}:\n"
        "    try:\n"
        "        found[name] = importlib.import_module(name).__file__\n"
        "    except ImportError as e:\n"
        "        found[name] = 'not importable: ' + str(e)\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run(
        [python, "-c", code], cwd=tree.path, env=tree.env(), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"checking {tree.short}'s imports failed: {done.stderr.strip()}")
    found = json.loads(done.stdout)
    inside = tree.path.resolve()
    wrong = {
        name: f
        for name, f in found.items()
        if not f
        or f.startswith("not importable")
        or inside not in pathlib.Path(f).resolve().parents
    }
    if wrong:
        raise RuntimeError(
            f"the baseline tree {tree.path} would not run its own code: "
            + ", ".join(f"{n} from {f}" for n, f in wrong.items())
        )
    return found


def check_processes(tree: Tree, pids: dict[str, int]) -> None:
    """The running stack's services were started as check_imports' interpreter was: in the
    tree, with it first on PYTHONPATH (read from /proc; an older launcher might not pass
    its environment or cwd on)."""
    want = str(tree.path)
    for name, pid in pids.items():
        cwd = os.readlink(f"/proc/{pid}/cwd")
        env = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        path = next((e[11:].decode() for e in env if e.startswith(b"PYTHONPATH=")), "")
        if cwd != want or path.split(os.pathsep)[0] != want:
            raise RuntimeError(
                f"the baseline's {name} service runs in {cwd} with PYTHONPATH={path!r}, "
                f"not in {want}"
            )


def prepare(
    ref: str, python: str = sys.executable, root: pathlib.Path = ROOT
) -> tuple[Tree, dict[str, str]]:
    """ref's tree with its stubs and links, and where (check_imports) its packages load from."""
    tree = checkout(ref, REPO, root)
    link_packages(tree)
    generate_stubs(tree, python)
    return tree, check_imports(tree, python)
