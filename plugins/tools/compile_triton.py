"""Compile every Triton kernel configuration (resq_export.kernels.configs.all_configs()) to a cubin
per GPU architecture, ahead of time and without a GPU, and write what the C++ loader embeds:

    OUT/cubins/<config>.sm_<arch>.cubin   the cubins (read by the SASS tests)
    OUT/triton_kernels.json               their metadata (also the engine manifest's source)
    OUT/triton_kernels.cpp                the loader's table: metadata + the cubins via .incbin

Run by CMake (plugins/CMakeLists.txt) and tools/build_native.sh; see docs/plugins.md.
Usage: compile_triton.py OUT [--configs module:function] [--archs 80,86,89,90a,120]
Exit 1 with one `error: ...` line when triton is missing or of another version, when ptxas is not
the CUDA toolkit's, or when a configuration does not compile."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRITON_VERSION = "3.9.0"  # pinned in pyproject.toml
SCRATCH_PARAMS = ("global_scratch", "profile_scratch")  # the two pointers Triton appends to every kernel
ARG_BYTES = {"i1": 1, "i8": 1, "u8": 1, "i16": 2, "u16": 2, "i32": 4, "u32": 4, "i64": 8, "u64": 8,
             "fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}


class BuildError(Exception):
    pass


def _triton():
    try:
        import triton
    except ImportError as e:
        raise BuildError(f"triton is not importable by {sys.executable} ({e}): pip install triton=={TRITON_VERSION} "
                         "(pyproject.toml pins it), or point CMake at the right interpreter "
                         "with -DRESQ_PYTHON=/path/to/python") from None
    if triton.__version__ != TRITON_VERSION:
        raise BuildError(f"triton {triton.__version__} found ({Path(triton.__file__).parent}), the cubins are built "
                         f"with triton=={TRITON_VERSION} (pyproject.toml): pip install triton=={TRITON_VERSION}")
    return triton


def _ptxas() -> Path:
    """The CUDA toolkit's ptxas (the one beside nvcc), never the triton wheel's newer one: a cubin
    of a newer ptxas may not load on the driver of the toolkit's release (e.g. CUDA 13.0, r580)."""
    explicit = os.environ.get("RESQ_PTXAS")
    nvcc = shutil.which("nvcc")
    candidates = [Path(explicit)] if explicit else []
    if nvcc:
        candidates += [Path(nvcc).resolve().parent / "ptxas", Path(os.path.realpath(nvcc)).parent / "ptxas"]
    candidates += [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "ptxas"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and "site-packages" not in str(path):
            return path
    raise BuildError("no CUDA toolkit ptxas found (looked beside nvcc and in $CUDA_HOME/bin): install the CUDA "
                     "toolkit (or pip install nvidia-cuda-nvcc) or set RESQ_PTXAS")


def _version_line(tool: Path) -> str:
    out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=True).stdout
    release = re.search(r"release (\d+\.\d+), (V[\d.]+)", out)
    return f"{release.group(1)} ({release.group(2)})" if release else out.strip().splitlines()[-1]


def _tools_dir(triton) -> Path:
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def load_configs(spec: str) -> list:
    module, _, function = spec.partition(":")
    try:
        configs = getattr(importlib.import_module(module), function or "all_configs")()
    except Exception as e:  # an import or configuration error of the kernel modules: one line, not a traceback
        raise BuildError(f"{spec}: {type(e).__name__}: {e}") from None
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BuildError(f"{spec}: configuration names used twice: {', '.join(dup)}")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise BuildError(f"{spec}: configuration names must be C identifiers: {', '.join(bad)}")
    return configs


def _params(config) -> list[dict]:
    """The kernel's parameters in launch order: the non-constexpr arguments, then Triton's two scratch
    pointers. `div16`: the configuration's `divisible16` names it (a 16-byte aligned pointer, an
    integer multiple of 16); the cubin is compiled assuming it and the launcher checks it."""
    div16 = set(config.divisible16)
    out = []
    for name, ty in config.signature.items():
        if ty == "constexpr":
            if name not in config.constexprs:
                raise BuildError(f"{config.name}: constexpr {name} has no value")
            continue
        pointer = ty.startswith("*")
        if not pointer and ty not in ARG_BYTES:
            raise BuildError(f"{config.name}: argument {name} has type {ty}, which the launcher does not pass")
        out.append({"name": name, "type": ty, "bytes": 8 if pointer else ARG_BYTES[ty], "div16": name in div16})
    unknown = div16 - {p["name"] for p in out if p["type"].startswith("*") or p["type"] in ("i32", "i64")}
    if unknown:
        raise BuildError(f"{config.name}: divisible16 names no pointer or integer argument: {', '.join(sorted(unknown))}")
    return out + [{"name": s, "type": "*i8", "bytes": 8, "div16": False, "scratch": True} for s in SCRATCH_PARAMS]


def _attrs(config, params: list[dict]) -> dict:
    names = [n for n, t in config.signature.items()]
    return {(names.index(p["name"]),): [["tt.divisibility", 16]] for p in params if p["div16"]}


def ptxas_report(log: str) -> dict:
    """Spills and stack frame from ptxas -v (the same ptxas run that made the cubin)."""
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not frame:
        raise BuildError(f"no resource report in the ptxas log: {log.strip()[-300:]!r}")
    return {"stack_frame": int(frame.group(1)), "spill_stores": int(frame.group(2)), "spill_loads": int(frame.group(3))}


def _ptxas_cubin(ptxas: Path, ptx: str, gpu_name: str) -> tuple[bytes, str]:
    """sm_120: Triton writes arch-specific sm_120a PTX; our int8 kernels use nothing of the `a`
    feature set, so the same PTX assembled for plain sm_120 also runs on sm_121 (ptxas refuses it
    otherwise). The flags are Triton's own (make_cubin): line info, no FMA contraction."""
    ptx = re.sub(r"^\.target sm_\d+a?", f".target {gpu_name}", ptx, count=1, flags=re.MULTILINE)
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        src.write_text(ptx)
        run = subprocess.run([str(ptxas), "-lineinfo", "--fmad=false", "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={gpu_name}", str(src), "-o", str(obj)], capture_output=True, text=True)
        if run.returncode != 0:
            raise BuildError(f"ptxas {gpu_name}: {run.stderr.strip().splitlines()[-1] if run.stderr else run.returncode}")
        return obj.read_bytes(), run.stdout + run.stderr


def resource_usage(cuobjdump: Path, cubin: Path) -> dict:
    """REG / STACK / SHARED (static) / LOCAL of the cubin's one function, as cuobjdump reports them."""
    out = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {"registers": int(fields["REG"]), "stack": int(fields["STACK"]), "static_shared": int(fields["SHARED"]),
            "local": int(fields["LOCAL"])}


def compile_one(triton, config, arch: str, ptxas: Path, params: list[dict]):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sm = int(arch.rstrip("a"))
    source = ASTSource(config.fn, dict(config.signature), dict(config.constexprs), attrs=_attrs(config, params))
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": False}
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # Triton prints the ptxas -v log there (dump_ptxas_log)
            kernel = triton.compile(source, target=GPUTarget("cuda", sm, 32), options=options)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BuildError(f"{config.name} for sm_{arch}: {type(e).__name__}: {first}") from None
    meta = kernel.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise BuildError(f"{config.name} for sm_{arch}: needs {meta.global_scratch_size} bytes of global scratch, "
                         "which the launcher does not allocate (it passes null scratch pointers)")
    cubin, ptxas_log = kernel.asm["cubin"], log.getvalue()
    if arch == "120":
        cubin, ptxas_log = _ptxas_cubin(ptxas, kernel.asm["ptx"], "sm_120")
    return cubin, {
        "kernel": meta.name, "shared": int(meta.shared), "num_warps": int(meta.num_warps),
        "uses_dot": "tt.dot" in kernel.asm["ttir"], "wgmma": "warp_group_dot" in kernel.asm["ttgir"],
        **ptxas_report(ptxas_log),
    }


def _gpu_name(arch: str) -> str:
    return f"sm_{arch}"


def build(out: Path, configs: list, archs: list[str] | None, log=print) -> dict:
    triton = _triton()
    ptxas = _ptxas()
    # Triton reads these when it first needs ptxas; the toolkit's for every arch (sm_90+ included)
    os.environ["TRITON_PTXAS_PATH"] = str(ptxas)
    os.environ["TRITON_PTXAS_BLACKWELL_PATH"] = str(ptxas)
    # compile every time (a cache hit skips ptxas, whose -v report gives the spills) in a cache of
    # our own that nothing else reads
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    os.environ["TRITON_CACHE_DIR"] = str(out / "triton-cache")
    cuobjdump = _tools_dir(triton) / "cuobjdump"
    cubin_dir = out / "cubins"
    cubin_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    start = time.perf_counter()
    for config in configs:
        params = _params(config)
        for arch in [a for a in config.archs if archs is None or a in archs]:
            cubin, meta = compile_one(triton, config, arch, ptxas, params)
            path = cubin_dir / f"{config.name}.{_gpu_name(arch)}.cubin"
            path.write_bytes(cubin)
            entries.append({"name": config.name, "arch": arch, "sm": int(arch.rstrip("a")),
                            "arch_specific": arch.endswith("a"), **meta, **resource_usage(cuobjdump, path),
                            "block": meta["num_warps"] * 32, "num_stages": config.num_stages,
                            "constexprs": {k: v for k, v in config.constexprs.items()},
                            "params": params, "cubin": str(path.relative_to(out)),
                            "sha256": hashlib.sha256(cubin).hexdigest(), "bytes": len(cubin)})
    seconds = time.perf_counter() - start
    log(f"resq: {len(entries)} cubins ({len(configs)} configurations) in {seconds:.1f} s with ptxas {_version_line(ptxas)}")
    return {"triton": triton.__version__, "ptxas": _version_line(ptxas), "seconds": round(seconds, 2),
            "kernels": entries}


def launch_policy(configs_spec: str) -> dict[str, int]:
    """The launch policy's integer constants (upper-case names of resq_export.kernels.launch, e.g.
    SPLIT_MAX_M, DECODE_MAX_M, and of kv_launch, KV_*) for the C++ launch code, which must choose tiles
    as the Python launchers do; empty for other configurations (the tests' probe kernels)."""
    if not configs_spec.startswith("resq_export.kernels."):
        return {}
    out = {}
    for module in ("launch", "kv_launch"):
        mod = importlib.import_module(f"resq_export.kernels.{module}")
        out.update({k: int(v) for k, v in vars(mod).items() if k.isupper() and type(v) is int})
    return out


def _c_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid C string literal for our ASCII names


def write_cpp(out: Path, manifest: dict) -> str:
    """The loader's table (triton_table.h): one ResQTritonKernel per (configuration, arch); the cubin
    bytes come in through the assembler's .incbin, so the source stays small however large they are."""
    versions = f"triton {manifest['triton']}; ptxas {manifest['ptxas']}"
    lines = ["// Generated by plugins/tools/compile_triton.py: do not edit.",
             '#include "triton_table.h"', ""]
    asm, decls, rows = [], [], []
    for i, k in enumerate(manifest["kernels"]):
        sym = f"resq_cubin_{i}"
        path = str((out / k["cubin"]).resolve()).replace("\\", "\\\\").replace('"', '\\"')
        asm += [f'  ".section .rodata.{sym},\\"a\\"\\n"', '  ".balign 16\\n"', f'  ".globl {sym}\\n"',
                f'  ".hidden {sym}\\n"', f'  "{sym}:\\n"', f'  ".incbin \\"{path}\\"\\n"']
        decls.append(f"extern const unsigned char {sym}[];")
        params = ",".join(f"{p['name']}:{p['type']}{'/16' if p['div16'] else ''}" for p in k["params"])
        rows.append("  {" + ", ".join([
            _c_string(k["name"]), _c_string(k["arch"]), str(k["sm"]), str(int(k["arch_specific"])), _c_string(k["kernel"]),
            str(k["num_warps"]), str(k["shared"]), str(k["static_shared"]), str(k["registers"]), str(len(k["params"])),
            _c_string(params), sym, str(k["bytes"]), _c_string(k["sha256"]),
            _c_string(",".join(f"{n}={int(v)}" for n, v in k["constexprs"].items()))]) + "},")
    lines += ['extern "C" {', *decls, "}", ""] if decls else []
    if asm:
        lines += ["__asm__(", *asm, '  ".previous\\n");', ""]
    lines += ["namespace {", "const ResQTritonKernel kTable[] = {", *rows,
              '  {nullptr, nullptr, 0, 0, nullptr, 0, 0, 0, 0, 0, nullptr, nullptr, 0, nullptr, nullptr}};',
              "}  // namespace", "",
              "extern const ResQTritonKernel* const resq_triton_table = kTable;",
              f"extern const int resq_triton_table_size = {len(rows)};",
              f"extern const char* const resq_triton_versions_text = {_c_string(versions)};",
              "extern const char* const resq_triton_policy_text = "
              f"{_c_string(','.join(f'{k}={v}' for k, v in manifest.get('policy', {}).items()))};",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--configs", default="resq_export.kernels.configs:all_configs")
    parser.add_argument("--archs", default="", help="only these of each configuration's archs, comma-separated "
                        "(CMake passes RESQ_CUDA_ARCHS), e.g. 90a")
    args = parser.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        configs = load_configs(args.configs)
        manifest = build(args.out, configs, [a for a in args.archs.split(",") if a] or None)
        manifest["policy"] = launch_policy(args.configs)
        (args.out / "triton_kernels.json").write_text(json.dumps(manifest, indent=1) + "\n")
        (args.out / "triton_kernels.cpp").write_text(write_cpp(args.out, manifest))
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
