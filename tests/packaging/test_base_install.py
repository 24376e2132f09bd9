"""The base install needs no compiler and serves a streamed answer offline (issue 18).

A fresh virtualenv gets lokal's wheel with no extras, wheels only, with every compiler a build would find
replaced by a failing shim; `lokal serve` then starts offline with an empty home and streams the synthetic
demo on the engine the base install has (ONNX Runtime GenAI). Slow: it downloads or copies ~400 MB of
wheels into the venv (minutes with a cold pip cache).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fresh_install import Timings, first_streamed_token, install

pytestmark = pytest.mark.slow


def test_wheels_only_install_serves_the_synthetic_demo_and_streams(tmp_path: Path) -> None:
    timings = Timings()
    venv = install(tmp_path, timings)
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not (site / "llama_cpp").exists(), "the base install must not pull llama-cpp-python"
    assert (site / "onnxruntime_genai").is_dir()

    got = first_streamed_token(venv, tmp_path / "home", timings)

    model = got["model"]
    assert isinstance(model, dict)
    assert model["id"] == "lokal-demo-synthetic"
    assert model["lokal"]["synthetic"] is True and model["lokal"]["engine"] == "onnx"
    assert got["chunks"] and got["text"], "no streamed content"
    assert (tmp_path / "home" / "models" / "synthetic" / "lokal-demo-synthetic").is_dir()
    print(
        f"venv {timings.venv_s:.1f} s, wheel {timings.wheel_s:.1f} s, install {timings.install_s:.1f} s, "
        f"serve to first token {timings.serve_to_first_token_s:.1f} s, venv {timings.venv_bytes / 2**20:.0f} MiB"
    )
