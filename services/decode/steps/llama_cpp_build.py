"""Which llama.cpp library the ggml step opens, and building one for this machine.

Why: xllamacpp's wheel ships one library for every x86-64 machine: built for AVX2/FMA, and
with OpenMP. Both cost here. OpenMP: ggml ends every op of a step with `#pragma omp barrier`,
and the decode service runs with OMP_WAIT_POLICY=passive (spinning OpenMP threads between
steps cost many times the step on a busy machine, see steps/ggml.py), so each of a step's hundreds of
barriers sleeps and wakes a thread: one decode step of the embedded model took longer on 2
threads than on 1. Without OpenMP ggml runs a step on its own threads (made for the step,
spinning only at its barriers, gone after it). AVX-512: wider kernels; prefill gains most.
So `make install` builds llama.cpp's shared libraries (libllama and the ggml ones, CPU only:
no server, tools, examples, tests or curl) for the CPU it runs on, without OpenMP, once,
into a cache outside the repo keyed by version, CPU features and recipe; the step opens that
library when it is there and its ABI check passes, else the wheel's.

The source is the sdist of the installed xllamacpp (`pip download --no-binary`): it vendors
the llama.cpp tree its wheel is built from (b11549), so the built library is the wheel's code
under other build options, read through the same llama-cpp-py-sync b11548 declarations and
checked the same way at load (steps/ggml.py, `_check_abi`). llama-cpp-py-sync ships no sdist. CPU
features come from /proc/cpuinfo with GGML_NATIVE off (a native build has crashed on these
virtual machines).

What the build costs and gains: docs/performance.md (The decode step) and docs/engines.md
(The ggml step).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass

from toolwire.runtime.model_source import CACHE_DIR

ENV = "TOOLWIRE_LLAMA_LIB"  # "wheel", or the path of a libllama.so to open (nothing else)
ROOT = CACHE_DIR / "llama-lib"
LIBRARY = "libllama.so"
# In the cache key: a build made otherwise (the first ones here linked OpenMP) is not reused.
RECIPE = "noomp"

# /proc/cpuinfo flag -> ggml's CMake option. AVX-512 needs all five of ggml's -mavx512* base.
FEATURES = [
    ("sse4_2", "GGML_SSE42"),
    ("f16c", "GGML_F16C"),
    ("fma", "GGML_FMA"),
    ("bmi2", "GGML_BMI2"),
    ("avx", "GGML_AVX"),
    ("avx2", "GGML_AVX2"),
    ("avx_vnni", "GGML_AVX_VNNI"),
]
AVX512_BASE = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
AVX512_EXTRA = [
    ("avx512vbmi", "GGML_AVX512_VBMI"),
    ("avx512_vnni", "GGML_AVX512_VNNI"),
    ("avx512_bf16", "GGML_AVX512_BF16"),
]


@dataclass(frozen=True)
class Library:
    path: pathlib.Path
    label: str  # for the log line: what this library is and what it is built for
    explicit: bool = False  # named by TOOLWIRE_LLAMA_LIB: no fallback if it fails


def cpu_options() -> dict[str, bool]:
    """ggml's instruction-set options for this CPU."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    opts = {opt: flag in flags for flag, opt in FEATURES}
    avx512 = AVX512_BASE <= flags
    opts["GGML_AVX512"] = avx512
    opts.update({opt: avx512 and flag in flags for flag, opt in AVX512_EXTRA})
    return opts


def _tag(opts: dict[str, bool]) -> str:
    """'avx512-vbmi-vnni-bf16', 'avx2' or 'base': the widest instruction sets built for."""
    if not opts.get("GGML_AVX512"):
        return "avx2" if opts.get("GGML_AVX2") else "base"
    names = {"GGML_AVX512_VBMI": "vbmi", "GGML_AVX512_VNNI": "vnni", "GGML_AVX512_BF16": "bf16"}
    extra = [n for o, n in names.items() if opts.get(o)]
    return "-".join(["avx512", *extra] + (["avxvnni"] if opts.get("GGML_AVX_VNNI") else []))


def xllamacpp_version() -> str:
    return importlib.metadata.version("xllamacpp")


def build_dir(opts: dict[str, bool] | None = None) -> pathlib.Path:
    opts = cpu_options() if opts is None else opts
    return ROOT / f"xllamacpp-{xllamacpp_version()}-{_tag(opts)}-{RECIPE}"


def wheel_library() -> Library:
    spec = importlib.util.find_spec("xllamacpp")  # located, not imported (it starts a server)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("xllamacpp is not installed")
    folder = next(iter(spec.submodule_search_locations))
    return Library(pathlib.Path(folder, "xllamacpp.abi3.so"), "xllamacpp wheel (avx2)")


def candidates() -> list[Library]:
    """The libraries to try, best first: TOOLWIRE_LLAMA_LIB's alone, else the one built for
    this CPU (when built) and the wheel's."""
    named = os.environ.get(ENV, "")
    if named == "wheel":
        return [wheel_library()]
    if named:
        return [Library(pathlib.Path(named), f"{named} ({ENV})", explicit=True)]
    found = []
    try:
        opts = cpu_options()
        built = build_dir(opts) / LIBRARY
        if built.exists():
            what = f"llama.cpp b{xllamacpp_version().rsplit('.', 1)[-1]} built for this CPU"
            found.append(Library(built, f"{what} ({_tag(opts)})"))
    except importlib.metadata.PackageNotFoundError:
        pass
    return found + [wheel_library()]


class NotNow(RuntimeError):
    """A build that could not start (no compiler, the sdist not downloadable, the cache not
    writable): worth trying again at the next `make install`, unlike a compile that failed."""


def build(jobs: int | None = None) -> pathlib.Path:
    """Build the libraries into build_dir() (minutes); return libllama.so's path."""
    opts = cpu_options()
    dest = build_dir(opts)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise NotNow(f"no {tool} on PATH")
    try:
        ROOT.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.TemporaryDirectory(dir=ROOT, prefix=".build-")
    except OSError as e:  # a read-only or full cache
        raise NotNow(f"cannot write {ROOT}: {e}") from e
    with workdir as tmp_name:
        tmp = pathlib.Path(tmp_name)
        src = _source(tmp)
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        on = lambda ok: "ON" if ok else "OFF"  # noqa: E731
        configure = [
            "cmake", "-S", str(src), "-B", str(tmp / "build"), *gen,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_SHARED_LIBS=ON",
            "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",  # libllama finds the ggml libraries beside it
            "-DGGML_NATIVE=OFF",
            "-DGGML_CCACHE=OFF",
            # ggml's own threads, not OpenMP's: see OPENMP in the module docstring.
            "-DGGML_OPENMP=OFF",
            *[f"-D{o}={on(v)}" for o, v in opts.items()],
            *[f"-DLLAMA_BUILD_{p}=OFF" for p in
              ("COMMON", "TESTS", "TOOLS", "EXAMPLES", "SERVER", "APP")],
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
        ]  # fmt: skip
        _run(configure)
        _run(["cmake", "--build", str(tmp / "build"), "--target", "llama",
              f"-j{jobs or os.cpu_count() or 2}"])  # fmt: skip
        staged = tmp / "lib"
        staged.mkdir()
        for f in (tmp / "build" / "bin").glob("lib*.so*"):
            shutil.copy2(f, staged / f.name, follow_symlinks=False)
        options = [a for a in configure if a.startswith("-D")]
        (staged / "cmake-options.txt").write_text("\n".join(options) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staged.rename(dest)  # whole or absent: a build stopped midway leaves nothing here
    return dest / LIBRARY


def _source(tmp: pathlib.Path) -> pathlib.Path:
    """The llama.cpp tree vendored in the installed xllamacpp's sdist."""
    try:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
              "xllamacpp", "-d", str(tmp), f"xllamacpp=={xllamacpp_version()}"])  # fmt: skip
    except RuntimeError as e:  # offline, or the index down: not this machine's fault
        raise NotNow(f"the xllamacpp sdist could not be downloaded: {e}") from e
    archive = next(tmp.glob("xllamacpp-*.tar.gz"))
    with tarfile.open(archive) as tar:
        wanted = [m for m in tar.getmembers() if "/thirdparty/llama.cpp/" in m.name + "/"]
        tar.extractall(tmp / "sdist", members=wanted, filter="data")
    archive.unlink()
    return next((tmp / "sdist").iterdir()) / "thirdparty" / "llama.cpp"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{pathlib.Path(cmd[0]).name} exited {done.returncode}: {last}")


def main(argv: list[str]) -> int:
    """`make install`'s step: build once; a failure is one line and the wheel, never an error.
    A compile that failed is remembered (the .failed file beside the build folder) and not
    retried, minutes each time, until --force; a build that could not start (no compiler,
    no network) is tried again at the next `make install`."""
    failed, force = None, "--force" in argv
    try:
        opts = cpu_options()
        dest = build_dir(opts)
        failed = dest.with_name(dest.name + ".failed")
        if not force and (dest / LIBRARY).exists():
            return 0
        if not force and failed.exists():
            print(
                f"llama.cpp's build failed before ({failed}); the ggml step uses xllamacpp's "
                "wheel (`make llama-lib FORCE=--force` tries again)"
            )
            return 0
        print(f"building llama.cpp for this CPU ({_tag(opts)}) into {dest} (once; minutes)...")
        t0 = time.monotonic()
        path = build()
    except NotNow as e:
        print(f"llama.cpp not built ({e}); the ggml step uses xllamacpp's wheel until then")
        return 0
    except Exception as e:
        if failed is not None:
            try:
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(f"{e}\n")
            except OSError:
                pass  # not remembered: tried again next time
        print(f"llama.cpp build failed ({e}); the ggml step uses xllamacpp's wheel")
        return 0
    failed.unlink(missing_ok=True)
    print(f"built {path} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
