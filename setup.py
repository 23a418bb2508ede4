"""Package layout: toolwire (the library; generated stubs in toolwire.grpc_gen), services/ and
gateway/ installed as toolwire.services and toolwire.gateway. Stubs are generated at build time
(protos/generate.py)."""

import pathlib
import runpy

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent


class BuildWithStubs(build_py):
    def run(self):
        runpy.run_path(str(ROOT / "protos" / "generate.py"))["generate"]()
        # The generated packages exist only now, after `packages` below was listed from a
        # clean checkout: add them, or the wheel ships without its stubs.
        generated = find_packages(include=["toolwire.grpc_gen.*"])
        self.packages = list(self.packages) + [p for p in generated if p not in self.packages]
        super().run()


def packages(folder: str, prefix: str) -> list[str]:
    found = find_packages(where=folder)
    return [prefix] + [f"{prefix}.{p}" for p in found]


setup(
    packages=find_packages(include=["toolwire", "toolwire.*"])
    + packages("services", "toolwire.services")
    + packages("gateway", "toolwire.gateway"),
    package_dir={
        "toolwire": "toolwire",
        "toolwire.services": "services",
        "toolwire.gateway": "gateway",
    },
    cmdclass={"build_py": BuildWithStubs},
)
