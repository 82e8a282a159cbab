"""ctypes access to the native libraries built from plugins/ (docs/plugins.md): the CPU references
(libresq_cpu_ref.so) and the CUDA kernels (libresq_kernels.so). Nothing here is imported by the
rest of the package; loading happens on first use."""
