"""GPU kernels in Triton. Importing this package needs no Triton; the kernel modules import it."""
