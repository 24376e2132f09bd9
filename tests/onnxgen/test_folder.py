"""The folder lokal.onnxgen writes is an ONNX Runtime GenAI model: it loads, its tokenizer round-trips chat
text, greedy generation is deterministic, large weights go to model.onnx.data, and writing is atomic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lokal.gguf.synthetic import SHAPES
from lokal.onnxgen import folder as folder_mod
from lokal.onnxgen.folder import DATA_FILE, MODEL_FILE, weight_bytes, write_model_files, write_onnx_model
from lokal.onnxgen.tokenizer import EOS_ID, SPECIALS

og = pytest.importorskip("onnxruntime_genai")
TINY = SHAPES["tiny"]
CHAT = "<|im_start|>user\nHello, world!<|im_end|>\n<|im_start|>assistant\n"


def _greedy(folder: Path, n: int) -> list[int]:
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=128, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(CHAT))
    out: list[int] = []
    while not generator.is_done() and len(out) < n:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_ort_genai_loads_it_and_greedy_generation_repeats(tmp_path: Path, precision: str) -> None:
    folder = write_onnx_model(tmp_path / "m", TINY, precision)
    assert sorted(p.name for p in folder.iterdir()) == [
        "genai_config.json", MODEL_FILE, "tokenizer.json", "tokenizer_config.json"
    ]  # fmt: skip
    first, second = _greedy(folder, 12), _greedy(folder, 12)
    assert first == second
    # Stopped by <|im_end|> or ran to 12; every token is a real vocabulary entry.
    assert (len(first) == 12 or first[-1] == EOS_ID) and all(0 <= t < TINY.n_vocab for t in first)


def test_the_tokenizer_round_trips_chat_text_and_knows_the_markers(tmp_path: Path) -> None:
    folder = write_onnx_model(tmp_path / "m", TINY, "fp32")
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    ids = list(tokenizer.encode(CHAT))
    assert ids[0] == SPECIALS.index("<|im_start|>") and SPECIALS.index("<|im_end|>") in ids
    # Decoding skips special tokens, as the engine's streamed text does.
    assert tokenizer.decode(ids) == CHAT.replace("<|im_start|>", "").replace("<|im_end|>", "")
    # The chat template in tokenizer_config.json renders ChatML.
    rendered = tokenizer.apply_chat_template(
        json.dumps([{"role": "user", "content": "Hi"}]), add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    # Any id decodes to printable text: what random weights produce can be shown and cut at stop strings.
    text = tokenizer.decode(np.arange(len(SPECIALS), TINY.n_vocab, dtype=np.int32))
    assert text.isascii() and text.strip()


def test_weights_past_the_inline_limit_go_to_the_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inline, external = tmp_path / "inline", tmp_path / "external"
    inline.mkdir(), external.mkdir()
    assert write_model_files(inline, TINY, "int4") is False
    monkeypatch.setattr(folder_mod, "MAX_INLINE_BYTES", 1000)
    assert write_model_files(external, TINY, "int4") is True
    assert (external / DATA_FILE).stat().st_size > (external / MODEL_FILE).stat().st_size
    feeds = {
        "input_ids": np.array([[1, 50, 60]], np.int64),
        "attention_mask": np.ones((1, 3), np.int64),
        **{
            f"past_key_values.{i}.{kv}": np.zeros((1, TINY.n_head_kv, 0, TINY.head_size), np.float32)
            for i in range(TINY.n_layer)
            for kv in ("key", "value")
        },
    }
    a, b = (ort.InferenceSession(str(d / MODEL_FILE)).run(["logits"], feeds)[0] for d in (inline, external))
    np.testing.assert_array_equal(a, b)


def test_weight_bytes_is_the_size_written(tmp_path: Path) -> None:
    # The inline/external choice is made from this estimate before anything is drawn.
    for precision in ("fp32", "int4"):
        d = tmp_path / precision
        d.mkdir()
        write_model_files(d, SHAPES["tiny"], precision)
        size = (d / MODEL_FILE).stat().st_size
        assert weight_bytes(SHAPES["tiny"], precision) <= size < weight_bytes(SHAPES["tiny"], precision) + 20_000


def test_an_interrupted_write_leaves_nothing_and_keeps_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_onnx_model(tmp_path / "m", TINY, "fp32")
    before = (target / MODEL_FILE).read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(folder_mod, "genai_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_onnx_model(target, TINY, "int4")
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and (target / MODEL_FILE).read_bytes() == before


NO_TORCH = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Refuse())
for name in ("torch", "transformers"):
    sys.modules[name] = None  # an import of a blocked name raises ImportError
from pathlib import Path
from lokal.gguf.synthetic import SHAPES
from lokal.onnxgen.folder import write_onnx_model
import onnxruntime_genai as og
folder = write_onnx_model(Path(sys.argv[1]), SHAPES["tiny"], "int4")
model = og.Model(str(folder))
params = og.GeneratorParams(model)
params.set_search_options(max_length=32)
gen = og.Generator(model, params)
gen.append_tokens(og.Tokenizer(model).encode("hello"))
gen.generate_next_token()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") and sys.modules[m])
print("ok", loaded)
"""


def test_writing_needs_neither_torch_nor_transformers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path / "m")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok []"
    assert (tmp_path / "m" / "genai_config.json").is_file()
