"""The op × domain table in docs/domains.md is the one the registries print."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _op_table_module():
    spec = importlib.util.spec_from_file_location("op_table", DOCS / "op_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_op_table_is_current():
    module = _op_table_module()
    text = (DOCS / "domains.md").read_text(encoding="utf-8")
    committed = text.split(module.START, 1)[1].split(module.END, 1)[0].strip()
    assert committed == module.op_table(), "docs/domains.md is out of date: run python docs/op_table.py"


def test_every_op_kind_is_in_the_table_and_every_domain_a_column():
    from verifier.domains import DOMAINS
    from verifier.ops import FORWARD

    table = _op_table_module().op_table()
    for kind in FORWARD:
        assert kind == "constant" or f"| `{kind}` |" in table
    for name, cls in DOMAINS.items():
        if cls.__module__.startswith("verifier."):
            assert f"`{name}`" in table.splitlines()[0]


def test_committed_onnx_op_list_is_current():
    module = _op_table_module()
    text = (DOCS / "onnx-ops.md").read_text(encoding="utf-8")
    committed = text.split(module.ONNX_START, 1)[1].split(module.ONNX_END, 1)[0].strip()
    assert committed == module.onnx_ops_table(), "docs/onnx-ops.md is out of date: run python docs/op_table.py --onnx"


def test_every_converter_is_in_the_onnx_op_list():
    from verifier.ir.onnx_converters import CONVERTERS

    table = _op_table_module().onnx_ops_table()
    for op in CONVERTERS:
        assert f"| `{op}` |" in table
