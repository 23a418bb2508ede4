"""Generate the Python gRPC stubs from protos/ into the toolwire package.

Run by `make install` and by the package build; the output is ignored by git and never
edited by hand.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: pathlib.Path = ROOT) -> list[pathlib.Path]:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(PROTOS.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Make every generated folder a regular package so setuptools ships it.
    for proto in files:
        pkg = out_dir / proto.relative_to(PROTOS).parent
        while pkg != out_dir / "toolwire" and pkg != out_dir:
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
    return files


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    print(f"generated stubs for {len(generate(out))} protos")
