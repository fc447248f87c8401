"""The two shared cases not copied into ``tests/cases`` (600 kB and 400 kB of parentheses):
``spec/s_deep_nesting.vnnlib`` and ``spec/s_deep_term.vnnlib`` are ``s_good.vnnlib`` and its
output assertion once more, wrapped in 10^5 nested ``and`` / ``+``. Rebuilt here byte for
byte and run end to end through the command line: "error, or parsed; never exit 3" — they parse, and
give ``s_good``'s verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.cli import main

CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
GOOD = CASES / "spec" / "s_good.vnnlib"
DEPTH = 100_000


def verdict(capsys, spec: Path) -> str:
    try:
        code = main(["verify", str(SMALL), str(spec), "--timeout", "120"])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 0, (code, out, err)
    last = out.strip().splitlines()[-1]
    assert last.startswith("result: "), out
    return last.split()[-1]


@pytest.mark.parametrize("wrap", [
    lambda atom: "(assert " + "(and " * DEPTH + atom + ")" * DEPTH + ")",
    lambda atom: "(assert (>= " + "(+ " * DEPTH + "Y_0" + ")" * DEPTH + " 1000))",
], ids=["s_deep_nesting", "s_deep_term"])
def test_deeply_nested_output_assertion_gives_the_flat_verdict(capsys, tmp_path, wrap):
    good = GOOD.read_text()
    assert good.endswith("(assert (>= Y_0 1000))\n")  # the assertion the shared files repeat, wrapped
    deep = tmp_path / "deep.vnnlib"
    deep.write_text(good + wrap("(>= Y_0 1000)") + "\n")
    assert verdict(capsys, deep) == verdict(capsys, GOOD)
