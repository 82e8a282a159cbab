"""Validation layer by layer: each piece of the cut graph, the reference executor and the float model
read one layer at a time give exactly what the whole model gives; the checks built on them fail
where they must."""

import numpy as np
import pytest
import torch

from resq_export.artifact import load_artifact, open_artifact
from resq_export.errors import ArtifactError, ConfigError
from resq_export.export.writer import export_onnx
from resq_export.models.loader import load_model, open_model
from resq_export.validate.compare import compare
from resq_export.validate.layerwise import float_layers, reference_layers, run_layers
from resq_export.validate.onnx_layers import OnnxLayers, split_graph
from resq_export.validate.ort_runner import OrtDecoder

pytest.importorskip("onnxruntime")
NAMES = ["resq", "resq_lqer", "quarot", "lqer", "fp", "w8a8"]
IDS = torch.randint(0, 400, (40,), generator=torch.Generator().manual_seed(11))
CHUNKS = [IDS[:20], IDS[20:21], IDS[21:30], IDS[30:]]


@pytest.fixture(scope="module")
def onnx_dirs(artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-layerwise")
    for name in NAMES:
        export_onnx(artifacts[name], root / name)
    return {name: root / name for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_onnx_pieces_equal_the_whole_graph(onnx_dirs, name):
    """The whole graph's logits bit for bit, in one chunk and continued through the cache in four."""
    _check_pieces(onnx_dirs[name])


def test_onnx_pieces_with_external_weights(artifacts, tmp_path):
    """What a model over 2 GiB has: the weights in model.onnx.data, read by each piece from the folder."""
    export_onnx(artifacts["resq_lqer"], tmp_path / "ext", external_over=0)
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    _check_pieces(tmp_path / "ext")


def _check_pieces(folder):
    layers = OnnxLayers(folder)
    try:
        assert layers.num_layers == 2
        whole, chunked = run_layers(layers, [[IDS], CHUNKS], "test")
        session = OrtDecoder(folder)
        want, _ = session.forward(IDS.numpy()[None])
        np.testing.assert_array_equal(layers.logits(whole[0]).numpy(), want[0])
        got, cache = [], session.new_cache(1, sum(ids.numel() for ids in CHUNKS))
        for ids in CHUNKS:
            logits, cache = session.forward(ids.numpy()[None], cache)
            got.append(logits[0])
        np.testing.assert_array_equal(torch.cat([layers.logits(s) for s in chunked]).numpy(), np.concatenate(got))
    finally:
        layers.close()


@pytest.mark.parametrize("name", NAMES)
def test_reference_layers_equal_the_whole_reference(artifacts, name):
    model, _, _ = load_artifact(artifacts[name])
    layers = reference_layers(open_artifact(artifacts[name]))
    whole, chunked = run_layers(layers, [[IDS], CHUNKS], "test")
    torch.testing.assert_close(layers.logits(whole[0]), model(IDS[None])[0], rtol=0, atol=0)
    cache = model.new_cache()
    want = torch.cat([model(ids[None], cache)[0] for ids in CHUNKS])
    torch.testing.assert_close(torch.cat([layers.logits(s) for s in chunked]), want, rtol=0, atol=0)


def test_float_layers_equal_the_loaded_model(tiny_dirs):
    for family in ("llama", "qwen2"):
        model = load_model(tiny_dirs[family]).decoder
        layers = float_layers(open_model(tiny_dirs[family]))
        (state,), = run_layers(layers, [[IDS]], "test")
        torch.testing.assert_close(layers.logits(state), model(IDS[None])[0], rtol=1e-6, atol=1e-6)


def test_compare_passes_and_fails_where_it_must(onnx_dirs, artifacts):
    windows = torch.randint(0, 400, (3, 48), generator=torch.Generator().manual_seed(5))
    ort_layers = OnnxLayers(onnx_dirs["resq"])
    try:
        good = compare(ort_layers, reference_layers(open_artifact(artifacts["resq"])), windows, decode_steps=8)
        assert good["passed"] and good["decode_match"] and good["ppl_rel_diff"] < 1e-6
        assert good["top1_agreement"] == 1.0 and good["tokens"] == 144
        # the same tiny Llama quantised another way: its reference executor disagrees
        other = compare(ort_layers, reference_layers(open_artifact(artifacts["rtn"])), windows, decode_steps=8)
        assert not other["passed"] and other["top1_agreement"] < 0.995
        with pytest.raises(ConfigError, match="--decode-steps 200 needs 215 tokens"):
            compare(ort_layers, reference_layers(open_artifact(artifacts["resq"])), windows, decode_steps=200)
    finally:
        ort_layers.close()


class _ForgetfulCache:
    """A model whose layers drop the cache between chunks: what the decode check must catch."""

    def __init__(self, model):
        self.model, self.num_layers = model, model.num_layers

    def embed(self, chunks):
        return self.model.embed(chunks)

    def logits(self, state):
        return self.model.logits(state)

    def layer(self, i):
        step = self.model.layer(i)

        class Step:
            new_cache = step.new_cache
            close = step.close

            def __call__(self, state, cache):
                return step(state, step.new_cache(64))  # a fresh cache each chunk: it forgets
        return Step()


def test_decode_check_catches_a_cache_that_forgets(onnx_dirs, artifacts):
    windows = torch.randint(0, 400, (2, 48), generator=torch.Generator().manual_seed(6))
    ort_layers = OnnxLayers(onnx_dirs["resq"])
    try:
        result = compare(_ForgetfulCache(ort_layers), reference_layers(open_artifact(artifacts["resq"])), windows, 8)
        assert not result["decode_match"] and not result["passed"]
        assert result["top1_agreement"] == 1.0  # the windows themselves are single chunks, unaffected
    finally:
        ort_layers.close()


def test_a_graph_without_our_scopes_is_refused(onnx_dirs):
    import onnx

    proto = onnx.load(str(onnx_dirs["fp"] / "model.onnx"))
    for node in proto.graph.node:
        node.name = node.name.replace("/model/layers.1/", "/model/block1/")
    with pytest.raises(ArtifactError, match="reads /model/layers.0/mlp/Add_1_out0 before the piece that makes it"):
        split_graph(proto.graph)  # layer 1's nodes would run inside the front, before layer 0
    proto = onnx.load(str(onnx_dirs["fp"] / "model.onnx"))
    for node in proto.graph.node:
        node.name = node.name.replace("/model/lm_head/", "/model/out/")
    with pytest.raises(ArtifactError, match="does not have the node scopes"):
        split_graph(proto.graph)
