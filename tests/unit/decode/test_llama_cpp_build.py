"""`make install`'s llama.cpp build remembers a compile that failed (minutes, every install)
but not a build that could not start: no compiler, or no network for the sdist."""

from __future__ import annotations

import pathlib

import pytest

from toolwire.services.decode.steps import llama_cpp_build as llama_lib


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(llama_lib, "ROOT", tmp_path)
    return tmp_path


def marker() -> pathlib.Path:
    dest = llama_lib.build_dir()
    return dest.with_name(dest.name + ".failed")


def test_no_compiler_is_tried_again_next_time(cache, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(cache))  # no cmake, no c++
    assert llama_lib.main([]) == 0
    assert "no cmake on PATH" in capsys.readouterr().out
    assert not marker().exists()


def test_no_network_for_the_sdist_is_tried_again_next_time(cache, monkeypatch, capsys):
    if not all(llama_lib.shutil.which(t) for t in ("cmake", "c++")):
        pytest.skip("needs cmake and c++ to get as far as the download")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    assert llama_lib.main([]) == 0
    out = capsys.readouterr().out
    assert "sdist could not be downloaded" in out and "until then" in out
    assert not marker().exists()
    assert not list(cache.glob(".build-*"))  # the temporary tree is gone too


def test_a_failed_compile_is_remembered_until_forced(cache, tmp_path, monkeypatch, capsys):
    if not all(llama_lib.shutil.which(t) for t in ("cmake", "c++")):
        pytest.skip("needs cmake and c++ to fail a compile")
    broken = tmp_path / "broken-source"
    broken.mkdir()
    (broken / "CMakeLists.txt").write_text('message(FATAL_ERROR "a source that cannot build")\n')
    monkeypatch.setattr(llama_lib, "_source", lambda tmp: broken)  # real cmake, failing
    assert llama_lib.main([]) == 0
    assert "build failed" in capsys.readouterr().out
    assert "cmake exited" in marker().read_text()
    assert llama_lib.main([]) == 0  # nothing attempted: it says why and how to retry
    out = capsys.readouterr().out
    assert "failed before" in out and "FORCE=--force" in out
    monkeypatch.setenv("PATH", str(cache))
    assert llama_lib.main(["--force"]) == 0  # forced: tried, and could not start
    assert "no cmake on PATH" in capsys.readouterr().out
    assert marker().exists()  # a retry that could not start learns nothing


def test_an_unwritable_cache_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    if not all(llama_lib.shutil.which(t) for t in ("cmake", "c++")):
        pytest.skip("needs cmake and c++ to get as far as the cache")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(llama_lib, "ROOT", blocker / "llama-lib")  # below a file: no mkdir
    assert llama_lib.main([]) == 0
    assert "cannot write" in capsys.readouterr().out
