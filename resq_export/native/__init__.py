"""ctypes access to the native libraries built from plugins/ (docs/plugins.md): the CPU references
(libresq_cpu_ref.so) and the CUDA kernels (libresq_kernels.so). Libraries load on first use; only
the tests, tools/bench_kernels.py and the engine stage (to find build/plugins/) import this."""
