"""The reason onnx gives for refusing a file reaches the user whole (up to 300 characters).

The first line of onnx's message was cut at 120 characters, mid-word: a model whose
external data points outside its folder was refused with "... but '../../../etc/passwd'
points outsi)", which hides what is wrong. Longer messages are cut at a word with "…".
"""

from __future__ import annotations

import onnx
import pytest

from verifier.errors import ModelError
from verifier.ir.onnx_validate import first_line, load_model_proto

from conftest import DEFAULT_MODEL


def test_an_external_data_path_outside_the_folder_is_named_whole(tmp_path):
    model = onnx.load(DEFAULT_MODEL)
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    escaped = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../../etc/passwd"
    onnx.save(escaped, tmp_path / "escape.onnx")
    with pytest.raises(ModelError) as info:
        load_model_proto(tmp_path / "escape.onnx")
    assert "points outside the directory" in str(info.value), str(info.value)


@pytest.mark.parametrize("text, limit, expected", [
    ("short reason", 300, "short reason"),
    ("first line\nsecond line", 300, "first line"),
    ("alpha beta gamma delta", 12, "alpha beta …"),
    ("x" * 20, 8, "x" * 8 + "…"),
    ("", 300, "parse error"),
])
def test_first_line_cuts_at_a_word(text, limit, expected):
    assert first_line(ValueError(text), limit) == expected
