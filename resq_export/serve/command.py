"""The `serve-repo` command (kept out of cli.py, which main registers it from)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli_support import check_onnx_dir


@click.command("serve-repo")
@click.option("--onnx", "onnx_dir", type=click.Path(file_okay=False, path_type=Path), help="An exported ONNX folder.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False, path_type=Path), help="A TensorRT plan.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The model repository to write: a new or empty folder, or an earlier serve-repo's (replaced).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (processes) per server (per GPU for a plan): requests served at once.")
@click.option("--name", default="resq", show_default=True, help="The model's name in the server's API.")
@click.option("--plugins", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="libresq_plugins.so, for --engine [the one the plan's manifest records].")
@click.option("--overwrite", is_flag=True,
              help="Let another kind of resq-export's output at --out go. Files resq-export did not write are never "
                   "deleted: a folder holding any is refused, with or without it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: the result, or {\"error\", \"exit_code\"} (on stdout).")
def serve_repo(onnx_dir, engine_path, out_dir, instances, name, plugins, overwrite, as_json) -> None:
    """Write a Triton Inference Server model repository that streams generation (docs/serving.md)."""
    from .repo import write_repo

    if (onnx_dir is None) == (engine_path is None):
        raise click.UsageError("give exactly one of --onnx or --engine")
    r = write_repo(out_dir, onnx_dir=check_onnx_dir(onnx_dir) if onnx_dir else None, plan=engine_path,
                   instances=instances, name=name, plugin_library=plugins, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(r))
    else:
        click.echo(f"wrote {r['repository']} (model {r['name']}: {r['instances']} instance(s) of {r['model']}); start "
                   f"the server: .venv-serve/bin/python -m resq_export.serve.launch {r['repository']}")
