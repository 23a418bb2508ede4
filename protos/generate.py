"""Generate the Python gRPC stubs from protos/ into toolwire/grpc_gen/.

Run by `make install` and by the package build; the output is ignored by git and never
edited by hand. The proto packages stay `toolwire.<service>.v1` (what travels on the wire and
what grpcurl and reflection name); only the Python modules live one folder down, as
`toolwire.grpc_gen.<service>.v1`, apart from the hand-written `toolwire.services.<service>`.
protoc writes a stub's imports of the other stubs after the proto package, so they are moved
down with it here, the one step of the generation that is not protoc's.
"""

import pathlib
import re
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "toolwire.grpc_gen"  # where the generated modules go, below the output root
_STUB_IMPORT = re.compile(r"^(\s*)(from|import) toolwire\.", re.M)


def generate(out_dir: pathlib.Path = ROOT) -> list[pathlib.Path]:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(PROTOS.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    target = out_dir.joinpath(*PACKAGE.split("."))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(f) for f in files],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = pathlib.Path(tmp) / "toolwire"
        for path in [*generated.rglob("*.py"), *generated.rglob("*.pyi")]:
            path.write_text(_STUB_IMPORT.sub(rf"\1\2 {PACKAGE}.", path.read_text()))
        for folder in sorted(p for p in generated.iterdir() if p.is_dir()):
            shutil.rmtree(target / folder.name, ignore_errors=True)
            shutil.copytree(folder, target / folder.name)
    # Make every generated folder a regular package so setuptools ships it.
    for proto in files:
        pkg = target / proto.relative_to(PROTOS / "toolwire").parent
        while pkg != target:
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
    return files


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    print(f"generated stubs for {len(generate(out))} protos")
