"""Faults a fresh-eyes tester found at the option and output boundaries, fixed as classes.

A. ``norm`` other than inf (every input region is an L∞ box: an L1/L2 ball inside it gave a
   wrong ``unsat``); D. output files that are devices, FIFOs, sockets, ``/proc`` or ``''``;
E. ``--device``/``device=``, ``--seed``/``seed=``, ``--samples``/``samples=`` refused up front
   (no exit 3); G. string-valued domain options (``intermediate=bogus``) refused before any
   work, by constructing the domain once. Each test would fail before the fix.
"""

from __future__ import annotations

import math
import os
import socket
import stat
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier

from cli_helpers import assert_refused, run
from verifier.domains import available_domains
from verifier.options import MAX_SEED, check_device, check_domain_options, check_options, check_seed, option_types
from verifier.outputs import check_output_dir, check_output_file, write_atomic
from verifier.spec import parse_vnnlib
from verifier.verify import verify

CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
GOOD_SPEC = CASES / "spec" / "s_good.vnnlib"
MISSING = CASES / "models" / "no_such_model.onnx"  # options must be refused before the model is read
HYPO = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def box_spec(n_in: int, n_out: int, lo: float, hi: float, rows: str) -> str:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    decl += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    box = "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))
    return decl + box + rows


@pytest.fixture(scope="module")
def sum_model(tmp_path_factory):
    """``y = Σ x_i`` over 5 inputs: on [0, 1]^5 the maximum is 5, at the corner (1, …, 1),
    which the L2 ball inscribed in the box (radius 0.5) misses (its maximum is ≈ 3.62)."""
    folder = tmp_path_factory.mktemp("sum")
    w = onnx.numpy_helper.from_array(np.ones((1, 5), np.float32), "W")
    graph = oh.make_graph([oh.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "sum",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])], [w])
    path = folder / "sum.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), path)
    spec = folder / "sum_ge_4.9.vnnlib"
    spec.write_text(box_spec(5, 1, 0, 1, "(assert (>= Y_0 4.9))\n"))
    return path, spec


# --- A: norm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["1", "2", "1.0", "2.5", "0"])
@pytest.mark.parametrize("command", ["verify", "bounds"])
def test_norm_other_than_inf_is_refused_on_the_command_line(capsys, sum_model, command, norm):
    """``--domain-option norm=2`` answered ``unsat`` on a ``sat`` property (the ball misses the
    corner that violates it); now it is refused before any work."""
    model, spec = sum_model
    code, out, err = run(capsys, command, model, spec, "--domain", "crown", "--domain-option", f"norm={norm}")
    assert_refused(code, out, err, "norm", "inf")


def test_sum_model_is_sat_with_the_default_norm(capsys, sum_model):
    model, spec = sum_model
    code, out, err = run(capsys, "verify", model, spec, "--domain", "crown", "--domain-option", "norm=inf")
    assert code == 0 and out.strip().splitlines()[-1] == "result: sat", (out, err)


@pytest.mark.parametrize("domain", ["crown", "crown-ibp", "alpha-crown", "dual-lp"])
@pytest.mark.parametrize("norm", [1, 2, 2.0, "2"])
def test_compute_bounds_refuses_norms_other_than_inf(sum_model, domain, norm):
    model = verifier.load(sum_model[0])
    lo, hi = torch.zeros(1, 5, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64)
    with pytest.raises(verifier.VerifierInputError, match="norm"):
        verifier.compute_bounds(model, lo, hi, domain=domain, norm=norm)
    lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain, norm=math.inf)
    assert float(ub[0, 0]) >= 5 - 1e-6  # the box's corner is inside the bound


@HYPO
@given(value=st.one_of(st.floats(allow_nan=False), st.integers(-5, 5)))
def test_norm_rule_accepts_only_inf(value):
    types = option_types(available_domains()["crown"])
    if value == math.inf:
        assert check_options({"norm": value}, types, "crown")["norm"] == math.inf
    else:
        with pytest.raises(verifier.VerifierInputError, match="norm"):
            check_options({"norm": value}, types, "crown")


# --- G: string options checked before any work ---------------------------------------------------

@pytest.mark.parametrize("domain, value", [("crown", "bogus"), ("alpha-crown", "bogus"), ("dual-lp", "lp"),
                                           ("lp", "ibp"), ("lp", "bogus"), ("crown", "")])
def test_bad_intermediate_is_refused_before_the_model_is_read(capsys, domain, value):
    code, out, err = run(capsys, "verify", MISSING, GOOD_SPEC, "--domain", domain,
                         "--domain-option", f"intermediate={value}")
    assert_refused(code, out, err, "intermediate")
    assert "no_such_model" not in err


def test_bad_intermediate_is_refused_even_when_the_attack_would_answer_sat(capsys, tmp_path):
    """Before: the attack ran first and answered ``sat``; the option was checked later."""
    spec = tmp_path / "all_unsafe.vnnlib"
    spec.write_text(box_spec(5, 3, -1, 1, "(assert (>= Y_0 -100))\n"))  # every point is a counterexample
    code, out, err = run(capsys, "verify", SMALL, spec, "--domain", "alpha-crown",
                         "--domain-option", "intermediate=bogus")
    assert_refused(code, out, err, "intermediate")


@pytest.mark.parametrize("domain, value", [("crown", "ibp"), ("alpha-crown", "crown"), ("lp", "dual-lp"), ("lp", "best")])
def test_good_intermediate_is_accepted(domain, value):
    assert check_domain_options(domain, {"intermediate": value}) == {"intermediate": value}


@HYPO
@given(value=st.text(max_size=8))
def test_fuzzed_intermediate_values_are_refused_or_valid(value):
    try:
        check_domain_options("crown", {"intermediate": value})
    except verifier.VerifierInputError as exc:
        assert "intermediate" in str(exc)
    else:
        assert value in ("crown", "ibp")


@pytest.mark.parametrize("option", ["intermediate=bogus", "norm=2"])
def test_certify_checks_domain_options_before_the_model(capsys, option):
    code, out, err = run(capsys, "certify", MISSING, "--eps", "0.1", "--domain", "crown", "--domain-option", option)
    assert_refused(code, out, err, option.split("=")[0])
    assert "no_such_model" not in err


def test_api_verify_checks_string_options_before_the_attack():
    model = verifier.load(SMALL)
    spec = parse_vnnlib(box_spec(5, 3, -1, 1, "(assert (>= Y_0 -100))\n"))
    with pytest.raises(verifier.VerifierInputError, match="intermediate"):
        verify(model, spec, domain="alpha-crown", domain_options={"intermediate": "bogus"})


# --- E: device, seed, samples ----------------------------------------------------------------------

BAD_DEVICES = ["meta", "mps", "xla", "bogus", "cuda:99", "cpu:0:1", ""]
if not torch.cuda.is_available():
    BAD_DEVICES += ["cuda", "cuda:0"]


@pytest.mark.parametrize("device", BAD_DEVICES)
@pytest.mark.parametrize("command", ["verify", "bounds"])
def test_bad_device_is_refused_up_front(capsys, command, device):
    code, out, err = run(capsys, command, MISSING, GOOD_SPEC, "--device", device)
    assert_refused(code, out, err, "--device")


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_api_verify_refuses_bad_devices(device):
    model = verifier.load(SMALL)
    with pytest.raises(verifier.VerifierInputError, match="device"):
        verify(model, parse_vnnlib(GOOD_SPEC.read_text()), device=device)


def test_check_device_accepts_cpu():
    assert check_device("cpu") == "cpu"
    assert check_device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("seed", ["-1", str(2 ** 63), "99999999999999999999"])
def test_bad_seed_is_refused(capsys, seed):
    code, out, err = run(capsys, "verify", MISSING, GOOD_SPEC, "--seed", seed)
    assert_refused(code, out, err, "--seed")


@HYPO
@given(seed=st.one_of(st.integers(-2 ** 70, 2 ** 70), st.floats(), st.booleans(), st.text(max_size=3)))
def test_seed_rule(seed):
    ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    if ok:
        assert check_seed(seed) == seed
    else:
        with pytest.raises(verifier.VerifierInputError, match="seed"):
            check_seed(seed)


def test_api_verify_refuses_bad_seed_and_dtype():
    model = verifier.load(SMALL)
    spec = parse_vnnlib(GOOD_SPEC.read_text())
    with pytest.raises(verifier.VerifierInputError, match="seed"):
        verify(model, spec, seed=-1)
    with pytest.raises(verifier.VerifierInputError, match="dtype"):
        verify(model, spec, dtype="float64")
    with pytest.raises(verifier.VerifierInputError, match="dtype"):
        verify(model, spec, dtype=torch.float16)
    with pytest.raises(verifier.VerifierInputError, match="model"):
        verify(None, spec)


@pytest.mark.parametrize("samples", ["0", "-3", "100000000000", "100001"])
def test_check_samples_is_bounded(capsys, samples):
    code, out, err = run(capsys, "check", SMALL, "--samples", samples)
    assert_refused(code, out, err, "--samples")


def test_check_samples_in_range_runs(capsys):
    code, out, err = run(capsys, "check", SMALL, "--samples", "16")
    assert code == 0, err


def test_check_samples_is_bounded_by_what_the_model_needs(capsys, monkeypatch):
    import verifier.cli

    monkeypatch.setattr(verifier.cli, "MAX_CHECK_VALUES", 100)
    code, out, err = run(capsys, "check", SMALL, "--samples", "50")
    assert_refused(code, out, err, "--samples", "fit in memory")


def test_load_samples_is_bounded():
    with pytest.raises(verifier.VerifierInputError, match="samples"):
        verifier.load(SMALL, samples=10 ** 11)


# --- D: output files ---------------------------------------------------------------------------------

def _special_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    link = tmp_path / "link_to_null"
    link.symlink_to("/dev/null")
    return {"device": Path("/dev/null"), "fifo": fifo, "socket": sock_path, "symlink": link}


@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "symlink"])
def test_non_regular_output_files_are_refused(tmp_path, kind):
    path = _special_paths(tmp_path)[kind]
    with pytest.raises(verifier.VerifierInputError, match="regular file"):
        check_output_file(path, "--result-file")
    with pytest.raises(OSError):  # and the writer never replaces one either
        write_atomic(path, "unsat\n")
    assert not stat.S_ISREG(os.stat(path).st_mode)


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink"])
def test_verify_refuses_a_special_result_file_before_verifying(capsys, tmp_path, kind):
    path = _special_paths(tmp_path)[kind]
    code, out, err = run(capsys, "verify", MISSING, GOOD_SPEC, "--result-file", path)
    assert_refused(code, out, err, "--result-file")
    assert not stat.S_ISREG(os.stat(path).st_mode)  # /dev/null is still a device


@pytest.mark.parametrize("path", ["", "/proc/x", "/proc/self/verifier_result"])
def test_empty_and_virtual_result_files_are_refused(capsys, path):
    code, out, err = run(capsys, "verify", MISSING, GOOD_SPEC, "--result-file", path)
    assert_refused(code, out, err, "--result-file")


def test_vnncomp_output_fifo_is_refused(capsys, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "instances.csv").write_text(f"{SMALL},{GOOD_SPEC},10\n")
    fifo = _special_paths(tmp_path)["fifo"]
    code, out, err = run(capsys, "vnncomp", bench, "--output", fifo)
    assert_refused(code, out, err, "--output")


def test_regular_result_file_is_still_written(tmp_path):
    target = tmp_path / "r.txt"
    target.write_text("old")
    assert check_output_file(target, "--result-file") == str(target)
    write_atomic(target, "unsat\n")
    assert target.read_text() == "unsat\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".probe")]  # the probe is removed


def test_output_folder_is_created_one_level_only(tmp_path):
    """An output folder (``train --out``, ``vnncomp --results-dir``, ``--proofs``) is created
    when the folder it goes in exists, refused otherwise (the rule of output files), and
    ``create=False`` creates nothing."""
    with pytest.raises(verifier.VerifierInputError, match=r"--results-dir .*/a/b: folder .*/a does not exist"):
        check_output_dir(tmp_path / "a" / "b", "--results-dir")
    assert not (tmp_path / "a").exists()
    with pytest.raises(verifier.VerifierInputError, match="folder does not exist"):
        check_output_dir(tmp_path / "a", "--proofs", create=False)
    assert not (tmp_path / "a").exists()
    assert check_output_dir(tmp_path / "a", "--proofs") == str(tmp_path / "a")
    assert (tmp_path / "a").is_dir() and os.listdir(tmp_path / "a") == []  # the probe file is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(verifier.VerifierInputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "sub", "--out")


def test_virtual_output_folders_are_refused():
    with pytest.raises(verifier.VerifierInputError, match="cannot create a file|not writable"):
        check_output_dir("/proc", "--results-dir", create=False)


# H. an output path that names one of the command's inputs would destroy it: refused up front,
# whether named as given, through a symlink or a hard link (os.path.samefile), input untouched.

def _aliases(tmp_path: Path, source: Path) -> dict[str, Path]:
    """The file ``source`` copied into the new folder ``tmp_path``, and four names for it."""
    (tmp_path / "sub").mkdir(parents=True)
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    link, hard = tmp_path / f"link_{source.name}", tmp_path / f"hard_{source.name}"
    link.symlink_to(copy)
    os.link(copy, hard)
    return {"same": copy, "dotted": tmp_path / "sub" / ".." / source.name, "symlink": link, "hardlink": hard}


@pytest.mark.parametrize("alias", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize("which", ["model", "spec"])
def test_verify_result_file_that_is_an_input_is_refused(capsys, tmp_path, which, alias):
    names = {"model": _aliases(tmp_path / "m", SMALL), "spec": _aliases(tmp_path / "s", GOOD_SPEC)}
    path = names[which][alias]
    before = names[which]["same"].read_bytes()
    code, out, err = run(capsys, "verify", names["model"]["same"], names["spec"]["same"], "--result-file", path,
                         "--domain", "box")
    assert_refused(code, out, err, f"--result-file {path} is the input {which}; give another path")
    assert names[which]["same"].read_bytes() == before


def test_verify_result_file_beside_the_inputs_is_written(capsys, tmp_path):
    """A result file that only shares the inputs' folder or name stem is fine."""
    model, spec = tmp_path / SMALL.name, tmp_path / GOOD_SPEC.name
    model.write_bytes(SMALL.read_bytes())
    spec.write_bytes(GOOD_SPEC.read_bytes())
    result = tmp_path / (SMALL.name + ".txt")
    code, out, err = run(capsys, "verify", model, spec, "--result-file", result, "--domain", "box")
    assert code == 0, err
    assert result.read_text().split()[0] == out.strip().splitlines()[-1].split()[-1]


@pytest.mark.parametrize("flag", ["--markdown", "--html", "--plot"])
@pytest.mark.parametrize("which", ["results", "reference"])
def test_report_output_that_is_an_input_is_refused(capsys, tmp_path, flag, which):
    results = tmp_path / "results.csv"
    results.write_text("benchmark,onnx,vnnlib,prepare_time,result,run_time\nb,onnx/n.onnx,vnnlib/p.vnnlib,0.1,unsat,1.0\n")
    reference = tmp_path / "reference.csv"
    reference.write_text("onnx/n.onnx,vnnlib/p.vnnlib,unsat\n")
    named = results if which == "results" else reference
    link = tmp_path / f"link_{named.name}"
    link.symlink_to(named)
    before = named.read_bytes()
    for path in (named, link):
        code, out, err = run(capsys, "report", results, "--reference", reference, flag, path)
        what = "the input results CSV" if which == "results" else "the --reference CSV"
        assert_refused(code, out, err, f"{flag} {path} is {what}")
    assert named.read_bytes() == before


def test_verify_proof_and_result_file_must_differ(capsys, tmp_path):
    out = tmp_path / "out.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(out)
    for proof in (out, link):
        code, stdout, err = run(capsys, "verify", SMALL, GOOD_SPEC, "--result-file", out, "--proof", proof)
        assert_refused(code, stdout, err, f"--proof {proof} is the --result-file; give another path")
    assert not out.exists()
