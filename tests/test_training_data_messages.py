"""``--data FILE`` that numpy refuses: the reason is whole and is the project's, not numpy's.

A pickle (``cases/data/d_garbage.npz``) was refused with numpy's message cut at 120
characters mid-word ("... load it unsafely using the `allow_pickle=` keywo"), advice to
load it unsafely that the tool never follows. It now says the file holds pickled Python
objects, which are never loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verifier_plugins.training.data import load_data
from verifier_plugins.training.validation import DataError

CASES = Path(__file__).resolve().parent / "cases" / "data"


def test_a_pickle_given_as_npz_is_refused_in_our_words():
    with pytest.raises(DataError) as info:
        load_data(str(CASES / "d_garbage.npz"))
    message = str(info.value)
    assert "d_garbage.npz" in message and "pickled Python objects" in message, message
    assert "allow_pickle" not in message and "unsafely" not in message, message


def test_an_object_array_inside_an_npz_is_refused_in_our_words(tmp_path):
    path = tmp_path / "objects.npz"
    x = np.zeros((2, 1, 28, 28), np.float32)
    np.savez(path, x_train=x, y_train=np.array([0, 1]), x_test=np.array([object(), object()], dtype=object),
             y_test=np.array([0, 1]))
    with pytest.raises(DataError) as info:
        load_data(str(path))
    message = str(info.value)
    assert "x_test" in message and "pickled Python objects" in message, message
    assert "allow_pickle" not in message, message


def test_a_count_above_the_file_s_samples_says_it_uses_them_all(tmp_path, caplog):
    """``--train-count 64`` on a file of 20 training samples: all 20 are used, and one line
    says so (it was reduced silently, and only result.json showed 20)."""
    path = tmp_path / "small.npz"
    x = np.random.default_rng(0).uniform(0, 1, (20, 1, 28, 28)).astype(np.float32)
    np.savez(path, x_train=x, y_train=np.arange(20) % 10, x_test=x[:5], y_test=np.arange(5))
    with caplog.at_level("INFO", logger="verifier_plugins"):
        data = load_data(str(path), train_count=64, test_count=3)
    assert len(data.y_train) == 20 and len(data.y_test) == 3
    notes = [r.getMessage() for r in caplog.records]
    assert any("--train-count 64" in m and "holds 20 samples; using all 20" in m for m in notes), notes
    assert not any("--test-count" in m for m in notes), notes
