"""The docs hold together: README.md and docs/*.md.

- every relative link resolves to a file of the repository, and its `#anchor` to a heading of
  the page it names (GitHub's slugs);
- every backticked repository path (`services/decode/server.py`, `k8s/overlays/cpu`) exists;
- every command they give names something real: `make TARGET` a Makefile target,
  `python -m MODULE` a module file of the repository (or an installed module), `toolwire
  SUBCOMMAND` a subcommand of toolwire/stack/cli.py, and a `python -m bench.X` flag one that
  bench/X.py declares.

Pure and fast: it reads files, and imports nothing of the project.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Fenced blocks whose lines are commands (checked as commands); other fences (text, python,
# json, a transcript) are neither prose nor commands.
SHELL_FENCES = ("", "sh", "bash", "shell", "console")
# Paths that a run makes and git ignores (.gitignore): named in the docs, absent from a clone.
GENERATED = ("bench/out",)
# The module prefixes that name folders of this repository, and where each lives.
REPO_MODULES = {
    "toolwire.services": "services",
    "toolwire.gateway": "gateway",
    "toolwire": "toolwire",
    "bench": "bench",
    "tests": "tests",
}

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n\s*\n).)+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
PATH = re.compile(r"^[\w.\-/*{},]+$")
MAKE = re.compile(r"(?:^|[\s;&|(])make((?:\s+[A-Za-z_][\w.-]*=\S*)*)\s+([A-Za-z][\w.-]*)")
PYTHON_M = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?python3?(?:\.\d+)?\s+-m\s+([A-Za-z_][\w.]*)(.*)")
TOOLWIRE = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?toolwire\s+([a-z][\w-]*)(?:\s+([\w|<>-]+))?")
FLAG = re.compile(r"--[a-z][\w-]*")
# A word in capitals stands for any name: `make TARGET`, `toolwire/formats/FAMILY.py`.
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")


def placeholder(path: str, sep: str = "/") -> bool:
    """Whether a path (or a dotted module name) has a placeholder for one of its names."""
    return any(PLACEHOLDER.fullmatch(part.split(".")[0]) for part in path.split(sep) if part)


@dataclass
class Page:
    path: Path
    text: str  # the page with fenced blocks blanked out (line numbers kept)
    commands: list[tuple[int, str]] = field(default_factory=list)  # (line, command text)
    spans: list[tuple[int, str]] = field(default_factory=list)  # (line, inline code)
    headings: list[str] = field(default_factory=list)


def read_page(path: Path) -> Page:
    """The page's prose, inline code spans, shell-fence lines and headings."""
    lines = path.read_text(encoding="utf-8").split("\n")
    prose: list[str] = []
    commands: list[tuple[int, str]] = []
    fence, shell = None, False
    for n, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, shell = m.group(1), m.group(2).lower() in SHELL_FENCES
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            elif shell:
                commands.append((n, line))
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    page = Page(path, text, commands)
    for m in SPAN.finditer(text):
        content = " ".join(m.group(2).split()).replace("\\|", "|")
        page.spans.append((text.count("\n", 0, m.start()) + 1, content))
    # Links and headings are read from the prose with its code spans blanked.
    page.text = SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    page.headings = [
        m.group(2) for line in text.split("\n") if (m := HEADING.match(line)) is not None
    ]
    return page


def slugs(headings: list[str]) -> set[str]:
    """GitHub's anchors for a page's headings: its text lowercased, punctuation dropped, spaces
    as hyphens; a repeated slug gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings:
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
        text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        out.add(slug)
    return out


def pages(root: Path) -> list[Page]:
    files = [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]
    return [read_page(f) for f in files if f.is_file()]


def where(page: Page, root: Path, line: int) -> str:
    return f"{page.path.relative_to(root)}:{line}"


def line_of(page: Page, offset: int) -> int:
    return page.text.count("\n", 0, offset) + 1


def link_problems(root: Path) -> list[str]:
    """Relative links that name no file of the repository, or no heading of their page."""
    all_pages = pages(root)
    anchors = {p.path.resolve(): slugs(p.headings) for p in all_pages}
    problems = []
    for page in all_pages:
        targets = [(m.start(), m.group(1)) for m in LINK.finditer(page.text)]
        targets += [(m.start(), m.group(1)) for m in REF_LINK.finditer(page.text)]
        for offset, target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
                continue  # a URL (https:, mailto:): not checked, no network
            here = where(page, root, line_of(page, offset))
            path, _, anchor = urllib.parse.unquote(target).partition("#")
            file = (page.path.parent / path).resolve() if path else page.path.resolve()
            if not file.is_relative_to(root.resolve()):
                problems.append(f"{here}: {target} leaves the repository")
            elif not file.exists():
                problems.append(f"{here}: {target}: no such file")
            elif anchor and file.suffix == ".md":
                known = anchors.get(file)
                if known is None:
                    known = slugs(read_page(file).headings)
                if anchor not in known:
                    problems.append(f"{here}: {target}: no heading with that anchor")
    return problems


def expand_braces(path: str) -> list[str]:
    """`a-{x,y}.json` as `a-x.json` and `a-y.json` (every group, every combination)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def looks_like_repo_path(span: str, root: Path) -> bool:
    """A backticked token that names a path of this repository: it starts with one of the
    repository's top-level entries (`services/`, `k8s/`, `Makefile`), and is nothing else."""
    if not PATH.match(span) or span.startswith(("/", ".", "~")):
        return False
    top = span.split("/")[0]
    if "/" not in span:
        return (root / top).is_file()
    return (root / top).exists() and not top.startswith(".")


def path_problems(root: Path) -> list[str]:
    problems = []
    for page in pages(root):
        for line, span in page.spans:
            if not looks_like_repo_path(span, root):
                continue
            for path in expand_braces(span):
                clean = path.rstrip("/")
                if clean.startswith(GENERATED):
                    continue
                found = any(root.glob(clean)) if "*" in clean else (root / clean).exists()
                if not found and not placeholder(clean):
                    problems.append(f"{where(page, root, line)}: `{path}`: no such path")
    return problems


def code_texts(page: Page) -> list[tuple[int, str]]:
    """Where commands are: the shell fences' lines and the inline code spans."""
    return page.commands + page.spans


def make_targets(root: Path) -> set[str]:
    text = (root / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for m in re.finditer(r"^([A-Za-z0-9_.\- ]+?)\s*:(?!=)", text, re.M):
        targets.update(m.group(1).split())
    return targets


def make_problems(root: Path) -> list[str]:
    targets = make_targets(root)
    problems = []
    for page in pages(root):
        for line, code in code_texts(page):
            for m in MAKE.finditer(code):
                if m.group(2) not in targets and not PLACEHOLDER.fullmatch(m.group(2)):
                    problems.append(
                        f"{where(page, root, line)}: make {m.group(2)}: no such Makefile target"
                    )
    return problems


def module_file(root: Path, module: str) -> Path | None:
    """The file `python -m module` runs, for a module of this repository (None: not one)."""
    for prefix, folder in REPO_MODULES.items():
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix) :].lstrip(".")
            return root / folder / rest.replace(".", "/") if rest else root / folder
    return None


def module_problems(root: Path) -> list[str]:
    problems = []
    for page in pages(root):
        for line, code in code_texts(page):
            for m in PYTHON_M.finditer(code):
                module = m.group(1).rstrip(".")
                if placeholder(module, "."):
                    continue
                base = module_file(root, module)
                if base is None:
                    ok = importlib.util.find_spec(module.split(".")[0]) is not None
                else:
                    ok = base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()
                if not ok:
                    problems.append(f"{where(page, root, line)}: python -m {module}: no module")
    return problems


def bench_flag_problems(root: Path) -> list[str]:
    """Each flag of a `python -m bench.X ...` command is one bench/X.py declares."""
    problems = []
    for page in pages(root):
        for line, code in code_texts(page):
            for m in PYTHON_M.finditer(code):
                module = m.group(1).rstrip(".")
                if not module.startswith("bench.") or placeholder(module, "."):
                    continue
                file = module_file(root, module).with_suffix(".py")
                if not file.is_file():
                    continue  # module_problems reports it
                source = file.read_text(encoding="utf-8")
                args = re.split(r"\s(?:;|&&|\|\||#)\s|`", m.group(2))[0]
                # `--stack-flag=--stream-interval=4`, `[--kv-type f16]`: the flag, not its value
                words = (w.strip("[]()") for w in args.split())
                for flag in (w.split("=")[0] for w in words if FLAG.fullmatch(w.split("=")[0])):
                    if f'"{flag}"' not in source and f"'{flag}'" not in source:
                        problems.append(
                            f"{where(page, root, line)}: {module} {flag}: not a flag of {file.name}"
                        )
    return problems


def cli_commands(root: Path) -> tuple[set[str], set[str]]:
    """(the `toolwire` subcommands, the services `toolwire serve` takes), from the CLI's
    source: the names given to add_parser, and its SERVICES tuple."""
    tree = ast.parse((root / "toolwire/stack/cli.py").read_text(encoding="utf-8"))
    subcommands, services = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                subcommands.add(first.value)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SERVICES" for t in node.targets
        ):
            services.update(ast.literal_eval(node.value))
    return subcommands, services


def toolwire_problems(root: Path) -> list[str]:
    subcommands, services = cli_commands(root)
    problems = []
    for page in pages(root):
        for line, code in code_texts(page):
            for m in TOOLWIRE.finditer(code):
                sub, arg = m.group(1), m.group(2)
                here = where(page, root, line)
                if sub not in subcommands:
                    problems.append(f"{here}: toolwire {sub}: no such subcommand")
                elif sub == "serve" and arg and not arg.startswith(("<", "-")):
                    for name in arg.split("|"):
                        if name not in services:
                            problems.append(f"{here}: toolwire serve {name}: no such service")
    return problems


CHECKS = {
    "links": link_problems,
    "repo paths": path_problems,
    "make targets": make_problems,
    "python -m modules": module_problems,
    "bench flags": bench_flag_problems,
    "toolwire subcommands": toolwire_problems,
}


def test_there_are_docs():
    found = [p.path.relative_to(ROOT).as_posix() for p in pages(ROOT)]
    assert "README.md" in found and "docs/index.md" in found


@pytest.mark.parametrize("check", list(CHECKS))
def test_docs(check):
    problems = CHECKS[check](ROOT)
    assert not problems, f"{len(problems)} broken {check}:\n" + "\n".join(problems)


# -- the checker itself, on a made-up repository -------------------------------------------
def _repo(tmp_path: Path, readme: str, page: str = "# Page\n\n## A heading\n") -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "server.py").write_text("")
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "page.md").write_text(page)
    return tmp_path


def test_a_good_link_anchor_and_path_pass(tmp_path):
    root = _repo(tmp_path, "[p](docs/page.md#a-heading), `services/server.py`\n")
    assert link_problems(root) == [] and path_problems(root) == []


def test_a_broken_link_fails(tmp_path):
    root = _repo(tmp_path, "# Title\n\nSee [the page](docs/missing.md).\n")
    assert link_problems(root) == ["README.md:3: docs/missing.md: no such file"]


def test_a_broken_anchor_fails(tmp_path):
    root = _repo(tmp_path, "[p](docs/page.md#no-such-heading) [q](#title)\n# Title\n")
    assert link_problems(root) == [
        "README.md:1: docs/page.md#no-such-heading: no heading with that anchor"
    ]


def test_a_missing_repo_path_fails_and_code_is_not_a_link(tmp_path):
    root = _repo(tmp_path, "`services/gone.py` and `[x](nowhere.md)`\n\n```text\n[y](z.md)\n```\n")
    assert path_problems(root) == ["README.md:1: `services/gone.py`: no such path"]
    assert link_problems(root) == []


def test_github_slugs():
    assert slugs(["Rule 2: streamed tool calls", "`--model null`: the null engine"]) == {
        "rule-2-streamed-tool-calls",
        "--model-null-the-null-engine",
    }
    assert slugs(["Same", "Same"]) == {"same", "same-1"}
