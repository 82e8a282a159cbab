"""Average bits per weight, per activation value and per cached K/V value of a quantised model,
scales and zero points included, counted from its layouts and shape (resq_export/bit_budget.py).

    python tools/bit_budget.py --artifact ART [--json]
    python tools/bit_budget.py --model smollm2-135m [quantize options, e.g. --high-fraction 0.25] [--json]

The second form quantises nothing: it reads the model's shape and lays out the settings as
`resq-export quantize` would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from resq_export.bit_budget import PARTS, bit_budget
from resq_export.cli import _quant_config, quant_options
from resq_export.errors import ConfigError, ResQError
from resq_export.fileio import read_json
from resq_export.layout import role_layouts
from resq_export.models.config import ModelConfig

NAMES = {"codes": "codes", "scales": "scales", "zero_points": "zero points", "sums": "code sums", "lqer": "LQER"}


def _model_config(source: str) -> ModelConfig:
    """A model's shape: an HF folder's config.json is read alone (no weights hashed), anything else
    (a .gguf file, a built-in name) is opened as quantize opens it."""
    folder = Path(source)
    if (folder / "config.json").is_file():
        from resq_export.errors import ModelLoadError

        return ModelConfig.from_hf(read_json(folder / "config.json", ModelLoadError), str(folder / "config.json"))
    from resq_export.models.loader import open_model

    return open_model(source).config


def _runs(sizes: tuple[int, ...]) -> str:
    """(72, 72, 72, 8, 8) -> '3x72 + 2x8'."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][1] == size:
            runs[-1][0] += 1
        else:
            runs.append([1, size])
    return " + ".join(f"{n}x{size}" for n, size in runs)


def _line(name: str, d: dict | None, unit: str) -> str:
    if d is None:
        return f"{name}: float (not quantised)"
    parts = ", ".join(f"{NAMES[p]} {d[p]:.3f}" for p in PARTS if p in d)
    return f"{name}: {d['bits']:.3f} bits per {unit} ({parts})"


def _text(result: dict) -> str:
    lines = [f"{result['source']}: {result['setting']}"]
    for key, unit in (("weights", "weight"), ("activations", "activation value")):
        section = result[key]
        lines.append(_line(key, section, unit))
        for role, d in (section or {}).get("per_role", {}).items():
            lines.append("  " + _line(role, d, unit))
    lines.append(_line("kv_cache", result["kv_cache"], "cached value"))
    gpu = result["gpu"]
    lines.append("as the GPU holds them (groups padded to 64 channels; int32 code sums and activation zero points):")
    lines.append("  " + _line("weights", gpu["weights"], "weight"))
    lines.append("  " + _line("activations", gpu["activations"], "activation value"))
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--artifact", type=click.Path(file_okay=False, path_type=Path),
              help="A quantised artifact folder: its recorded settings and layouts.")
@click.option("--model", "model_source",
              help="Instead of an artifact: an HF folder, .gguf file or built-in model, laid out with the "
                   "quantize options given (nothing is quantised).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@quant_options
def main(artifact, model_source, as_json, calib_data, quiet, **settings) -> None:
    """Average bits per quantised linear weight (codes, float32 scales per row and group, LQER factors
    and their scales), per linear-input activation value (codes, a float32 scale and a zero point per
    group and token, weighted by each linear's input width) and per cached K/V value (codes, float32
    scale, uint8 zero point per group), overall and per role; plus the same as the GPU kernels hold
    them (groups padded to 64 channels, int32 per-group sums and zero points). Biases, embedding and
    head are not counted.

    \b
    python tools/bit_budget.py --artifact ART [--json]
    python tools/bit_budget.py --model smollm2-135m --high-fraction 0.25 [--json]

    With --model the quantize options lay the model out as `resq-export quantize` would (nothing is
    quantised); those that do not change the layout (--calib-data, --nsamples, --rotation, ...) change
    nothing here."""
    try:
        if (artifact is None) == (model_source is None):
            raise ConfigError("give either --artifact ART or --model M (with quantize options)")
        if artifact is not None:
            given = [k for k, v in settings.items() if v is not None and not (k == "method" and v == "resq")]
            if given or calib_data:
                raise ConfigError(f"--artifact counts the artifact's own settings; the quantize options "
                                  f"({', '.join('--' + k.replace('_', '-') for k in given) or '--calib-data'}) "
                                  "go with --model")
            from resq_export.artifact import open_artifact

            reader = open_artifact(artifact, verify=False)
            model, quant, layouts, source = reader.config, reader.quant, reader.layouts, str(artifact)
        else:
            quant = _quant_config(**settings)
            model = _model_config(model_source)
            layouts = role_layouts(model, quant, warn=False) if quant.quantizes_weights else {}
            source = model_source
    except ResQError as e:
        if as_json:
            click.echo(json.dumps({"error": str(e), "exit_code": e.exit_code}))
        else:
            click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    groups = _runs(layouts["attn_qkv"].group_sizes) if layouts else "-"
    setting = (f"{quant.method} W{quant.w_bits}A{quant.a_bits}KV{quant.kv_bits}, high fraction "
               f"{quant.high_fraction:g}, attn_qkv's input groups {groups}, LQER rank {quant.lqer_rank}")
    result = {"source": source, "setting": setting, "quant": quant.to_dict(), **bit_budget(model, quant, layouts)}
    click.echo(json.dumps(result, indent=1) if as_json else _text(result))


if __name__ == "__main__":
    main()
