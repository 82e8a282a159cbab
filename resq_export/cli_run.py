"""The commands that run what resq-export builds: `generate` and `bench`, on an ONNX folder (ONNX
Runtime) or a TensorRT plan, through resq_export.runtime. cli.py adds them to the command group."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_support import FiniteFloat, check_onnx_dir

_JSON = click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON object: the result, or {\"error\", \"exit_code\"} (on stdout).")
_FULL_CHECK = click.option("--full-check", is_flag=True,
                           help="Check the sha256 of every file of the ONNX folder (default: sizes, and the hashes "
                                "of files up to 512 MiB).")


_PLUGINS = click.option("--plugins", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="The plugin library a plan runs with [RESQ_PLUGIN_LIBRARY, else the one it was built "
                             "with, as out.plan.json records].")


def _positive(ctx, param, value):
    if value == 0:
        raise click.BadParameter("0 keeps no token: give a number in (0, 1]")
    return value


def _one_model(onnx_dir: Path | None, engine_path: Path | None, both: bool = False) -> None:
    given = [flag for flag, value in (("--onnx", onnx_dir), ("--engine", engine_path)) if value is not None]
    if not given or (len(given) == 2 and not both):
        raise click.UsageError("give exactly one of --onnx DIR (ONNX Runtime) or --engine PLAN (TensorRT)"
                               if not both else "give --onnx DIR, --engine PLAN, or both")


def _load(onnx_dir: Path | None, engine_path: Path | None, plugins: Path | None, full_check: bool):
    from .runtime import load

    if onnx_dir is not None:
        return load(check_onnx_dir(onnx_dir), verify="full" if full_check else "quick")
    return load(engine_path, plugins=plugins)


@click.command()
@click.option("--onnx", "onnx_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An exported ONNX folder, run by ONNX Runtime on the CPU.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A TensorRT plan (with its out.plan.json), run on its GPU.")
@click.option("--prompt", required=True)
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=FiniteFloat(0.0), default=0.0, show_default=True, help="0: greedy; >= 0.")
@click.option("--top-p", type=FiniteFloat(0.0, 1.0), default=1.0, show_default=True, callback=_positive,
              help="Sample from the smallest set of likeliest tokens holding this much probability; in (0, 1].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chat", is_flag=True, help="Wrap the prompt in the tokenizer's chat template (refused without one).")
@_PLUGINS
@_FULL_CHECK
def generate(onnx_dir, engine_path, prompt, max_new_tokens, temperature, top_p, seed, chat, plugins,
             full_check) -> None:
    """Stream tokens from ONNX Runtime (--onnx) or a TensorRT plan (--engine) through the quantised KV cache."""
    _one_model(onnx_dir, engine_path)
    if max_new_tokens < 1:
        raise click.BadParameter("--max-new-tokens >= 1 is needed", param_hint="--max-new-tokens")
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    try:  # bytes the shell passed that are not UTF-8 reach Python as lone surrogates
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise click.BadParameter(
            f"is not valid UTF-8 (byte 0x{ord(prompt[e.start]) & 0xFF:02x} at character {e.start}): pass the text in "
            "UTF-8 (a UTF-8 locale, e.g. LANG=C.UTF-8, or iconv -t UTF-8)", param_hint="--prompt") from None
    model = _load(onnx_dir, engine_path, plugins, full_check)
    for piece in model.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                              chat=chat):
        click.echo(piece, nl=False)
    click.echo()


def _sizes(flag: str):
    return click.option(flag, "sizes_" + flag.strip("-").replace("-", "_"), type=click.IntRange(min=1), multiple=True,
                        help={"--prefill": "Prompt lengths to time (repeatable) [128, 512, 2048 where they fit].",
                              "--batch": "Decode batch sizes to time (repeatable) [1, 8 where they fit]."}[flag])


@click.command()
@click.option("--onnx", "onnx_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An exported ONNX folder (ONNX Runtime, CPU).")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A TensorRT plan; with --onnx too, both are measured in one run.")
@_sizes("--prefill")
@_sizes("--batch")
@click.option("--decode-steps", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per figure (median).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime's intra-op threads.")
@_PLUGINS
@_JSON
def bench(onnx_dir, engine_path, sizes_prefill, sizes_batch, decode_steps, repeats, threads, plugins, as_json) -> None:
    """Prefill tokens/s, decode ms per step at batch 1 and 8, and memory, of ONNX Runtime and/or a TensorRT plan."""
    from .runtime import load
    from .runtime.bench import BATCHES, PREFILL_LENGTHS, run_bench

    _one_model(onnx_dir, engine_path, both=True)
    runs = []
    if onnx_dir is not None:
        runs.append((str(onnx_dir), load(check_onnx_dir(onnx_dir), threads=threads)))
    if engine_path is not None:
        runs.append((str(engine_path), load(engine_path, plugins=plugins)))
    results = []
    for source, model in runs:
        result = run_bench(model, prefill=tuple(sizes_prefill) or PREFILL_LENGTHS, batches=tuple(sizes_batch) or BATCHES,
                           decode_steps=decode_steps, repeats=repeats, explicit=(bool(sizes_prefill), bool(sizes_batch)))
        results.append({"model": source, **result})
        if not as_json:
            click.echo(f"{result['backend']} ({source}), median of {repeats}:")
            for row in result["prefill"]:
                click.echo(f"  prefill {row['tokens']:>5} tokens: {row['tokens_per_s']:>10.1f} tokens/s")
            for row in result["decode"]:
                click.echo(f"  decode batch {row['batch']:>2}: {row['ms_per_step']:>9.3f} ms/step "
                           f"({row['tokens_per_s']:.1f} tokens/s)")
            click.echo(f"  memory: {result['memory']['mib']:.1f} MiB ({result['memory']['kind']})")
            for reason in result["skipped"]:
                click.echo(f"  skipped: {reason}")
    if as_json:
        click.echo(json.dumps(results))
