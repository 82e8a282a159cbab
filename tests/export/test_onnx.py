"""ONNX export: checker, ONNX Runtime against the reference executor, the KV cache, both flavours."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from tiny_models import SMALL, run_cli
from tolerances import ORT_VS_REFERENCE

from resq_export.algo.quant import pack_int4
from resq_export.artifact import load_artifact
from resq_export.errors import ArtifactError, ConfigError
from resq_export.export.functions import LinearSignature, linear_function
from resq_export.export.spec import op_version, prepared_inputs
from resq_export.export.writer import ORT_FILE, TRT_FILE, check_onnx_folder, export_onnx
from resq_export.validate.ort_runner import OrtDecoder

ort = pytest.importorskip("onnxruntime")
NAMES = ["resq", "resq_lqer", "quarot", "lqer", "fp", "w4a16", "w8a8"]


@pytest.fixture(scope="module")
def exported(artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {name: (export_onnx(artifacts[name], root / name), root / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_full_checker_and_flavours(exported, name):
    meta, folder = exported[name]
    ort_model = onnx.load(str(folder / ORT_FILE))
    onnx.checker.check_model(ort_model, full_check=True)
    trt = onnx.load(str(folder / TRT_FILE))
    assert len(trt.functions) == 0
    custom = [n for n in trt.graph.node if n.domain == "resq"]
    assert [n.name for n in custom] == [n.name for n in ort_model.graph.node if n.domain == "resq"]
    initializers = {t.name: t for t in trt.graph.initializer}
    for node in custom:
        attrs = {a.name: a for a in node.attribute}
        assert node.op_type.startswith("ResQ")
        assert attrs["plugin_namespace"].s == b"resq"
        assert attrs["plugin_version"].s == str(op_version(node.op_type)).encode()
        # the plugins tell inputs apart by attributes and count: no "" (null) inputs, always a bias
        assert "" not in node.input
        assert node.op_type != "ResQMixedLinear"  # replaced by the prepared form
        if node.op_type == "ResQMixedLinearPrepared":
            low, high, rank = (attrs[a].i > 0 for a in ("low_groups", "high_groups", "lqer_rank"))
            assert len(node.input) == 4 + low + high + 5 * rank
            given = prepared_inputs(node)
            wscale, sums, bias = (initializers[given[i]] for i in ("wscale", "weight_sums", "bias"))
            n, groups = wscale.dims
            assert bias.data_type == onnx.TensorProto.FLOAT and list(bias.dims) == [n]
            assert sums.data_type == onnx.TensorProto.INT32 and list(sums.dims) == [n, groups]
            # every padded group a whole number of 64-channel k-tiles (4-bit: 32 bytes)
            assert (attrs["k_low"].i > 0) == low == ("weight_low" in given)
            assert not low or initializers[given["weight_low"]].dims[1] % 32 == 0
            assert not high or initializers[given["weight_high"]].dims[1] % 64 == 0
    assert not {t.name for t in trt.graph.initializer} - {i for n in trt.graph.node for i in n.input}
    # TensorRT has no uint8 plugin or network I/O: the KV codes and zero points travel as int8
    io_types = {v.name: v.type.tensor_type.elem_type for v in (*trt.graph.input, *trt.graph.output)}
    assert onnx.TensorProto.UINT8 not in io_types.values()
    ort_types = {v.name: v.type.tensor_type.elem_type for v in (*ort_model.graph.input, *ort_model.graph.output)}
    kv_int8 = {k for k, v in io_types.items() if v == onnx.TensorProto.INT8}
    assert kv_int8 == {k for k, v in ort_types.items() if v == onnx.TensorProto.UINT8}
    assert bool(kv_int8) == ("ResQKVCacheAttention" in meta["ops"])
    expected = {"fp": set(), "lqer": {"ResQMixedLinear"}, "w4a16": {"ResQMixedLinear", "ResQHadamard"},
                "w8a8": {"ResQMixedLinear", "ResQKVCacheAttention"}}
    assert set(meta["ops"]) == expected.get(name, {"ResQMixedLinear", "ResQHadamard", "ResQKVCacheAttention"})
    assert set(meta["tensorrt_ops"]) == {op.replace("ResQMixedLinear", "ResQMixedLinearPrepared") for op in meta["ops"]}
    assert any("/model/layers.1/attn/o_proj/" in n.name for n in ort_model.graph.node)


@pytest.mark.parametrize("name", NAMES)
def test_ort_equals_reference_executor(exported, artifacts, name):
    """Logits within 1e-4 relative at every position. The float islands (float64 before every
    quantiser, in both) make each quantiser see the same bits, so no code flips."""
    reference, _, _ = load_artifact(artifacts[name])
    session = OrtDecoder(exported[name][1])
    ids = torch.randint(0, 400, (3, 40), generator=torch.Generator().manual_seed(7))
    got = session.forward(ids.numpy())[0]
    want = reference(ids).numpy()
    rel = np.abs(got - want).max(-1) / np.abs(want).max()
    assert rel.max() <= ORT_VS_REFERENCE, rel.max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_external_data_for_both_flavours(exported, artifacts, tmp_path):
    """What a model over protobuf's 2 GiB limit gets (forced here with a zero threshold): each flavour's
    weights in its own .data file, the same graph and tensors, the same logits in ONNX Runtime."""
    from onnx import numpy_helper

    folder = tmp_path / "ext"
    meta = export_onnx(artifacts["resq_lqer"], folder, external_over=0)
    assert meta["external_data"] and meta["tensorrt_external_data"]
    assert (folder / "model.onnx.data").is_file() and (folder / "model.trt.onnx.data").is_file()
    assert (folder / ORT_FILE).stat().st_size < 4 * 1024 * 1024  # the graph only
    check_onnx_folder(folder)
    for name in (ORT_FILE, TRT_FILE):
        got, want = onnx.load(str(folder / name)), onnx.load(str(exported["resq_lqer"][1] / name))
        assert [n.op_type for n in got.graph.node] == [n.op_type for n in want.graph.node]
        want_t = {t.name: numpy_helper.to_array(t) for t in want.graph.initializer}
        got_t = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}
        assert got_t.keys() == want_t.keys()
        for k, v in want_t.items():
            np.testing.assert_array_equal(got_t[k], v, err_msg=k)
    ids = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(3)).numpy()
    got = OrtDecoder(folder).forward(ids)[0]
    want = OrtDecoder(exported["resq_lqer"][1]).forward(ids)[0]
    np.testing.assert_array_equal(got, want)
    # a folder copied without its weights, or with a cut-off weights file, is refused by name
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="model.onnx.data has .* bytes where export.json records"):
        check_onnx_folder(folder)
    with pytest.raises(ArtifactError, match="model.onnx.data is .* bytes, the graph reads up to"):
        check_onnx_folder(folder, verify="none")  # the graph's own check, for folders without a file list
    data.unlink()
    with pytest.raises(ArtifactError, match="model.onnx.data is missing; copy the whole ONNX folder"):
        check_onnx_folder(folder)


def test_tied_head_stores_the_embedding_once(exported, artifacts):
    """Tiny Llama and Qwen2 tie the head: the artifact and the ONNX hold one embedding and a
    [hidden, hidden] head factor, no second vocabulary-sized matrix."""
    for name in ("resq", "fp"):
        reference, _, _ = load_artifact(artifacts[name])
        assert reference.lm_head.factor.shape == (64, 64)
        names = {t.name: tuple(t.dims) for t in onnx.load(str(exported[name][1] / ORT_FILE)).graph.initializer}
        assert "lm_head.weight" not in names and names["lm_head.factor_t"] == (64, 64)
        assert sum(1 for dims in names.values() if 400 in dims) == 1


@pytest.mark.parametrize("name", ["resq", "resq_lqer", "lqer", "fp"])
def test_decode_through_cache_equals_recomputation(exported, artifacts, name):
    """Greedy decoding through the whole graph's KV cache, then one forward of the whole sequence: the
    same logits at every step; and the same as the reference executor's cached decode."""
    session = OrtDecoder(exported[name][1])
    prompt = np.array([5, 17, 42, 99, 3, 250, 31, 8])
    logits, cache = session.forward(prompt[None], session.new_cache(1, 24))
    seq, steps = list(prompt), []
    for _ in range(10):
        steps.append(logits[0, -1])
        seq.append(int(logits[0, -1].argmax()))
        logits, cache = session.forward(np.array([[seq[-1]]]), cache)
    full = session.forward(np.array([seq]))[0][0, len(prompt) - 1:-1]
    np.testing.assert_allclose(np.stack(steps), full, rtol=0, atol=ORT_VS_REFERENCE * np.abs(full).max())
    assert [int(t) for t in full.argmax(-1)] == seq[len(prompt):]
    # the cached decode also equals the reference executor's cached decode
    reference, _, _ = load_artifact(artifacts[name])
    ref_cache = reference.new_cache()
    ref_logits = reference(torch.from_numpy(prompt)[None], ref_cache)
    logits, cache = session.forward(prompt[None], session.new_cache(1, 16))
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=0, atol=ORT_VS_REFERENCE * np.abs(logits).max())
    for token in (11, 12, 13):
        ref_step = reference(torch.tensor([[token]]), ref_cache)
        logits, cache = session.forward(np.array([[token]]), cache)
        np.testing.assert_allclose(logits, ref_step.numpy(), rtol=0, atol=ORT_VS_REFERENCE * np.abs(logits).max())
    assert cache.lengths.tolist() == [11] and cache.capacity == 16
    if "past.0.key_codes" in cache.tensors:
        codes = cache.tensors["past.0.key_codes"]
        assert codes.dtype == np.uint8 and codes.shape[2] == 16
        for j, part in enumerate(("codes", "scales", "zeros")):  # the stored bytes themselves agree
            stored = cache.tensors[f"past.0.key_{part}"]
            assert np.array_equal(stored[:, :, :11], ref_cache.keys[0][j].numpy()), part
            assert not stored[:, :, 11:].any(), f"{part}: rows past the length were written"


@pytest.mark.parametrize("name", ["resq", "fp"])
def test_sequences_of_different_lengths_in_one_batch(exported, name):
    """past_length is per sequence: a batch of two sequences at different lengths gives each the
    logits and the cache rows it gets alone (a ragged batch, as continuous batching makes)."""
    session = OrtDecoder(exported[name][1])
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, 400, (1, n)) for n in (9, 4)]
    alone = [session.forward(p, session.new_cache(1, 12)) for p in prompts]
    batch = session.new_cache(2, 12)
    for name_, t in batch.tensors.items():
        for b, (_, c) in enumerate(alone):
            t[b] = c.tensors[name_][0]
    batch.lengths[:] = [9, 4]
    token = np.array([[7], [19]])
    logits, after = session.forward(token, batch)
    assert after.lengths.tolist() == [10, 5]
    for b, (_, c) in enumerate(alone):
        want, want_cache = session.forward(token[b:b + 1], c)
        np.testing.assert_allclose(logits[b], want[0], rtol=0, atol=ORT_VS_REFERENCE * np.abs(want).max())
        for name_ in after.tensors:
            np.testing.assert_array_equal(after.tensors[name_][b], want_cache.tensors[name_][0], err_msg=name_)


def test_cache_capacity_is_checked(exported):
    session = OrtDecoder(exported["resq"][1])
    _, cache = session.forward(np.array([[1, 2, 3]]), session.new_cache(1, 4))
    session.forward(np.array([[4]]), cache)
    with pytest.raises(ConfigError, match="exceed the cache's capacity of 4"):
        session.forward(np.array([[4, 5]]), cache)


def _linear_model(lin, sig):
    from onnx import TensorProto, helper, numpy_helper

    low = sig.k_low
    inits = {"qweight_low": pack_int4(lin.qweight[:, :low]), "wscale": lin.wscale, "bias": lin.bias}
    if sig.high_groups:
        inits["qweight_high"] = lin.qweight[:, low:].to(torch.int8)
    order = ["X", "qweight_low", "qweight_high", "wscale", "bias"]
    node = helper.make_node("ResQMixedLinear", [n if n == "X" or n in inits else "" for n in order], ["Y"],
                            domain="resq")
    node.overload = sig.overload
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["t", sig.k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["t", sig.n])],
                              [numpy_helper.from_array(v.contiguous().numpy(), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("resq", 1)],
                             functions=[linear_function(sig)], ir_version=10)


@pytest.mark.parametrize("a_bits, low_width, high", [(4, 56, (8, 8)), (8, 56, (8, 8)), (4, 27, (10,))])
def test_mixed_linear_function_is_integer_exact(a_bits, low_width, high):
    """Same float input -> the ONNX body equals the reference bit for bit: integer GEMMs exact, the
    epilogue a float64 island (the group-sum order of ORT's ReduceSum cannot show). Odd 4-bit group
    widths put a group boundary inside a packed byte."""
    from resq_export.layout import LinearLayout
    from resq_export.reference import QuantLinear

    g = torch.Generator().manual_seed(0)
    layout = LinearLayout((low_width, low_width, *high), (4, 4) + (8,) * len(high), (a_bits, a_bits) + (8,) * len(high))
    k_low, k = 2 * low_width, 2 * low_width + sum(high)
    q = torch.cat([torch.randint(-8, 8, (24, k_low), generator=g), torch.randint(-128, 128, (24, k - k_low), generator=g)], 1)
    lin = QuantLinear.from_codes(layout, q.int(), torch.rand(24, 2 + len(high), generator=g) * 0.05,
                                 torch.randn(24, generator=g))
    sig = LinearSignature(k, k_low, 24, 2, len(high), a_bits, 8, 0, True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(_linear_model(lin, sig).SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(33, k, generator=g) * 4
    got = session.run(None, {"X": x.numpy()})[0]
    np.testing.assert_array_equal(got, lin(x).numpy())


@pytest.mark.parametrize("n, left_order", [(96, 12), (1536, 12), (2048, 1), (12288, 12)])
def test_hadamard_function_equals_the_reference(n, left_order):
    """Dense Walsh-Hadamard MatMul (width <= 512) and butterflies (larger) both give the
    reference's FWHT result bit for bit after the float64 island."""
    from onnx import TensorProto, helper, numpy_helper

    from resq_export.algo.hadamard import apply_down_hadamard, hadamard_left_factor
    from resq_export.export.functions import hadamard_function

    left = hadamard_left_factor(n)[0].float() if left_order > 1 else torch.ones(1, 1)
    assert left.shape[0] == left_order
    node = helper.make_node("ResQHadamard", ["X", "left"], ["Y"], domain="resq")
    node.overload = f"n{n}_a{left_order}"
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["t", n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["t", n])],
                              [numpy_helper.from_array(left.numpy(), "left")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("resq", 1)],
                              functions=[hadamard_function(n, left_order)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(7, n, generator=torch.Generator().manual_seed(n)) * 3
    want = apply_down_hadamard(x.double(), left).float()
    np.testing.assert_array_equal(session.run(None, {"X": x.numpy()})[0], want.numpy())


def test_validate_cli_and_a_broken_tolerance(exported, artifacts, calib_file):
    folder = exported["resq"][1]
    result = run_cli("validate", "--onnx", folder, "--text", calib_file, "--seqlen", "64", "--max-tokens", "512",
                     "--decode-steps", "6", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"ppl_ort", "ppl_reference", "top1_agreement", "max_rel_err", "decode_match"} <= report.keys()
    assert report["ppl_rel_diff"] < 0.005 and report["decode_match"]
    # checked against another model's reference executor, the same ONNX must fail
    # named against another model's artifact, the mismatch is said before any comparison
    wrong = run_cli("validate", "--onnx", folder, "--artifact", artifacts["rtn"], "--text", calib_file,
                    "--seqlen", "64", "--max-tokens", "256", "--quiet")
    assert wrong.exit_code == 1 and "exported from another artifact" in wrong.output


def test_other_op_version_and_corrupt_files_are_refused(exported, tmp_path):
    folder = shutil.copytree(exported["resq"][1], tmp_path / "onnx")
    model = onnx.load(str(folder / ORT_FILE))
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "plugin_version":
                attr.s = b"2"
    onnx.save(model, str(folder / ORT_FILE))
    with pytest.raises(ArtifactError, match="differs from what export wrote"):
        check_onnx_folder(folder)
    with pytest.raises(ArtifactError, match="op version 2.*reads version 1.*resq-export export --artifact .* --out"):
        check_onnx_folder(folder, verify="none")  # as another release would have written it
    for node in model.graph.node:  # an ONNX folder of op contract v2: its KV cache grows by concatenation
        for attr in node.attribute:
            if attr.name == "plugin_version":
                attr.s = b"2" if node.op_type == "ResQKVCacheAttention" else str(op_version(node.op_type)).encode()
    onnx.save(model, str(folder / ORT_FILE))
    with pytest.raises(ArtifactError, match="ResQKVCacheAttention has op version 2; this resq-export reads version 3"):
        check_onnx_folder(folder, verify="none")
    (folder / ORT_FILE).write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="not a readable ONNX file"):
        check_onnx_folder(folder, verify="none")
    with pytest.raises(ArtifactError, match="not a resq-export ONNX folder"):
        check_onnx_folder(tmp_path)


def test_layouts_the_op_cannot_hold_are_refused(tiny_dirs, calib_file, tmp_path):
    """8-bit weights with ResQ's high-precision part: the 8-bit part would hold groups of two widths
    (and, with 4-bit activations, two activation widths). A clear error, exit 1, no ONNX folder."""
    art = tmp_path / "w8"
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", art, "--calib-data", calib_file,
                     "--w-bits", "8", "--weight-algo", "rtn", *SMALL)
    assert result.exit_code == 0, result.output
    result = run_cli("export", "--artifact", art, "--out", tmp_path / "onnx")
    assert result.exit_code == 1
    assert "does not fit" in result.output and "--high-fraction 0" in result.output
    assert not (tmp_path / "onnx").exists()


def test_build_runs_every_stage(tiny_dirs, calib_file, tmp_path):
    result = run_cli("build", "--model", tiny_dirs["qwen2"], "--out", tmp_path / "b", "--calib-data", calib_file,
                     "--nsamples", "4", "--seqlen", "32", "--quiet", "--eval-max-tokens", "1024")
    assert result.exit_code == 0, result.output
    for path in ("artifact/manifest.json", "onnx/model.onnx", "onnx/model.trt.onnx", "validation.json"):
        assert (tmp_path / "b" / path).is_file(), path
    assert "ONNX Runtime vs reference" in result.output and "FP baseline" in result.output
    validation = json.loads((tmp_path / "b" / "validation.json").read_text())
    assert validation["passed"] is True and validation["top1_agreement"] == 1.0
    assert f"FP {validation['ppl_fp']:.3f}" in result.output
    # the report made right after reads the build's validation, and is titled by model and method
    report = run_cli("report", "--artifact", tmp_path / "b" / "artifact", "--out", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    assert "No evaluation recorded" not in page and "PASSED" in page
    for key in ("ppl_fp", "ppl_ort", "ppl_reference"):
        assert f"{validation[key]:.4f}" in page
    assert f"<title>resq-export report: {tiny_dirs['qwen2'].name} resq W4A4KV4</title>" in page
    # a validation.json of other weights (the artifact re-quantised since) is not reported as this one's
    validation["artifact"]["weights_sha256"] = "0" * 64
    (tmp_path / "b" / "validation.json").write_text(json.dumps(validation))
    run_cli("report", "--artifact", tmp_path / "b" / "artifact", "--out", tmp_path / "r.html")
    assert "No evaluation recorded" in (tmp_path / "r.html").read_text()


def test_generate_streams_greedy_and_seeded_samples(exported):
    folder = exported["resq"][1]
    greedy = [run_cli("generate", "--onnx", folder, "--prompt", "The function", "--max-new-tokens", "8").output
              for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = [run_cli("generate", "--onnx", folder, "--prompt", "The function", "--max-new-tokens", "8",
                       "--temperature", "1.0", "--seed", str(s)).output for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2] and len(sampled[0].strip()) > 0


def test_generate_with_a_chat_template(exported):
    """The prompt goes through the tokenizer's chat template (SmolLM2 has one; the tiny tokenizer is
    given one here); generation runs from the rendered prompt."""
    from resq_export.runtime.loop import Generator
    from resq_export.runtime.ort_backend import OrtBackend
    from resq_export.runtime.text import load_tokenizer, prompt_ids

    folder = exported["resq"][1]
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    want = tokenizer("<s>user: The function\nassistant:", add_special_tokens=False)["input_ids"]
    assert prompt_ids(tokenizer, "The function", chat=True) == want
    assert prompt_ids(tokenizer, "The function", chat=False) != want
    model = Generator(tokenizer, lambda: OrtBackend.open(folder))
    assert list(model.stream("The function", max_new_tokens=6, chat=True))


def test_build_with_an_engine_but_no_runtime_stops_after_the_onnx(tiny_dirs, calib_file, tmp_path):
    """Exit code 2 naming what is missing, once the ONNX folder is written; no validation yet."""
    import importlib.util

    from resq_export.engine.runtime import MODULES

    if any(importlib.util.find_spec(module) for module in MODULES.values()):
        pytest.skip("a TensorRT runtime is installed here: this test is for a machine without one (as CI)")
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", tmp_path / "b", "--calib-data", calib_file,
                     "--nsamples", "4", "--seqlen", "32", "--quiet", "--engine", tmp_path / "m.plan")
    assert result.exit_code == 2, result.output
    assert "TensorRT" in result.output and "Traceback" not in result.output
    assert (tmp_path / "b" / "onnx" / "export.json").is_file() and not (tmp_path / "b" / "validation.json").exists()
    assert not (tmp_path / "m.plan").exists()


def test_tensorrt_flavour_updates_the_cache_in_place(exported):
    """No past -> present copy in the TensorRT flavour of a quantised cache: each past.* input is read
    by its attention node alone, whose aliased output (ops.json) is the matching present.*. A float
    cache is written by ScatterElements (a copy), and a graph that copies is caught."""
    from resq_export.engine.network import cache_copies

    graph = onnx.load(str(exported["resq"][1] / TRT_FILE), load_external_data=False)
    past = [i.name for i in graph.graph.input if i.name.startswith("past.")]
    assert len(past) == 2 * 6 and cache_copies(graph) == []
    fp = onnx.load(str(exported["fp"][1] / TRT_FILE), load_external_data=False)
    assert cache_copies(fp) == [i.name for i in fp.graph.input if i.name.startswith("past.")]
    node = next(n for n in graph.graph.node if n.op_type == "ResQKVCacheAttention")
    node.input[3] = "copied_key_codes"
    graph.graph.node.append(onnx.helper.make_node("Identity", [past[0]], ["copied_key_codes"]))
    assert cache_copies(graph) == [past[0]]
