"""Every comparison tolerance of the tests, named by what is compared and why it is not zero.
Exact comparisons (rtol=0, atol=0: packing, the layerwise pieces, integer parts) are written as such
where they are made."""

# ONNX Runtime against the reference executor, relative to the largest |logit|: the float islands make
# every quantiser see the same bits, only the float32 outside them differs (summation order, libm).
ORT_VS_REFERENCE = 1e-4

# Our decoder against Hugging Face transformers (float32, different summation orders).
FLOAT_VS_HF = dict(rtol=1e-4, atol=1e-5)

# Folds, rotations, permutations and the online Hadamard without quantisation: exact in real arithmetic,
# float32 rounding of the rotated weights in practice (atol scaled by the largest |logit|).
TRANSFORMS_RTOL, TRANSFORMS_ATOL_REL = 1e-4, 2e-5

# Orthogonality and exact products of float64 matrices.
FLOAT64_EXACT = dict(atol=1e-12, rtol=0)

# A float32 C++ reference against the same float32 arithmetic in torch (order of a few sums).
CPU_FLOAT32 = dict(rtol=1e-5, atol=1e-5)
