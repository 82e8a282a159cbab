// Integer tensor-core MMAs (mma.sync, PTX ISA "Matrix fragments for mma.m16n8k32 / m16n8k64") and
// the in-register INT4 -> INT8 unpacking of the Hopper path.
//
// Fragments, g = lane / 4, q = lane % 4, A row-major 16 x K, B "col" (one output channel's K codes
// contiguous), 32-bit registers filled from memory in little-endian order:
//   m16n8k64 (4-bit): a0: row g,   k 8q..8q+7     a1: row g+8, k 8q..8q+7
//                     a2: row g,   k 32+8q..      a3: row g+8, k 32+8q..
//                     b0: col g,   k 8q..8q+7     b1: col g,   k 32+8q..
//   m16n8k32 (8-bit): the same with 4 codes per register (k 4q.., 16+4q..)
//   C/D: c0,c1: row g, cols 2q, 2q+1; c2,c3: row g+8, same cols.
// Our packing (element 2j in the low nibble) puts element k at bit 4*(k%8) of a register, which is
// the order PTX expects, so packed codes go to the tensor cores without any shuffling.
#pragma once
#include <stdint.h>

namespace resq {

__device__ __forceinline__ void mma_u4s4(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.s32.u4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_u8s8(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 8 unsigned nibbles (element i at bits 4i) -> codes 0..3 and 4..7 as bytes
__device__ __forceinline__ void unpack_u4(uint32_t v, uint32_t& lo, uint32_t& hi) {
  const uint32_t even = v & 0x0F0F0F0Fu, odd = (v >> 4) & 0x0F0F0F0Fu;
  lo = __byte_perm(even, odd, 0x5140);
  hi = __byte_perm(even, odd, 0x7362);
}

// the same for two's-complement nibbles, sign-extended per byte: (u ^ 8) - 8
__device__ __forceinline__ void unpack_s4(uint32_t v, uint32_t& lo, uint32_t& hi) {
  unpack_u4(v, lo, hi);
  lo = __vsub4(lo ^ 0x08080808u, 0x08080808u);
  hi = __vsub4(hi ^ 0x08080808u, 0x08080808u);
}

// One k64 tile of the 4-bit part as two u8 x s8 MMAs. The k order inside each MMA is a
// permutation of the physical k (logical 4q+i <- physical 8q+i, logical 16+4q+i <- 8q+4+i);
// A and B use the same permutation, so the dot products are unchanged.
__device__ __forceinline__ void mma_u4s4_via_int8(int (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t a8[4], b8[2];
    unpack_u4(a[2 * half], a8[0], a8[2]);
    unpack_u4(a[2 * half + 1], a8[1], a8[3]);
    unpack_s4(b[half], b8[0], b8[1]);
    mma_u8s8(c, a8, b8);
  }
}

}  // namespace resq
