"""The command-line contract: verdict lines, JSON bounds, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch

import verifier
from verifier.cli import main
from verifier.spec import read_vnnlib

from conftest import DEFAULT_MODEL, PROPERTIES

ROBUST = PROPERTIES / "mnist_0_eps0.02.vnnlib"
NOT_ROBUST = PROPERTIES / "mnist_5_eps0.3.vnnlib"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(code, out, err, *words):
    assert code == 2
    assert "result:" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


def tiny_model(path, weight=None, op="Relu", n_in=3, n_out=2):
    weight = np.ones((n_in, n_out), dtype=np.float32) if weight is None else weight
    nodes = [oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node(op, ["h"], ["y"])]
    graph = oh.make_graph(nodes, "tiny", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, n_in])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, n_out])],
                          [onnx.numpy_helper.from_array(weight, "W")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), path)
    return path


def tiny_spec(path, n_in=3, n_out=2, extra=""):
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (<= X_{i} 1))\n(assert (>= X_{i} 0))" for i in range(n_in)]
    lines += ["(assert (>= Y_0 100))", extra]
    path.write_text("\n".join(lines))
    return path


def test_verify_robust_property_prints_unsat_last(capsys, tmp_path):
    result_file = tmp_path / "out.txt"
    code, out, _ = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--domain", "box", "--result-file", result_file)
    assert code == 0
    assert out.strip().splitlines()[-1] == "result: unsat"
    assert result_file.read_text() == "unsat\n"


def test_verify_sat_writes_a_counterexample_onnxruntime_confirms(capsys, tmp_path):
    result_file = tmp_path / "out.txt"
    code, out, _ = run(capsys, "verify", DEFAULT_MODEL, NOT_ROBUST, "--result-file", result_file)
    assert code == 0 and out.strip().splitlines()[-1] == "result: sat"
    text = result_file.read_text()
    assert text.startswith("sat\n((X_0 ")
    values = dict(tok.strip("()").split() for tok in text.split("\n", 1)[1].replace(")\n", ")").split(") ("))
    values = {k.strip("( )"): float(v.strip("( )")) for k, v in values.items()}
    x = np.array([values[f"X_{i}"] for i in range(784)], dtype=np.float32)
    spec = read_vnnlib(NOT_ROBUST)
    region = spec.regions[0]
    assert np.all(x >= region.lower.numpy()) and np.all(x <= region.upper.numpy())
    import onnxruntime as ort

    sess = ort.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"image": x.reshape(1, 1, 28, 28)})[0].reshape(-1)
    assert float(region.violation(torch.as_tensor(y, dtype=torch.float64)[None])[0]) <= 0
    assert np.allclose(y, [values[f"Y_{j}"] for j in range(10)], rtol=0, atol=0)


def test_verify_unknown_and_timeout(capsys, tmp_path):
    model, spec = tiny_model(tmp_path / "m.onnx"), tiny_spec(tmp_path / "p.vnnlib")
    # y_0 = relu(x0+x1+x2) <= 3 < 100: unsafe set empty, Box proves it.
    code, out, _ = run(capsys, "verify", model, spec)
    assert out.strip().splitlines()[-1] == "result: unsat"
    wide = tiny_spec(tmp_path / "q.vnnlib", extra="").read_text().replace("(>= Y_0 100)", "(>= Y_0 2.5)")
    (tmp_path / "q.vnnlib").write_text(wide)
    code, out, _ = run(capsys, "verify", model, tmp_path / "q.vnnlib", "--no-attack", "--domain", "box")
    assert out.strip().splitlines()[-1] == "result: unknown"  # y_0 reaches 3 ≥ 2.5, but no attack ran
    code, out, _ = run(capsys, "verify", model, tmp_path / "q.vnnlib", "--no-attack")
    assert out.strip().splitlines()[-1] == "result: sat"  # branch-and-bound finds it (3 inputs)
    code, out, _ = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--timeout", "1e-9")
    assert out.strip().splitlines()[-1] == "result: timeout"


def test_bounds_json_is_one_object_with_one_list_per_box(capsys):
    code, out, _ = run(capsys, "bounds", DEFAULT_MODEL, ROBUST, "--domain", "box", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"lower", "upper"}
    assert len(data["lower"]) == 1 and len(data["lower"][0]) == 10
    lo, hi = np.array(data["lower"][0]), np.array(data["upper"][0])
    assert np.all(lo <= hi)
    region = read_vnnlib(ROBUST).regions[0]
    model = verifier.load(DEFAULT_MODEL, check=False)
    x = region.lower + (region.upper - region.lower) * torch.rand(1000, 784, dtype=torch.float64)
    y = model(x).numpy()
    assert np.all(y >= lo - 1e-9) and np.all(y <= hi + 1e-9)


@pytest.mark.parametrize("domain", ["box", "deepz", "crown", "alpha-crown", "dual-lp"])
def test_bounds_json_for_every_domain_contains_samples(capsys, domain):
    extra = ["--domain-option", "iterations=3"] if domain == "alpha-crown" else []
    code, out, _ = run(capsys, "bounds", DEFAULT_MODEL, ROBUST, "--domain", domain, "--json", *extra)
    assert code == 0
    data = json.loads(out)
    lo, hi = np.array(data["lower"][0]), np.array(data["upper"][0])
    region = read_vnnlib(ROBUST).regions[0]
    model = verifier.load(DEFAULT_MODEL, check=False)
    y = model(region.lower + (region.upper - region.lower) * torch.rand(1000, 784, dtype=torch.float64)).numpy()
    assert np.all(y >= lo - 1e-9) and np.all(y <= hi + 1e-9)


def test_check_reports_agreement(capsys):
    code, out, _ = run(capsys, "check", DEFAULT_MODEL)
    assert code == 0
    assert "agrees with onnxruntime" in out and "parameters:" in out and "conv" in out


def test_domains_lists_the_built_in_domains(capsys):
    code, out, _ = run(capsys, "domains")
    names = {line.split()[0] for line in out.strip().splitlines() if line.strip()}
    assert code == 0 and {"box", "crown", "crown-ibp", "alpha-crown", "dual-lp"} <= names
    assert {"auto", "input-split", "relu-split", "milp"} <= names
    rows = [line for line in out.splitlines() if line.strip() and not line.startswith("complete methods")]
    starts = {len(line) - len(line.split(None, 1)[1]) for line in rows}
    assert len(starts) == 1, out  # one description column ('activation-split' used to push its own out)


def test_bad_input_missing_files(capsys, tmp_path):
    assert_bad_input(*run(capsys, "verify", tmp_path / "nope.onnx", ROBUST), "model file not found")
    assert_bad_input(*run(capsys, "verify", DEFAULT_MODEL, tmp_path / "nope.vnnlib"), "spec file not found")
    assert_bad_input(*run(capsys, "check", tmp_path / "nope.onnx"), "not found")


def test_bad_input_corrupt_onnx(capsys, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(DEFAULT_MODEL.read_bytes()[:5000])
    assert_bad_input(*run(capsys, "verify", corrupt, ROBUST), "corrupt.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    assert_bad_input(*run(capsys, "check", garbage), "garbage.onnx")


def test_bad_input_unsupported_op(capsys, tmp_path):
    model = tiny_model(tmp_path / "m.onnx", op="Hardmax")
    assert_bad_input(*run(capsys, "verify", model, tiny_spec(tmp_path / "p.vnnlib")), "Hardmax", "unsupported")
    assert_bad_input(*run(capsys, "check", model), "Hardmax")


def test_bad_input_vnnlib_syntax_error(capsys, tmp_path):
    spec = tmp_path / "bad.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n")
    assert_bad_input(*run(capsys, "verify", DEFAULT_MODEL, spec), "bad.vnnlib:3")


def test_bad_input_variable_count_mismatch(capsys, tmp_path):
    model = tiny_model(tmp_path / "m.onnx")
    assert_bad_input(*run(capsys, "verify", model, tiny_spec(tmp_path / "p.vnnlib", n_in=4)), "4 input variables", "3 inputs")
    assert_bad_input(*run(capsys, "bounds", model, tiny_spec(tmp_path / "q.vnnlib", n_out=3)), "3 output variables")


def test_bad_input_nan_weights(capsys, tmp_path):
    weight = np.ones((3, 2), dtype=np.float32)
    weight[1, 1] = np.nan
    model = tiny_model(tmp_path / "m.onnx", weight=weight)
    assert_bad_input(*run(capsys, "verify", model, tiny_spec(tmp_path / "p.vnnlib")), "NaN", "'W'")


def test_bad_input_cuda_unavailable(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_bad_input(*run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--device", "cuda"), "CUDA")


def test_console_script_entry_point(tmp_path):
    """The installed `verifier` command, as users run it: exit code 2 and one line on bad input."""
    done = subprocess.run([sys.executable, "-m", "verifier.cli", "verify", str(tmp_path / "x.onnx"), str(ROBUST)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stdout == ""


@pytest.mark.parametrize("method,option", [("relu-split", "foo=1"), ("milp", "batch=4"),
                                           ("input-split", "split_rule=bogus")])
def test_bad_options_of_complete_methods(capsys, method, option):
    code, out, err = run(capsys, "verify", DEFAULT_MODEL, str(PROPERTIES / "mnist_0_eps0.02.vnnlib"),
                         "--domain", method, "--domain-option", option, "--no-attack")
    assert code == 2 and err.startswith("error:") and "result:" not in out


def test_closed_output_pipe_is_not_an_internal_error():
    """``verifier ops | head -c 0``: the reader has gone before the first write, so every
    write raises BrokenPipeError; the CLI stops quietly (141), no ``internal error``."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "verifier.cli", "ops"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader exits before the command prints anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize("argv,option", [
    (["verify", DEFAULT_MODEL, ROBUST, "--timeout", "5", "--timeout=600"], "--timeout"),
    (["verify", DEFAULT_MODEL, ROBUST, "--domain", "box", "--domain", "crown"], "--domain"),
    (["report", "r.csv", "--plot", "a.png", "--plot", "b.png"], "--plot"),
    (["certify", DEFAULT_MODEL, "--eps", "0.1", "--eps", "0.2"], "--eps"),
])
def test_a_single_valued_option_given_twice_is_refused(capsys, tmp_path, argv, option):
    """argparse keeps the last of two values silently (``--timeout 5 --timeout 600`` would
    run for ten minutes); the command line refuses it, naming the option, before any work."""
    from cli_helpers import assert_refused, run as run_exiting

    code, out, err = run_exiting(capsys, *argv)
    assert_refused(code, out, err, option, "given twice")
    assert not any(tmp_path.iterdir())


def test_repeatable_options_may_repeat(capsys):
    code, out, err = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--domain", "box", "--domain-option",
                         "intermediate=x", "--domain-option", "intermediate=y")
    assert code == 2 and "given twice" not in err  # refused for the value, not for the repetition


def test_version_prints_the_version_and_exits_0(capsys):
    from cli_helpers import run as run_exiting

    code, out, err = run_exiting(capsys, "--version")
    assert code == 0 and out == f"verifier {verifier.__version__}\n" and err == ""


def test_an_unknown_option_is_named_with_its_command(capsys):
    """argparse reported extras from the top parser ("verifier: … see verifier --help")."""
    from cli_helpers import assert_refused, run as run_exiting

    code, out, err = run_exiting(capsys, "certify", DEFAULT_MODEL, "--eps", "0.1", "--device", "cuda")
    assert_refused(code, out, err, "verifier certify: unrecognized arguments: --device cuda",
                   "see verifier certify --help")


def test_spec_with_more_outputs_than_the_model_names_the_line(capsys, tmp_path):
    """The spec declares Y_0..Y_10 against a 10-output model: the error names the line that
    declares Y_10, the first variable the model lacks."""
    lines = [f"(declare-const X_{i} Real)" for i in range(784)] + [f"(declare-const Y_{j} Real)" for j in range(11)]
    lines += [f"(assert (>= X_{i} 0))" for i in range(784)] + [f"(assert (<= X_{i} 1))" for i in range(784)]
    lines.append("(assert (>= Y_10 Y_0))")
    spec = tmp_path / "eleven.vnnlib"
    spec.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "verify", DEFAULT_MODEL, spec)
    assert code == 2 and out == ""
    assert err.strip() == (f"error: {spec}:795: declares 11 output variables (Y_0 to Y_10) but the model has "
                           f"10 outputs (Y_0 to Y_9)")


def test_method_options_are_named_by_the_option_given(capsys):
    """A bad --domain-option names --method when the method was given by --method."""
    code, _, err = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--method", "input-split", "--domain-option", "nope=1")
    assert code == 2 and err.startswith("error: --method input-split has no option nope")
    code, _, err = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--domain", "input-split", "--domain-option", "nope=1")
    assert code == 2 and err.startswith("error: --domain input-split has no option nope")
