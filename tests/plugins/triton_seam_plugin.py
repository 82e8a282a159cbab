"""pytest plugin (`-p triton_seam_plugin`, this folder on the path): every launch of
resq_export.kernels.launch goes through libresq_triton.so's launch seam (native/seam.py), so the
kernel tests (tests/kernels) also check the launch policy against the embedded cubins' metadata.
RESQ_TRITON_SEAM=record (default; CPU, the interpreter executes the recorded bytes) or cuda (a GPU:
the cubins run); RESQ_TRITON_LIBRARY picks the library (default build/plugins)."""

import os
from pathlib import Path

_runner = None


def pytest_collection_finish(session):
    """After tests/kernels/conftest.py set TRITON_INTERPRET and the kernels were imported."""
    global _runner
    from resq_export.kernels import launch
    from resq_export.kernels.configs import all_configs
    from resq_export.native.seam import SeamRunner

    mode = os.environ.get("RESQ_TRITON_SEAM", "record")
    path = os.environ.get("RESQ_TRITON_LIBRARY")
    _runner = SeamRunner(all_configs(), mode, Path(path) if path else None)
    if mode == "cuda":
        from resq_export.native import triton

        triton.prepare(0, _runner.path)
    launch._run = _runner


def pytest_terminal_summary(terminalreporter):
    if _runner is not None:
        total = sum(_runner.launches.values())
        terminalreporter.write_line(f"triton seam ({_runner.mode}): {total} launches of {len(_runner.launches)} "
                                    f"configurations: {dict(sorted(_runner.launches.items()))}")
