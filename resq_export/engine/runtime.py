"""Which TensorRT builds the engine, for which GPU, and whether our kernels run there.

Two runtimes build our plans: standard TensorRT (module `tensorrt`; datacenter and RTX GPUs; builds
for the GPU of the machine it runs on) and TensorRT for RTX (module `tensorrt_rtx_bindings`, from
`pip install 'resq-export[tensorrt-rtx]'`; Ampere/Ada/Blackwell RTX GPUs, no Hopper; builds ahead
of time for a GPU that need not be present). Both are optional imports."""

from __future__ import annotations

import ctypes
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResQError, TensorRTMissing
from ..export.spec import check_abi

RUNTIMES = ("auto", "tensorrt", "tensorrt-rtx")
MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx_bindings"}
# The CUDA GEMM's tensor-core MMAs (int4/int8 m16n8k64/k32) need Ampere or newer.
MIN_KERNEL_SM = 80
INSTALL_HINT = (
    "no TensorRT runtime is installed: for RTX GPUs (sm_80/86/89/120/121, built ahead of time on any machine, "
    "no GPU needed) `pip install 'resq-export[tensorrt-rtx]'`; for datacenter GPUs (A100, H100, H200) standard "
    "TensorRT >= 10 with its Python bindings (`pip install tensorrt` from NVIDIA's package index) on that GPU")
PLUGIN_HINT = ("build it against the TensorRT headers: `cmake -S . -B build -DRESQ_TENSORRT_ROOT=<TensorRT or "
               "TensorRT-RTX SDK, or a folder with the headers in include/> && cmake --build build` "
               "(tools/trt_check.sh HEADERS_DIR does this and checks it)")


@dataclass(frozen=True)
class Runtime:
    name: str  # "tensorrt" | "tensorrt-rtx"
    module: str
    version: str
    targets: tuple[int, ...]  # SMs it builds for ahead of time; () = only the local GPU
    library: Path | None  # the loaded core library (libnvinfer / libtensorrt_rtx)


def _loaded_library(pattern: str) -> Path | None:
    """Where this process loaded a shared library from (the runtime's wheel or SDK)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1]
        if re.search(pattern, os.path.basename(path)):
            return Path(path)
    return None


def _import(name: str) -> Runtime:
    module = importlib.import_module(MODULES[name])  # ImportError / OSError when absent or broken
    if name == "tensorrt-rtx":
        targets = tuple(sorted(int(m[2:]) for m in module.ComputeCapability.__members__ if re.fullmatch(r"SM\d+", m)))
        library = _loaded_library(r"^libtensorrt_rtx\.so")
    else:
        targets, library = (), _loaded_library(r"^libnvinfer\.so")
    return Runtime(name, MODULES[name], str(module.__version__), targets, library)


def resolve_runtime(choice: str = "auto") -> Runtime:
    """The runtime asked for; auto: TensorRT where importable, else TensorRT-RTX."""
    if choice not in RUNTIMES:
        raise ResQError(f"unknown runtime {choice!r}: choose one of {', '.join(RUNTIMES)}")
    errors = []
    for name in ("tensorrt", "tensorrt-rtx") if choice == "auto" else (choice,):
        try:
            return _import(name)
        except (ImportError, OSError, AttributeError) as e:
            errors.append(f"import {MODULES[name]}: {e}")
    raise TensorRTMissing(f"{INSTALL_HINT} ({'; '.join(errors)})")


def parse_sm(text: str | int) -> int:
    """'89', 'sm_89', 'SM89' or '8.9' -> 89."""
    s = str(text).strip().lower().removeprefix("sm_").removeprefix("sm")
    m = re.fullmatch(r"(\d+)\.(\d)|(\d{2,3})", s)
    if not m:
        raise ResQError(f"--target-sm {text!r}: give a compute capability such as 89, sm_89 or 8.9")
    return int(m[1]) * 10 + int(m[2]) if m[1] else int(m[3])


def local_sm() -> int | None:
    """The compute capability of this machine's first GPU, or None."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return major * 10 + minor
    except (ImportError, RuntimeError):
        pass
    return None


def choose_target(runtime: Runtime, target_sm: str | int | None, here: int | None) -> int:
    """The SM the plan is built for: the one asked for, else the local GPU; refused where the
    runtime cannot build for it."""
    sm = parse_sm(target_sm) if target_sm is not None else here
    if runtime.name == "tensorrt":
        if here is None:
            raise ResQError("standard TensorRT builds for the GPU of the machine it runs on, and there is none here; "
                            "build on the target GPU, or for an RTX GPU use --runtime tensorrt-rtx --target-sm N "
                            "(N one of 80, 86, 89, 120, 121)")
        if sm != here:
            raise ResQError(f"standard TensorRT builds for the local GPU (sm_{here}), not sm_{sm}: build on that GPU, "
                            "or use --runtime tensorrt-rtx for an RTX target")
        return sm
    choices = ", ".join(map(str, runtime.targets))
    if sm is None:
        raise ResQError(f"no GPU here: name the GPU to build for with --target-sm (TensorRT-RTX {runtime.version} "
                        f"builds for {choices})")
    if sm not in runtime.targets:
        hopper = " (Hopper and other datacenter GPUs need standard TensorRT: --runtime tensorrt on that GPU)" \
            if sm in (90, 100, 103) else ""
        raise ResQError(f"TensorRT-RTX {runtime.version} cannot build for sm_{sm}: it builds for {choices}{hopper}")
    return sm


def cubin_runs_on(arch: str, sm: int) -> bool:
    """A cubin built for `arch` ('86', '90a') runs on sm: same major and no newer minor; an
    arch-specific ('a') cubin only on exactly its SM."""
    base = int(arch.rstrip("af"))
    if arch[-1] in "af":
        return base == sm
    return base // 10 == sm // 10 and base % 10 <= sm % 10


def kernel_archs(plugin_library: Path) -> list[str]:
    """The cubins of libresq_kernels.so beside the plugin library (where the plugins' $ORIGIN
    run path finds it). Asking needs no GPU."""
    path = Path(plugin_library).with_name("libresq_kernels.so")
    if not path.is_file():
        raise TensorRTMissing(f"{path} is missing beside the plugin library: the plugins call it; {PLUGIN_HINT}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # typically the CUDA runtime it links (libcudart) is not on the library path
        raise TensorRTMissing(f"cannot load {path}: {e}") from None
    check_abi(path, getattr(lib, "resq_cuda_abi_version", None))
    try:
        fn = lib.resq_cuda_compiled_archs
    except AttributeError:
        raise ResQError(f"{path} is from an older build (no resq_cuda_compiled_archs): rebuild it with "
                        "`cmake --build build`") from None
    fn.restype = ctypes.c_char_p
    return [a for a in fn().decode().split(",") if a]


def check_kernel_target(archs: list[str], sm: int) -> None:
    """Refuse, before building, a target our kernels cannot run on: the plan would build and fail
    at its first call."""
    if sm < MIN_KERNEL_SM:
        raise ResQError(f"the resq CUDA kernels need sm_{MIN_KERNEL_SM} or newer (int4/int8 tensor-core MMA); "
                        f"sm_{sm} cannot run them")
    if not any(cubin_runs_on(a, sm) for a in archs):
        raise ResQError(f"libresq_kernels.so holds no code for sm_{sm} (it has {', '.join('sm_' + a for a in archs)}): "
                        f"rebuild it with -DRESQ_CUDA_ARCHS=\"{';'.join(archs + [str(sm)])}\" "
                        "(`cmake -S . -B build -DRESQ_CUDA_ARCHS=... && cmake --build build`)")


def worker_environment(runtime: Runtime, link_dir: Path) -> dict[str, str]:
    """The environment of the build process. TensorRT-RTX's ONNX parser dlopens the unversioned
    `libtensorrt_rtx.so` at the first plugin node, which its wheel does not ship (the process
    aborts): a link of that name in `link_dir`, put on LD_LIBRARY_PATH, which the dynamic loader
    reads only when a process starts, hence the separate process."""
    env = dict(os.environ)
    lib = runtime.library
    if runtime.name == "tensorrt-rtx" and lib is not None and not (lib.parent / "libtensorrt_rtx.so").exists():
        link = Path(link_dir) / "libtensorrt_rtx.so"
        link.symlink_to(lib)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(link_dir), env.get("LD_LIBRARY_PATH")) if p)
    return env
