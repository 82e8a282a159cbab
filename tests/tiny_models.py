"""Tiny random Llama / Mistral / Qwen2 / Qwen3 / Phi-3 models written as real HF folders (each from its
family's own transformers config class), and a tiny real tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from resq_export.calib.data import default_calibration_path

VOCAB = 400


def tiny_tokenizer(training_text: str, bos: bool = True, vocab_size: int = VOCAB):
    """A byte-level BPE tokenizer trained in-process, wrapped as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([training_text], trainer=trainer)
    if bos:
        # A post-processor that adds BOS lets us check add_special_tokens=False is honoured.
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")


# hidden 64 (8 high channels), 4 heads of 16 (2 high per head), GQA 2:1,
# intermediate 96 = 12 * 8 (a non-power-of-two Hadamard).
_COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True, rope_theta=10000.0)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(tie_word_embeddings=False, sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    # per-head q/k norms, an explicit head_dim (4 x 32 = 128 query channels over a hidden size of 64),
    # YaRN scaling
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        head_dim=32, tie_word_embeddings=False,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})),
    # Phi-4-mini's shape of things: fused qkv_proj and gate_up_proj, RoPE on 3/4 of each head (12 of
    # 16 channels), LongRoPE with distinct short and long factors switching past 48 positions, tied
    # embeddings
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(
        tie_word_embeddings=True, partial_rotary_factor=0.75, original_max_position_embeddings=48,
        bos_token_id=0, eos_token_id=0, pad_token_id=None, sliding_window=None,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.05, 1.1, 1.3, 1.6, 2.0],
                      "long_factor": [1.2, 1.5, 2.0, 3.0, 5.0, 8.0]})),
}


def make_tiny_model(folder: Path, family: str, seed: int = 0, **config) -> Path:
    """Random weights (norms and biases random too, so folding them is really tested), saved with
    save_pretrained as safetensors, plus the tokenizer. config: overrides of _COMMON (e.g. a
    vocab_size above the tokenizer's, whose extra rows no text reaches)."""
    import transformers

    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**{**_COMMON, **config}, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.5 * torch.rand_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    tiny_tokenizer(calibration_text()).save_pretrained(str(folder))
    return folder


def calibration_text() -> str:
    return default_calibration_path().read_text()[:60000]


SMALL = ["--nsamples", "4", "--seqlen", "32", "--quiet"]


def run_cli(*args):
    from click.testing import CliRunner

    from resq_export.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def cli_per_family(command: str, families, tiny_dirs: dict, root: Path, *args) -> dict:
    """family -> root/family, written by `resq-export COMMAND --model <its tiny model> --out root/family
    ARGS` for each family in turn; each run must exit 0 (its output and the family in the message)."""
    out = {}
    for family in families:
        result = run_cli(command, "--model", tiny_dirs[family], "--out", root / family, *args)
        assert result.exit_code == 0, f"{command} of the tiny {family} model: {result.output}"
        out[family] = root / family
    return out


def rerecord_onnx_files(folder: Path) -> None:
    """After a test edits an exported ONNX folder on purpose (to model another release's output):
    record the edited files in export.json, so that the deeper checks are what the test reaches."""
    import hashlib
    import json

    meta_path = Path(folder) / "export.json"
    meta = json.loads(meta_path.read_text())
    meta["files"] = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size,
                                                         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                     for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != "export.json"}
    meta_path.write_text(json.dumps(meta, indent=2))


_EXPORT_THEN_SIGKILL = """
import os, signal, sys
from resq_export.export import writer
from resq_export.cli import main

real = writer._write_flavour
def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
writer._write_flavour = write_then_die
sys.argv[0] = "resq-export"
main()
"""


def export_killed_midway(artifact: Path, out: Path):
    """`resq-export export` in a child that SIGKILLs itself once the first flavour is written into its
    temporary folder: as abrupt as a kill from outside, without racing an export that may finish
    first. Returns the finished process (returncode -SIGKILL)."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", _EXPORT_THEN_SIGKILL, "export", "--artifact", str(artifact),
                           "--out", str(out)], capture_output=True, timeout=300, env=env)
