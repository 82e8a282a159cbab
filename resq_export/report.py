"""`resq-export report`: one self-contained HTML page about an artifact (PNG plots embedded as base64).

Everything comes from the artifact folder (no model needed): manifest.json (settings, times, peak
memory), stats.json (eigenvalue spectra of the bases, per-layer weight/activation SQNR and times,
written by quantize) and evaluations.json (perplexities appended by `resq-export eval --artifact`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from . import __version__
from .artifact import STATS_FILE, VALIDATION_FILE, WEIGHTS_FILE, read_manifest
from .errors import ArtifactError
from .evaluations import read_evaluations
from .fileio import atomic_write_text, read_json
from .manifests import VALIDATION_JSON, check_schema
from .outputs import REPORT_GENERATOR, check_report_output, is_our_validation

ROLES = ("attn_qkv", "attn_o", "mlp_gate_up", "mlp_down")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cumulative_share(eig: list[float]) -> tuple[list[float], list[float]]:
    """Eigenvalues (ascending) -> (fraction of channels, fraction of variance), largest first."""
    desc = sorted(eig, reverse=True)
    total = sum(desc) or 1.0
    xs, ys, acc = [], [], 0.0
    for k, v in enumerate(desc, 1):
        acc += v
        xs.append(k / len(desc))
        ys.append(acc / total)
    return xs, ys


def spectra_figures(spectra: dict) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    figs = []
    high = spectra.get("high_channels", {})
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, name in zip(axes, ("U_A", "U_B", "U_C")):
        data = spectra.get(name)
        if not data:
            ax.set_visible(False)
            continue
        if name == "U_A":
            curves = [data]
        elif name == "U_B":
            curves = [head for layer in data for head in layer]
        else:
            curves = data
        cmap = plt.get_cmap("viridis")
        for j, eig in enumerate(curves):
            xs, ys = _cumulative_share(eig)
            ax.plot(xs, ys, color=cmap(j / max(1, len(curves) - 1)) if len(curves) > 1 else "C0", lw=1)
        dim = len(curves[0])
        r = high.get(name, 0)
        if r:
            ax.axvline(r / dim, color="C3", ls="--", lw=1, label=f"8-bit subspace ({r} of {dim})")
        r_gate = high.get("U_A_gate_up", 0) if name == "U_A" else 0  # --gate-up-high-fraction
        if r_gate:
            ax.axvline(r_gate / dim, color="C1", ls=":", lw=1, label=f"mlp_gate_up's 8-bit subspace ({r_gate} of {dim})")
        if r or r_gate:
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{name}: cumulative variance" + ("" if name == "U_A" else " (per layer/head, colour = depth)"),
                     fontsize=9)
        ax.set_xlabel("fraction of channels (largest eigenvalues first)")
        ax.set_ylabel("fraction of variance")
        ax.grid(alpha=0.3)
    figs.append(("Variance captured by the 8-bit subspace (eigenvalue spectra)", _png(fig)))

    if spectra.get("U_A"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        desc = sorted(spectra["U_A"], reverse=True)
        ax.semilogy(range(1, len(desc) + 1), [max(v, 1e-30) for v in desc], color="C0")
        if high.get("U_A"):
            ax.axvspan(1, high["U_A"], color="C3", alpha=0.15, label="8-bit channels")
            ax.legend(fontsize=8)
        ax.set_xlabel("eigenvalue rank")
        ax.set_ylabel("eigenvalue (log)")
        ax.set_title("U_A eigenvalue spectrum of the residual stream", fontsize=9)
        ax.grid(alpha=0.3)
        figs.append(("U_A spectrum", _png(fig)))
    if spectra.get("U_B") and spectra.get("U_C"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        r = high.get("U_B", 0)

        def share(eig):
            desc = sorted(eig, reverse=True)
            return sum(desc[:r]) / (sum(desc) or 1.0)

        layers = range(len(spectra["U_C"]))
        ax.plot(layers, [sum(share(h) for h in heads) / len(heads) for heads in spectra["U_B"]], "o-",
                label="U_B (values, mean over KV heads)")
        ax.plot(layers, [share(e) for e in spectra["U_C"]], "s-", label="U_C (keys after RoPE)")
        ax.set_xlabel("layer")
        ax.set_ylabel("variance share in 8-bit subspace")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title("Per-layer variance captured by the 8-bit subspace", fontsize=9)
        figs.append(("Per-layer variance share", _png(fig)))
    return figs


def layer_figures(layers: list[dict]) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    figs = []
    for key, title in (("weight_sqnr_db", "Weight quantisation SQNR per layer"),
                       ("activation_sqnr_db", "Activation quantisation SQNR per layer (calibration data)")):
        if not any(layer.get(key) for layer in layers):
            continue
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for role in ROLES:
            ys = [layer.get(key, {}).get(role, math.nan) for layer in layers]
            ys = [math.nan if y is None or math.isinf(y) else y for y in ys]
            ax.plot(range(len(layers)), ys, "o-", ms=3, label=role)
        ax.set_xlabel("layer")
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figs.append((title, _png(fig)))
    if any(layer.get("pass2_s") for layer in layers):
        figs.append(("Time per layer", _time_figure(layers)))
    if any(layer.get("pass2_peak_rss_mb") for layer in layers):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for key, label in (("pass1_peak_rss_mb", "after pass 1"), ("pass2_peak_rss_mb", "after pass 2")):
            ax.plot(range(len(layers)), [layer.get(key) or math.nan for layer in layers], "o-", ms=3, label=label)
        ax.set_xlabel("layer")
        ax.set_ylabel("MB")
        ax.set_title("Peak RSS of the process after each layer (high-water mark; a resumed run starts afresh)",
                     fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figs.append(("Peak RSS per layer", _png(fig)))
    return figs


def _time_figure(layers: list[dict]) -> str:
    """Stacked seconds per layer: pass 1, then pass 2 by step where the record has steps."""
    import matplotlib.pyplot as plt

    steps = next((list(layer["pass2_steps"]) for layer in layers if layer.get("pass2_steps")), [])
    parts = {"pass 1 (float statistics)": [layer.get("pass1_s") or 0.0 for layer in layers]}
    for step in steps:
        parts[f"pass 2: {step}"] = [(layer.get("pass2_steps") or {}).get(step, {}).get("s", 0.0) for layer in layers]
    listed = [sum(v[i] for k, v in parts.items() if k.startswith("pass 2")) for i in range(len(layers))]
    rest = "pass 2: write and other" if steps else "pass 2 (transform, GPTQ/RTN, write)"
    parts[rest] = [max((layer.get("pass2_s") or 0.0) - listed[i], 0.0) for i, layer in enumerate(layers)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs, bottom = list(range(len(layers))), [0.0] * len(layers)
    for n, (label, ys) in enumerate(parts.items()):
        ax.bar(xs, ys, bottom=bottom, label=label, color=f"C{n}")
        bottom = [b + y for b, y in zip(bottom, ys)]
    ax.set_xlabel("layer")
    ax.set_ylabel("seconds")
    ax.set_title("Time per layer", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    def cell(v, tag="td"):
        return f"<{tag}>{html.escape(str(v))}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th") for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def build_validation(art_dir: Path, manifest: dict) -> dict | None:
    """The validation.json a `build` wrote beside this artifact, if it is this artifact's (same weights)."""
    path = Path(art_dir).parent / VALIDATION_FILE
    if not is_our_validation(path):  # absent, or someone else's file of that name
        return None
    v = check_schema(read_json(path, ArtifactError), VALIDATION_JSON, path,
                     "move it away, or run the build again to write it anew")
    recorded = (v.get("artifact") or {}).get("weights_sha256")
    return v if recorded and recorded == manifest.get("files", {}).get(WEIGHTS_FILE) else None


def report_title(manifest: dict, quant: dict) -> str:
    """'<source model> <method> W4A4KV4': a build's artifact folder is always named 'artifact'."""
    src = manifest.get("source_model", {})
    name = src.get("name") or Path(src.get("path", "model")).name
    bits = f"W{quant.get('w_bits')}A{quant.get('a_bits')}KV{quant.get('kv_bits')}"
    return f"{name} {quant.get('method')} {bits}"


def build_report(art_dir: Path, out: Path) -> Path:
    """Write the HTML report of artifact `art_dir` to `out` (atomically); returns `out`. `out` must
    be new or an earlier report (outputs.check_report_output)."""
    import matplotlib

    matplotlib.use("Agg")  # headless; no display needed
    art_dir = Path(art_dir)
    manifest = read_manifest(art_dir)
    out = check_report_output(out, art_dir)
    stats_path = art_dir / STATS_FILE
    details = read_json(stats_path, ArtifactError) if stats_path.is_file() else {}
    config = read_json(art_dir / "config.json", ArtifactError)
    quant, model = config.get("quant", {}), config.get("model", {})
    mstats = manifest.get("stats", {})
    sections = []

    shape = ", ".join(f"{k} {model.get(k)}" for k in ("architecture", "hidden_size", "num_layers", "num_heads",
                                                       "num_kv_heads", "intermediate_size", "vocab_size"))
    settings = _table([(k, _fmt(v)) for k, v in quant.items()], ("setting", "value"))
    sections.append(("Model and settings", f"<p>{html.escape(shape)}</p>" + settings))
    timing_rows = [("wall time (s)", mstats.get("wall_time_s")), ("peak RSS (MB)", mstats.get("peak_rss_mb")),
                   ("torch threads", mstats.get("torch_threads")), ("resumed", mstats.get("resumed"))]
    timing_rows += [(f"stage {k} (s)", v) for k, v in mstats.get("stage_times_s", {}).items()]
    for k, v in mstats.get("variance_in_high_subspace", {}).items():
        timing_rows.append((f"variance in 8-bit subspace, {k}", f"{v:.3f}"))
    sections.append(("Run", _table([r for r in timing_rows if r[1] is not None], ("quantity", "value"))))

    validation = build_validation(art_dir, manifest)
    rows = []
    if validation:
        v = validation
        for label, key in (("FP (source model)", "ppl_fp"), ("ONNX Runtime (build)", "ppl_ort"),
                           ("reference executor (build)", "ppl_reference")):
            rows.append((label, f"{v[key]:.4f}", v.get("windows"), v.get("seqlen"), v.get("tokens"),
                         v.get("text", ""), ""))
        sections.append(("Validation (build)", _table([
            ("result", "PASSED" if v.get("passed") else "FAILED"),
            ("perplexity ONNX Runtime / FP", f"{v['ppl_ort'] / v['ppl_fp']:.3f}x"),
            ("ONNX Runtime vs reference, perplexity difference", f"{100 * v['ppl_rel_diff']:.4f}%"),
            ("top-1 agreement", f"{100 * v['top1_agreement']:.2f}%"),
            ("max relative logit error", f"{v['max_rel_err']:.2e}"),
            ("decode through the KV cache matches recomputation", f"{v['decode_match']} ({v['decode_steps']} steps)"),
        ], ("check", "value"))))
    evals = read_evaluations(art_dir)
    rows += [(e.get("label", "artifact"), f"{e['ppl']:.4f}", e.get("windows"), e.get("seqlen"), e.get("tokens"),
              e.get("text", ""), e.get("date", "")) for e in evals]
    if rows:
        sections.append(("Perplexity", _table(rows, ("model", "perplexity", "windows", "seqlen", "tokens",
                                                     "text", "date"))))
    else:
        hint = f"resq-export eval --artifact {html.escape(str(art_dir))}"
        sections.append(("Perplexity", f"<p>No evaluation recorded (run <code>{hint}</code>).</p>"))

    figs = spectra_figures(details.get("spectra") or {}) + layer_figures(details.get("layers") or [])
    for title, png in figs:
        sections.append((title, f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'))
    layers = details.get("layers") or []
    if layers:
        rows = []
        for i, layer in enumerate(layers):
            w, a = layer.get("weight_sqnr_db", {}), layer.get("activation_sqnr_db", {})
            rows.append((i, *(_fmt(w.get(r, "")) for r in ROLES), *(_fmt(a.get(r, "")) for r in ROLES),
                         _fmt(layer.get("pass1_s", "")), _fmt(layer.get("pass2_s", "")),
                         _fmt(layer.get("pass2_peak_rss_mb", ""))))
        header = ("layer", *(f"W SQNR {r}" for r in ROLES), *(f"A SQNR {r}" for r in ROLES), "pass 1 s", "pass 2 s",
                  "peak RSS MB")
        sections.append(("Per-layer numbers (dB, s)", _table(rows, header)))
    if not details:
        sections.append(("Note", "<p>This artifact has no stats.json (made by an older version): no plots.</p>"))

    title = report_title(manifest, quant)
    body = "".join(f"<section><h2>{html.escape(t)}</h2>{c}</section>" for t, c in sections)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{REPORT_GENERATOR} {html.escape(__version__)}">
<title>resq-export report: {html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
img {{ max-width: 100%; }}
h2 {{ font-size: 17px; border-bottom: 1px solid #ddd; }}
</style></head><body>
<h1>resq-export report: {html.escape(title)}</h1>
<p>Artifact <code>{html.escape(str(art_dir.resolve()))}</code>, method <b>{html.escape(str(quant.get("method")))}</b>,
tool {html.escape(str(manifest.get("tool_version")))}, source {html.escape(json.dumps(manifest.get("source_model", {})))}</p>
{body}
</body></html>
"""
    atomic_write_text(out, page)
    return out
