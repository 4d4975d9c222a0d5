// The fused CUDA kernels, compiled at run time by NVRTC (helper.cpp: `kernels()`), so that one
// binary serves every GPU architecture without nvcc at build time. build.rs embeds this file into
// helper.cpp as a string; edit it as CUDA C.
typedef unsigned int u32;
__device__ __forceinline__ float lo(u32 v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }
// Round to nearest even, as libtorch rounds fp32 to bf16 (NaN stays NaN).
__device__ __forceinline__ u32 bf16_bits(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ u32 pack(float a, float b) { return bf16_bits(a) | (bf16_bits(b) << 16); }

// x [rows = B·N·H, D] bf16, tables [N, D]: cos repeated per pair, sin signed (−sin, +sin).
// out = x·cos + swap(x)·sin·sign, 8 elements (4 pairs) per thread; sign −1 is the transpose (the
// backward).
extern "C" __global__ void rope_bf16(const uint4* __restrict__ x, const uint4* __restrict__ cosv,
                                     const uint4* __restrict__ sinv, uint4* __restrict__ out,
                                     long long vecs, int heads, long long tokens, int row_vecs,
                                     float sign) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= vecs) return;
  long long row = i / row_vecs;
  long long t = (long long)(i - row * row_vecs) + ((row / heads) % tokens) * row_vecs;
  uint4 xv = x[i], cv = cosv[t], sv = sinv[t];
  u32 xs[4] = {xv.x, xv.y, xv.z, xv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w},
      ss[4] = {sv.x, sv.y, sv.z, sv.w}, os[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float x0 = lo(xs[k]), x1 = hi(xs[k]);
    os[k] = pack(x0 * lo(cs[k]) + sign * x1 * lo(ss[k]), x1 * hi(cs[k]) + sign * x0 * hi(ss[k]));
  }
  out[i] = make_uint4(os[0], os[1], os[2], os[3]);
}

// RMSNorm over a whole row (all heads of one token) followed by RoPE on each head, for q and k of
// self-attention: x [rows = B·N, D] bf16, weight [D] bf16, tables [N, head_dim] bf16 (as rope_bf16).
// The normalised value is rounded to bf16 as libtorch's rms_norm rounds its output, then rotated
// and rounded again: the two-kernel result in one pass. One block per row, one thread per 8
// elements (blockDim.x is row_vecs rounded up to whole warps).
extern "C" __global__ void rms_rope_bf16(const uint4* __restrict__ x, const uint4* __restrict__ w,
                                         const uint4* __restrict__ cosv,
                                         const uint4* __restrict__ sinv, uint4* __restrict__ out,
                                         int row_vecs, int head_vecs, long long tokens, float eps) {
  __shared__ float partial[32];
  const long long row = blockIdx.x;
  const int c = threadIdx.x, lane = c & 31, warp = c >> 5;
  const bool active = c < row_vecs;
  uint4 xv = active ? x[row * row_vecs + c] : make_uint4(0u, 0u, 0u, 0u);
  u32 xs[4] = {xv.x, xv.y, xv.z, xv.w};
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) sq += lo(xs[k]) * lo(xs[k]) + hi(xs[k]) * hi(xs[k]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  if (lane == 0) partial[warp] = sq;
  __syncthreads();
  if (warp == 0) {
    float t = lane < (int)((blockDim.x + 31) >> 5) ? partial[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (lane == 0) partial[0] = t;
  }
  __syncthreads();
  if (!active) return;
  const float rstd = rsqrtf(partial[0] / (float)(row_vecs * 8) + eps);
  const long long t = (row % tokens) * head_vecs + c % head_vecs;
  uint4 wv = w[c], cv = cosv[t], sv = sinv[t];
  u32 ws[4] = {wv.x, wv.y, wv.z, wv.w}, cs[4] = {cv.x, cv.y, cv.z, cv.w},
      ss[4] = {sv.x, sv.y, sv.z, sv.w}, os[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float n0 = lo(bf16_bits(lo(xs[k]) * rstd * lo(ws[k])));
    float n1 = lo(bf16_bits(hi(xs[k]) * rstd * hi(ws[k])));
    os[k] = pack(n0 * lo(cs[k]) + n1 * lo(ss[k]), n1 * hi(cs[k]) + n0 * hi(ss[k]));
  }
  out[row * row_vecs + c] = make_uint4(os[0], os[1], os[2], os[3]);
}

// Row-wise float8 e4m3fn quantisation of x [rows, K] bf16 (K a multiple of 8) in one read of the
// row from memory: scale = max(amax, 1e-12) · fl(1/448) and codes = e4m3(x · fl(1 / scale)),
// rounded to nearest even — bit for bit what libtorch's kernels give for `amax / 448`, the
// reciprocal and the product.
// One block per row; the second read of the row comes from L2.
extern "C" __global__ void quantize_rows_e4m3(const uint4* __restrict__ x,
                                              unsigned short* __restrict__ codes,
                                              float* __restrict__ scales, int row_vecs) {
#if __CUDA_ARCH__ >= 890
  __shared__ float partial[32];
  const long long row = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint4* xr = x + row * row_vecs;
  float amax = 0.f;
  for (int c = threadIdx.x; c < row_vecs; c += blockDim.x) {
    uint4 v = xr[c];
    u32 vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) amax = fmaxf(amax, fmaxf(fabsf(lo(vs[k])), fabsf(hi(vs[k]))));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (lane == 0) partial[warp] = amax;
  __syncthreads();
  if (warp == 0) {
    float m = lane < (int)((blockDim.x + 31) >> 5) ? partial[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) partial[0] = m;
  }
  __syncthreads();
  // libtorch divides by a scalar as a product with its fp32 reciprocal.
  const float scale = fmaxf(partial[0], 1e-12f) * __fdiv_rn(1.f, 448.f);
  const float inv = __fdiv_rn(1.f, scale);
  if (threadIdx.x == 0) scales[row] = scale;
  unsigned short* cr = codes + row * (long long)row_vecs * 4;
  for (int c = threadIdx.x; c < row_vecs; c += blockDim.x) {
    uint4 v = xr[c];
    u32 vs[4] = {v.x, v.y, v.z, v.w};
    unsigned short q[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      // The first operand lands in the upper byte: (hi, lo) keeps memory order.
      asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;"
          : "=h"(q[k]) : "f"(hi(vs[k]) * inv), "f"(lo(vs[k]) * inv));
    }
    reinterpret_cast<uint2*>(cr)[c] =
        make_uint2(q[0] | ((u32)q[1] << 16), q[2] | ((u32)q[3] << 16));
  }
#endif
}

// out = x + y·gate for x, y [rows, D] bf16 and gate [gate_rows, D] bf16 (gate_rows 1, or one row
// per `rows_per_gate` rows: one per sample), 8 elements per thread; with x null, out = y·gate.
extern "C" __global__ void gated_add_bf16(const uint4* __restrict__ x, const uint4* __restrict__ y,
                                          const uint4* __restrict__ gate, uint4* __restrict__ out,
                                          long long vecs, int row_vecs, long long rows_per_gate,
                                          int gate_rows) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= vecs) return;
  long long row = i / row_vecs;
  long long col = i - row * row_vecs;
  long long g_row = gate_rows == 1 ? 0 : row / rows_per_gate;
  uint4 yv = y[i], gv = gate[g_row * row_vecs + col];
  uint4 xv = x ? x[i] : make_uint4(0u, 0u, 0u, 0u);
  u32 xs[4] = {xv.x, xv.y, xv.z, xv.w}, ys[4] = {yv.x, yv.y, yv.z, yv.w},
      gs[4] = {gv.x, gv.y, gv.z, gv.w}, os[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    os[k] = pack(lo(xs[k]) + lo(ys[k]) * lo(gs[k]), hi(xs[k]) + hi(ys[k]) * hi(gs[k]));
  }
  out[i] = make_uint4(os[0], os[1], os[2], os[3]);
}

// AI Toolkit's 4-bit weight [rows, K] dequantised to bf16: packed [rows, K/2] bytes (the even input
// in the low nibble), scale [rows, K/64] bf16, zero point [rows, K/64] uint8, and
// w = (q − zp)·scale rounded once to bf16 (libtorch's bf16 subtract is exact here, its multiply
// rounds the fp32 product). 8 outputs (4 packed bytes) per thread; a group of 64 is 8 threads.
extern "C" __global__ void dequant_uint4_bf16(const u32* __restrict__ packed,
                                              const unsigned short* __restrict__ scale,
                                              const unsigned char* __restrict__ zero_point,
                                              uint4* __restrict__ out, long long vecs,
                                              int row_vecs) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= vecs) return;
  long long row = i / row_vecs;
  long long col = i - row * row_vecs;
  long long g = row * (row_vecs / 8) + col / 8;
  const float s = __uint_as_float((u32)scale[g] << 16);
  const int z = zero_point[g];
  const u32 p = packed[i];
  u32 os[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int byte = (p >> (8 * k)) & 0xff;
    os[k] = pack(__fmul_rn((float)((byte & 15) - z), s), __fmul_rn((float)((byte >> 4) - z), s));
  }
  out[i] = make_uint4(os[0], os[1], os[2], os[3]);
}
