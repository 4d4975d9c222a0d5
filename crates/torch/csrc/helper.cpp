// The small C++ helper: what tch 0.24 does not expose. Everything here reaches CUDA through
// libtorch's device-generic interfaces (allocator, guard, event), so the helper links only against
// the CPU libraries and works once libtorch_cuda.so has been dlopen'ed.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/core/AllocatorConfig.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return -1;
  } catch (...) {
    last_error = "unknown C++ exception";
    return -1;
  }
}

c10::DeviceAllocator* cuda_allocator() {
  return c10::getDeviceAllocator(c10::DeviceType::CUDA);
}

c10::Stream unpack(int64_t id, int64_t device_index) {
  return c10::Stream::unpack3(id, static_cast<c10::DeviceIndex>(device_index),
                              c10::DeviceType::CUDA);
}
}  // namespace

extern "C" {

const char* wl_last_error() { return last_error.c_str(); }

// out[0..6]: allocated current, allocated peak, reserved current, reserved peak, num_ooms,
// num_alloc_retries.
int wl_cuda_memory_stats(int64_t device, int64_t* out) {
  return guarded([&] {
    auto s = cuda_allocator()->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
    out[0] = s.allocated_bytes[agg].current;
    out[1] = s.allocated_bytes[agg].peak;
    out[2] = s.reserved_bytes[agg].current;
    out[3] = s.reserved_bytes[agg].peak;
    out[4] = s.num_ooms;
    out[5] = s.num_alloc_retries;
  });
}

int wl_cuda_reset_peak(int64_t device) {
  return guarded([&] { cuda_allocator()->resetPeakStats(static_cast<c10::DeviceIndex>(device)); });
}

int wl_cuda_empty_cache() {
  return guarded([&] { cuda_allocator()->emptyCache(); });
}

// Free and total device memory in bytes, as the driver reports them.
int wl_cuda_memory_info(int64_t device, int64_t* free_bytes, int64_t* total_bytes) {
  return guarded([&] {
    auto info = cuda_allocator()->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    *free_bytes = static_cast<int64_t>(info.first);
    *total_bytes = static_cast<int64_t>(info.second);
  });
}

int wl_cuda_synchronize(int64_t device) {
  return guarded([&] { at::accelerator::synchronizeDevice(static_cast<c10::DeviceIndex>(device)); });
}

// --- streams and events ----------------------------------------------------------------------

// A stream from libtorch's pool; returned as its packed id.
int wl_stream_from_pool(int64_t device, int high_priority, int64_t* stream_id) {
  return guarded([&] {
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    auto s = impl.getStreamFromGlobalPool(
        c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)), high_priority != 0);
    *stream_id = s.id();
  });
}

int wl_stream_current(int64_t device, int64_t* stream_id) {
  return guarded([&] {
    auto s = at::accelerator::getCurrentStream(static_cast<c10::DeviceIndex>(device));
    *stream_id = s.id();
  });
}

// Makes `stream_id` the current stream of its device and returns the one it replaces.
int wl_stream_set_current(int64_t device, int64_t stream_id, int64_t* previous_id) {
  return guarded([&] {
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    auto prev = impl.exchangeStream(unpack(stream_id, device));
    *previous_id = prev.id();
  });
}

int wl_stream_synchronize(int64_t device, int64_t stream_id) {
  return guarded([&] { unpack(stream_id, device).synchronize(); });
}

int wl_event_new(void** event) {
  return guarded([&] { *event = new c10::Event(c10::DeviceType::CUDA); });
}

void wl_event_free(void* event) { delete static_cast<c10::Event*>(event); }

int wl_event_record(void* event, int64_t device, int64_t stream_id) {
  return guarded([&] { static_cast<c10::Event*>(event)->record(unpack(stream_id, device)); });
}

// The stream waits (on the device, not the host) for the event.
int wl_event_block(void* event, int64_t device, int64_t stream_id) {
  return guarded([&] { static_cast<c10::Event*>(event)->block(unpack(stream_id, device)); });
}

int wl_event_synchronize(void* event) {
  return guarded([&] { static_cast<c10::Event*>(event)->synchronize(); });
}

// Tells the caching allocator that `tensor` is used on another stream, so its memory is not
// reused before that stream's queued work is done.
int wl_tensor_record_stream(const at::Tensor* tensor, int64_t device, int64_t stream_id) {
  return guarded([&] {
    cuda_allocator()->recordStream(tensor->storage().data_ptr(), unpack(stream_id, device));
  });
}

// --- scaled dot-product attention back-ends ---------------------------------------------------

int wl_sdp_enable(int flash, int mem_efficient, int math, int cudnn) {
  return guarded([&] {
    auto& ctx = at::globalContext();
    ctx.setSDPUseFlash(flash != 0);
    ctx.setSDPUseMemEfficient(mem_efficient != 0);
    ctx.setSDPUseMath(math != 0);
    ctx.setSDPUseCuDNN(cudnn != 0);
  });
}

int wl_set_allow_tf32(int allow) {
  return guarded([&] {
    at::globalContext().setFloat32MatmulPrecision(allow ? "high" : "highest");
  });
}

// --- page-locked host memory and the allocator's memory cap ---------------------------------

// `bytes` bytes (uint8) of uninitialised page-locked host memory.
int wl_empty_pinned(int64_t bytes, at::Tensor** out) {
  return guarded([&] {
    *out = new at::Tensor(
        at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true)));
  });
}

// dst.copy_(src, non_blocking): tch binds copy_ only as a blocking copy.
int wl_copy(at::Tensor* dst, const at::Tensor* src, int non_blocking) {
  return guarded([&] { dst->copy_(*src, non_blocking != 0); });
}

// Caps the CUDA caching allocator of this process at `fraction` of each device's memory (beyond
// it, allocations fail as out-of-memory). Goes through the device-generic allocator settings,
// which the CUDA allocator reads when it first initialises a device: call it before any tensor is
// put on the GPU. Earlier settings (PYTORCH_CUDA_ALLOC_CONF) are kept.
int wl_set_memory_fraction(double fraction) {
  return guarded([&] {
    TORCH_CHECK(fraction > 0.0 && fraction <= 1.0, "the memory fraction must be in (0, 1], got ",
                fraction);
    std::ostringstream settings;
    const auto previous = c10::CachingAllocator::getAllocatorSettings();
    if (!previous.empty()) settings << previous << ",";
    settings << "per_process_memory_fraction:" << fraction;
    c10::CachingAllocator::setAllocatorSettings(settings.str());
  });
}

}  // extern "C"

// --- fp8 (float8 e4m3fn) linears --------------------------------------------------------------
//
// A frozen weight W [out, in] is stored as e4m3fn codes with one fp32 scale per output channel,
// W ≈ codes · scale. The fp8 linear quantises its input the same way, one scale per token (row),
// multiplies the codes with a scaled matmul and returns the compute dtype:
//
//   y = (codes_x · s_x) (codes_W · s_W)ᵀ + b
//
// Its backward gives only the input gradient, dX = dY · dequant(W), in the compute dtype: the base
// weights are frozen, so no weight gradient is ever needed.
namespace {

// The largest finite e4m3fn value: a row's largest magnitude maps onto it.
constexpr double kE4m3Max = 448.0;
// Lower bound of a row's largest magnitude, so that an all-zero row gets a finite scale.
constexpr double kMinAmax = 1e-12;

// Row-wise quantisation along the last dimension: scale = max|x| / 448 (fp32, shape [..., 1]) and
// codes = round_e4m3(x · (1 / scale)), computed in fp32 and rounded once to the nearest code.
bool fused_quantize_rows(const at::Tensor& x, at::Tensor& codes, at::Tensor& scale);

std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x) {
  if (x.dim() == 2) {
    at::Tensor codes, scale;
    if (fused_quantize_rows(x, codes, scale)) return {codes, scale};
  }
  // The largest magnitude of a bf16/f16/f32 row is exact in its own dtype.
  auto amax = at::linalg_vector_norm(x, INFINITY, at::IntArrayRef{-1}, /*keepdim=*/true)
                  .to(at::kFloat)
                  .clamp_min(kMinAmax);
  auto scale = amax / kE4m3Max;
  auto codes = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  at::mul_out(codes, x, scale.reciprocal());
  return {codes, scale};
}

// codes · scale in `kind`: the codes are exact in bf16/f16/f32, the product is rounded once.
at::Tensor dequantize(const at::Tensor& codes, const at::Tensor& scale, at::ScalarType kind) {
  auto w = codes.to(kind);
  w.mul_(scale);
  return w;
}

// (x_codes · x_scale)(w_codes · w_scale)ᵀ + bias for x_codes [M, K], w_codes [N, K], scales
// [M, 1] and [N, 1], in `kind`.
at::Tensor scaled_matmul(const at::Tensor& x_codes, const at::Tensor& x_scale,
                         const at::Tensor& w_codes, const at::Tensor& w_scale,
                         const at::Tensor& bias, at::ScalarType kind) {
  if (x_codes.is_cuda()) {
    // Row-wise scaled GEMM (sm89+): both scales and the bias are applied in its epilogue, which
    // takes a bias only for 16-bit outputs. Fast accumulation, as torchao uses for forwards.
    const bool bias_in_epilogue = bias.defined() && kind != at::kFloat;
    auto y = at::_scaled_mm(x_codes, w_codes.t(), x_scale, w_scale.view({1, -1}),
                            bias_in_epilogue ? std::optional<at::Tensor>(bias.to(kind))
                                             : std::nullopt,
                            std::nullopt, kind, /*use_fast_accum=*/true);
    if (bias.defined() && !bias_in_epilogue) y.add_(bias);
    return y;
  }
  // libtorch's CPU kernel takes only one scale per matrix: multiply the codes exactly (fp32
  // accumulation of e4m3 products), then apply the row and column scales.
  auto one = at::ones({}, x_codes.options().dtype(at::kFloat));
  auto y = at::_scaled_mm(x_codes, w_codes.t(), one, one, std::nullopt, std::nullopt, at::kFloat,
                          /*use_fast_accum=*/false);
  y.mul_(x_scale).mul_(w_scale.view({1, -1}));
  if (bias.defined()) y.add_(bias);
  return y.to(kind);
}

// The fp8 linear on x [..., in] with codes [out, in] and scales [out, 1]: y [..., out] in x's dtype.
at::Tensor fp8_linear_forward(const at::Tensor& x, const at::Tensor& codes,
                              const at::Tensor& scale, const at::Tensor& bias) {
  TORCH_CHECK(codes.scalar_type() == at::kFloat8_e4m3fn, "fp8 linear: codes must be float8_e4m3fn");
  TORCH_CHECK(x.size(-1) == codes.size(1), "fp8 linear: input has ", x.size(-1),
              " features, the weight expects ", codes.size(1));
  auto [x_codes, x_scale] = quantize_rows(x.reshape({-1, x.size(-1)}));
  auto y = scaled_matmul(x_codes, x_scale, codes, scale, bias, x.scalar_type());
  auto sizes = x.sizes().vec();
  sizes.back() = codes.size(0);
  return y.view(sizes);
}

// The input gradient of the fp8 linear from the saved (codes, scale): dX = dY · dequant(W).
at::Tensor fp8_linear_input_grad(torch::autograd::AutogradContext* ctx, const at::Tensor& grad) {
  auto saved = ctx->get_saved_variables();
  return grad.matmul(dequantize(saved[0], saved[1], grad.scalar_type()));
}

// The fp8 linear as an autograd function of x alone. The backward needs only the frozen weight,
// which the model holds anyway: nothing of the activations is saved. (Autograd functions take no
// undefined inputs, hence one function with a bias and one without.)
struct Fp8Linear : public torch::autograd::Function<Fp8Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& codes, const at::Tensor& scale,
                            const at::Tensor& bias) {
    ctx->save_for_backward({codes, scale});
    return fp8_linear_forward(x, codes, scale, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    return {fp8_linear_input_grad(ctx, grad_outputs[0]), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

struct Fp8LinearNoBias : public torch::autograd::Function<Fp8LinearNoBias> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& codes, const at::Tensor& scale) {
    ctx->save_for_backward({codes, scale});
    return fp8_linear_forward(x, codes, scale, at::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    return {fp8_linear_input_grad(ctx, grad_outputs[0]), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Row-wise e4m3 quantisation of `x` along its last dimension (see quantize_rows).
int wl_fp8_quantize_rows(const at::Tensor* x, at::Tensor** codes, at::Tensor** scale) {
  return guarded([&] {
    auto [c, s] = quantize_rows(*x);
    *codes = new at::Tensor(std::move(c));
    *scale = new at::Tensor(std::move(s));
  });
}

// The fp8 linear; `bias` may be null. With grad mode on and `x` requiring grad, the result carries
// the custom backward; otherwise it is the scaled matmul alone.
int wl_fp8_linear(const at::Tensor* x, const at::Tensor* codes, const at::Tensor* scale,
                  const at::Tensor* bias, at::Tensor** out) {
  return guarded([&] {
    at::Tensor y;
    if (!(at::GradMode::is_enabled() && x->requires_grad())) {
      y = fp8_linear_forward(*x, *codes, *scale, bias != nullptr ? *bias : at::Tensor());
    } else if (bias != nullptr) {
      y = Fp8Linear::apply(*x, *codes, *scale, *bias);
    } else {
      y = Fp8LinearNoBias::apply(*x, *codes, *scale);
    }
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"

// --- recorded self-attention ------------------------------------------------------------------
//
// Block-level checkpointing recomputes each block's forward to rebuild its graph. Attention is
// the one part of that forward whose result can be kept cheaply: its output is one activation-
// sized tensor and its softmax statistics (log-sum-exp) are tiny. A "recorded" attention runs the
// fused kernel once, without a graph, and keeps (out, lse); the "replay" during the recompute
// returns that output and, in the backward, calls the same kernel family's backward with the
// recomputed q, k, v — so the recompute skips attention's forward, the largest single kernel of
// the block at long sequence lengths.
namespace {

// ATen's sdp::SDPBackend numbering, as at::_fused_sdp_choice returns it.
enum Backend : int64_t { kMath = 0, kFlash = 1, kEfficient = 2, kCudnn = 3 };

struct RecordedAttention {
  int64_t backend;
  at::Tensor out, lse, philox_seed, philox_offset, cum_seq_q, cum_seq_k;
  int64_t max_q = 0, max_k = 0;

  // The CUDA kernels' results, in the order both cuDNN's and flash's forward return them.
  template <typename Results>
  void keep(const Results& r) {
    out = std::get<0>(r);
    lse = std::get<1>(r);
    cum_seq_q = std::get<2>(r);
    cum_seq_k = std::get<3>(r);
    max_q = std::get<4>(r).expect_int();
    max_k = std::get<5>(r).expect_int();
    philox_seed = std::get<6>(r);
    philox_offset = std::get<7>(r);
  }
};

// The incoming gradient laid out like the recorded output. cuDNN's backward reads both with the
// output's strides: measured on an H100 with libtorch 2.11, a gradient with other strides (a
// contiguous [B, H, L, d] one against the output's [B, L, H, d] layout) gives wrong gradients —
// through libtorch's own autograd too. In the transformer the gradient arrives in the output's
// layout (the heads are merged by a transpose), so this copies nothing there.
at::Tensor backward_layout(const at::Tensor& grad, const at::Tensor& out) {
  if (grad.strides() == out.strides()) return grad;
  auto g = at::empty_strided(out.sizes(), out.strides(), out.options());
  g.copy_(grad);
  return g;
}

struct ReplayedAttention : public torch::autograd::Function<ReplayedAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, int64_t record_address) {
    const auto* rec = reinterpret_cast<const RecordedAttention*>(record_address);
    ctx->save_for_backward({q, k, v, rec->out, rec->lse});
    ctx->saved_data["backend"] = rec->backend;
    ctx->saved_data["philox_seed"] = rec->philox_seed;
    ctx->saved_data["philox_offset"] = rec->philox_offset;
    ctx->saved_data["cum_seq_q"] = rec->cum_seq_q;
    ctx->saved_data["cum_seq_k"] = rec->cum_seq_k;
    ctx->saved_data["max_q"] = rec->max_q;
    ctx->saved_data["max_k"] = rec->max_k;
    // A new tensor object over the recorded output's storage: autograd attaches this function
    // to it, and the record itself stays untouched.
    return rec->out.detach();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const auto grad = backward_layout(grad_outputs[0], out);
    const auto tensor = [&](const char* key) { return ctx->saved_data[key].toTensor(); };
    const auto integer = [&](const char* key) { return ctx->saved_data[key].toInt(); };
    std::tuple<at::Tensor, at::Tensor, at::Tensor> g;
    switch (integer("backend")) {
      case kCudnn:
        g = at::_scaled_dot_product_cudnn_attention_backward(
            grad, q, k, v, out, lse, tensor("philox_seed"), tensor("philox_offset"), at::Tensor(),
            tensor("cum_seq_q"), tensor("cum_seq_k"), integer("max_q"), integer("max_k"), 0.0,
            false);
        break;
      case kFlash:
        if (q.is_cuda()) {
          g = at::_scaled_dot_product_flash_attention_backward(
              grad, q, k, v, out, lse, tensor("cum_seq_q"), tensor("cum_seq_k"), integer("max_q"),
              integer("max_k"), 0.0, false, tensor("philox_seed"), tensor("philox_offset"));
        } else {
          g = at::_scaled_dot_product_flash_attention_for_cpu_backward(grad, q, k, v, out, lse,
                                                                       0.0, false);
        }
        break;
      default:
        TORCH_CHECK(false, "recorded attention: no backward for back-end ", integer("backend"));
    }
    return {std::get<0>(g), std::get<1>(g), std::get<2>(g), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// softmax(q kᵀ/√d) v for q, k, v [B, H, L, d] (no mask, no dropout). When libtorch's choice for
// these inputs is a fused kernel with a usable backward (cuDNN, flash, CPU flash), `*record`
// receives what a later replay needs; otherwise it is null and the output comes from
// scaled_dot_product_attention.
int wl_attention_record(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                        void** record, at::Tensor** out) {
  return guarded([&] {
    *record = nullptr;
    const int64_t backend =
        at::_fused_sdp_choice(*q, *k, *v, std::nullopt, 0.0, false, std::nullopt, false);
    auto rec = std::make_unique<RecordedAttention>();
    rec->backend = backend;
    if (backend == kCudnn) {
      rec->keep(at::_scaled_dot_product_cudnn_attention(*q, *k, *v, std::nullopt,
                                                        /*compute_log_sumexp=*/true));
    } else if (backend == kFlash && q->is_cuda()) {
      rec->keep(at::_scaled_dot_product_flash_attention(*q, *k, *v));
    } else if (backend == kFlash) {
      auto r = at::_scaled_dot_product_flash_attention_for_cpu(*q, *k, *v);
      rec->out = std::get<0>(r);
      rec->lse = std::get<1>(r);
    } else {
      *out = new at::Tensor(at::scaled_dot_product_attention(*q, *k, *v));
      return;
    }
    *out = new at::Tensor(rec->out);
    *record = rec.release();
  });
}

void wl_attention_free(void* record) { delete static_cast<RecordedAttention*>(record); }

// The recorded output again, as a function of the (recomputed) q, k, v for autograd: its backward
// is the fused kernel's backward with the recorded output and log-sum-exp.
int wl_attention_replay(const void* record, const at::Tensor* q, const at::Tensor* k,
                        const at::Tensor* v, at::Tensor** out) {
  return guarded([&] {
    const auto* rec = static_cast<const RecordedAttention*>(record);
    TORCH_CHECK(rec->out.sizes() == q->sizes(), "recorded attention: output ", rec->out.sizes(),
                " does not match the query ", q->sizes());
    *out = new at::Tensor(
        ReplayedAttention::apply(*q, *k, *v, reinterpret_cast<int64_t>(rec)));
  });
}

}  // extern "C"

// --- fused kernels compiled at run time (NVRTC) -------------------------------------------------
//
// A few memory-bound steps of the transformer block take several libtorch kernels each (RoPE: a
// flip, a multiply and an addcmul, three passes over q and k). Their fused versions are CUDA C
// compiled once per process by NVRTC, which every CUDA build of PyTorch ships, and launched
// through the driver API on libtorch's current stream. Both libraries are opened with dlopen, so
// nothing here is needed to build or to run on a CPU machine; when either is missing, the callers
// keep the libtorch path.
#include <dlfcn.h>

#include <mutex>
#include <vector>

namespace {

// The driver and NVRTC entry points used here, with opaque handle types.
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using CUstream = void*;
using nvrtcResult = int;
using nvrtcProgram = void*;

struct Rtc {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuCtxGetCurrent)(CUcontext*);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void**, void**);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram*, const char*, const char*, int,
                                    const char* const*, const char* const*);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetPTX)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t*);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char*);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram*);
  CUfunction rope_bf16 = nullptr;
  CUfunction gated_add_bf16 = nullptr;
  CUfunction rms_rope_bf16 = nullptr;
  CUfunction quantize_rows_e4m3 = nullptr;
  CUfunction dequant_uint4_bf16 = nullptr;
  int arch = 0;  // compute capability, major·10 + minor
  std::string error;  // why the fused kernels are unavailable; empty when they are
};

// bf16 is handled as its bit pattern: no CUDA headers are needed at run time.
// The kernels' CUDA C lives in csrc/kernels.cu; build.rs wraps it in a raw string literal.
constexpr const char* kKernelSource =
#include "kernels.cu.inc"
    ;

template <typename T>
bool bind(void* lib, const char* name, T& slot) {
  slot = reinterpret_cast<T>(dlsym(lib, name));
  return slot != nullptr;
}

// NVRTC next to libtorch (PyTorch's wheels keep it in site-packages/nvidia/cu13/lib) or anywhere
// the loader finds it.
void* open_nvrtc() {
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) {
    if (void* h = dlopen(name, RTLD_NOW | RTLD_GLOBAL)) return h;
  }
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&at::globalContext), &info) != 0 && info.dli_fname != nullptr) {
    std::string dir(info.dli_fname);
    dir = dir.substr(0, dir.rfind('/'));
    for (const char* rel : {"/../../nvidia/cu13/lib/libnvrtc.so.13",
                            "/../../nvidia/cuda_nvrtc/lib/libnvrtc.so.12"}) {
      if (void* h = dlopen((dir + rel).c_str(), RTLD_NOW | RTLD_GLOBAL)) return h;
    }
  }
  return nullptr;
}

void load_rtc(Rtc& r, int device) {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (cuda == nullptr) { r.error = "libcuda.so.1 not found"; return; }
  void* nvrtc = open_nvrtc();
  if (nvrtc == nullptr) { r.error = "NVRTC (libnvrtc.so) not found"; return; }
  bool ok = bind(cuda, "cuInit", r.cuInit) && bind(cuda, "cuCtxGetCurrent", r.cuCtxGetCurrent) &&
            bind(cuda, "cuCtxSetCurrent", r.cuCtxSetCurrent) &&
            bind(cuda, "cuDeviceGet", r.cuDeviceGet) &&
            bind(cuda, "cuDevicePrimaryCtxRetain", r.cuDevicePrimaryCtxRetain) &&
            bind(cuda, "cuDeviceGetAttribute", r.cuDeviceGetAttribute) &&
            bind(cuda, "cuModuleLoadData", r.cuModuleLoadData) &&
            bind(cuda, "cuModuleGetFunction", r.cuModuleGetFunction) &&
            bind(cuda, "cuLaunchKernel", r.cuLaunchKernel) &&
            bind(nvrtc, "nvrtcCreateProgram", r.nvrtcCreateProgram) &&
            bind(nvrtc, "nvrtcCompileProgram", r.nvrtcCompileProgram) &&
            bind(nvrtc, "nvrtcGetPTXSize", r.nvrtcGetPTXSize) &&
            bind(nvrtc, "nvrtcGetPTX", r.nvrtcGetPTX) &&
            bind(nvrtc, "nvrtcGetProgramLogSize", r.nvrtcGetProgramLogSize) &&
            bind(nvrtc, "nvrtcGetProgramLog", r.nvrtcGetProgramLog) &&
            bind(nvrtc, "nvrtcDestroyProgram", r.nvrtcDestroyProgram);
  if (!ok) { r.error = "a driver or NVRTC entry point is missing"; return; }
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  if (r.cuInit(0) != 0 || r.cuDeviceGet(&dev, device) != 0 ||
      r.cuDevicePrimaryCtxRetain(&ctx, dev) != 0 || r.cuCtxSetCurrent(ctx) != 0) {
    r.error = "the CUDA driver did not give the device's context";
    return;
  }
  int major = 0, minor = 0;
  r.cuDeviceGetAttribute(&major, 75, dev);  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
  r.cuDeviceGetAttribute(&minor, 76, dev);  // ..._MINOR
  r.arch = major * 10 + minor;
  const std::string arch = "--gpu-architecture=compute_" + std::to_string(r.arch);
  const char* options[] = {arch.c_str(), "--use_fast_math"};
  nvrtcProgram prog = nullptr;
  if (r.nvrtcCreateProgram(&prog, kKernelSource, "wanlora_fused.cu", 0, nullptr, nullptr) != 0) {
    r.error = "nvrtcCreateProgram failed";
    return;
  }
  if (r.nvrtcCompileProgram(prog, 2, options) != 0) {
    size_t n = 0;
    r.nvrtcGetProgramLogSize(prog, &n);
    std::string log(n, '\0');
    r.nvrtcGetProgramLog(prog, log.data());
    r.error = "NVRTC could not compile the fused kernels (" + arch + "): " + log;
    r.nvrtcDestroyProgram(&prog);
    return;
  }
  size_t size = 0;
  r.nvrtcGetPTXSize(prog, &size);
  std::vector<char> ptx(size);
  r.nvrtcGetPTX(prog, ptx.data());
  r.nvrtcDestroyProgram(&prog);
  CUmodule module = nullptr;
  if (r.cuModuleLoadData(&module, ptx.data()) != 0 ||
      r.cuModuleGetFunction(&r.rope_bf16, module, "rope_bf16") != 0 ||
      r.cuModuleGetFunction(&r.gated_add_bf16, module, "gated_add_bf16") != 0 ||
      r.cuModuleGetFunction(&r.rms_rope_bf16, module, "rms_rope_bf16") != 0 ||
      r.cuModuleGetFunction(&r.quantize_rows_e4m3, module, "quantize_rows_e4m3") != 0 ||
      r.cuModuleGetFunction(&r.dequant_uint4_bf16, module, "dequant_uint4_bf16") != 0) {
    r.error = "the driver could not load the fused kernels";
    r.rope_bf16 = nullptr;
    r.gated_add_bf16 = nullptr;
    r.rms_rope_bf16 = nullptr;
    r.quantize_rows_e4m3 = nullptr;
    r.dequant_uint4_bf16 = nullptr;
  }
}

// WANLORA_FUSED=0 keeps every step on libtorch's kernels (the Rust side reads it for RoPE and the
// gated adds; the helper for what it fuses on its own, the fp8 quantisation).
bool fused_disabled() {
  static const bool off = [] {
    const char* v = std::getenv("WANLORA_FUSED");
    return v != nullptr && std::string(v) == "0";
  }();
  return off;
}

// The compiled kernels, made on first use (for the device of that first use).
Rtc& rtc(int device) {
  static Rtc r;
  static std::once_flag once;
  std::call_once(once, [&] { load_rtc(r, device); });
  return r;
}

// The compiled kernels, with the device's context current on this thread (autograd's worker
// threads may not have made it current yet).
Rtc& ready_rtc(const at::Tensor& x) {
  auto& r = rtc(x.get_device());
  TORCH_CHECK(r.rope_bf16 != nullptr, "fused kernels unavailable: ", r.error);
  CUcontext ctx = nullptr;
  if (r.cuCtxGetCurrent(&ctx) == 0 && ctx == nullptr) {
    CUdevice dev = 0;
    r.cuDeviceGet(&dev, x.get_device());
    r.cuDevicePrimaryCtxRetain(&ctx, dev);
    r.cuCtxSetCurrent(ctx);
  }
  return r;
}

void* current_stream(const at::Tensor& t) {
  c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
  return guard.getStream(t.device()).native_handle();
}

// Launches `fn` with `args` on libtorch's current stream of `like`'s device; an empty grid
// launches nothing.
void launch(const Rtc& r, CUfunction fn, unsigned blocks, unsigned threads, const at::Tensor& like,
            void** args, const char* what) {
  if (blocks == 0) return;
  TORCH_CHECK(r.cuLaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, current_stream(like), args,
                               nullptr) == 0,
              what, ": kernel launch failed");
}

// Threads for `n` work items rounded up to whole warps (the kernels' block reductions shuffle
// across full warps).
unsigned whole_warps(int n) { return static_cast<unsigned>((n + 31) / 32 * 32); }

// x [B, N, H, D] bf16 (contiguous), tables [.., N, .., D] bf16 (contiguous): the rotated copy.
at::Tensor launch_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       float sign) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kBFloat16 && x.is_cuda(),
              "fused RoPE: x must be a [B, N, H, D] bf16 CUDA tensor");
  const int64_t tokens = x.size(1), heads = x.size(2), dim = x.size(3);
  TORCH_CHECK(dim % 8 == 0 && cos.numel() == tokens * dim && sin.numel() == tokens * dim &&
                  cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16,
              "fused RoPE: tables must be [N, D] bf16 with D a multiple of 8");
  auto& r = ready_rtc(x);
  auto xc = x.contiguous();
  auto cc = cos.contiguous(), sc = sin.contiguous();
  auto out = at::empty_like(xc);
  const void* xp = xc.data_ptr();
  const void* cp = cc.data_ptr();
  const void* sp = sc.data_ptr();
  void* op = out.data_ptr();
  long long vecs = xc.numel() / 8, tok = tokens;
  int h = static_cast<int>(heads), row_vecs = static_cast<int>(dim / 8);
  void* args[] = {&xp, &cp, &sp, &op, &vecs, &h, &tok, &row_vecs, &sign};
  const unsigned threads = 256;
  launch(r, r.rope_bf16, static_cast<unsigned>((vecs + threads - 1) / threads), threads, x, args,
         "fused RoPE");
  return out;
}

// x + y·gate (x may be undefined: y·gate) for x, y [B, N, D] bf16 CUDA and gate [B or 1, 1, D].
at::Tensor launch_gated_add(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  TORCH_CHECK(y.dim() == 3 && y.scalar_type() == at::kBFloat16 && y.is_cuda() &&
                  y.size(2) % 8 == 0,
              "fused gated add: y must be [B, N, D] bf16 on CUDA with D a multiple of 8");
  TORCH_CHECK(!x.defined() || x.sizes() == y.sizes(), "fused gated add: x and y differ in shape");
  const int64_t batch = y.size(0), tokens = y.size(1), dim = y.size(2);
  const int64_t gate_rows = gate.numel() / dim;
  TORCH_CHECK(gate.numel() % dim == 0 && (gate_rows == 1 || gate_rows == batch),
              "fused gated add: gate must be [1 or B, 1, D]");
  auto& r = ready_rtc(y);
  auto yc = y.contiguous();
  auto xc = x.defined() ? x.contiguous() : at::Tensor();
  auto gc = gate.to(at::kBFloat16).contiguous();
  auto out = at::empty_like(yc);
  const void* xp = xc.defined() ? xc.data_ptr() : nullptr;
  const void* yp = yc.data_ptr();
  const void* gp = gc.data_ptr();
  void* op = out.data_ptr();
  long long vecs = yc.numel() / 8, rows_per_gate = tokens;
  int row_vecs = static_cast<int>(dim / 8), g_rows = static_cast<int>(gate_rows);
  void* args[] = {&xp, &yp, &gp, &op, &vecs, &row_vecs, &rows_per_gate, &g_rows};
  const unsigned threads = 256;
  launch(r, r.gated_add_bf16, static_cast<unsigned>((vecs + threads - 1) / threads), threads, y,
         args, "fused gated add");
  return out;
}

// rope(rms_norm(x)·weight) for x [B, N, D] bf16 CUDA (any strides; made contiguous), weight [D]
// bf16 and tables of N·head_dim elements bf16: [B, N, D] (the caller splits the heads).
at::Tensor launch_rms_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos,
                           const at::Tensor& sin, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kBFloat16 && x.is_cuda(),
              "fused RMSNorm+RoPE: x must be a [B, N, D] bf16 CUDA tensor");
  const int64_t tokens = x.size(1), dim = x.size(2);
  TORCH_CHECK(cos.numel() % tokens == 0 && cos.numel() == sin.numel(),
              "fused RMSNorm+RoPE: tables must be [N, head_dim]");
  const int64_t head_dim = cos.numel() / tokens;
  TORCH_CHECK(dim % 8 == 0 && head_dim % 8 == 0 && dim % head_dim == 0 && dim / 8 <= 1024 &&
                  weight.numel() == dim && weight.scalar_type() == at::kBFloat16 &&
                  cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16,
              "fused RMSNorm+RoPE: needs D and head_dim multiples of 8, D ≤ 8192, bf16 weight "
              "and tables");
  auto& r = ready_rtc(x);
  auto xc = x.contiguous();
  auto wc = weight.contiguous(), cc = cos.contiguous(), sc = sin.contiguous();
  auto out = at::empty_like(xc);
  const void* xp = xc.data_ptr();
  const void* wp = wc.data_ptr();
  const void* cp = cc.data_ptr();
  const void* sp = sc.data_ptr();
  void* op = out.data_ptr();
  int row_vecs = static_cast<int>(dim / 8), head_vecs = static_cast<int>(head_dim / 8);
  long long tok = tokens;
  float eps_f = static_cast<float>(eps);
  void* args[] = {&xp, &wp, &cp, &sp, &op, &row_vecs, &head_vecs, &tok, &eps_f};
  launch(r, r.rms_rope_bf16, static_cast<unsigned>(xc.numel() / dim), whole_warps(row_vecs), x,
         args, "fused RMSNorm+RoPE");
  return out;
}

// Row-wise e4m3 quantisation of a bf16 CUDA matrix [rows, K] in one kernel, when the fused
// kernels are there and the GPU has fp8 conversions (sm89+); false leaves it to libtorch.
bool fused_quantize_rows(const at::Tensor& x, at::Tensor& codes, at::Tensor& scale) {
  if (!x.is_cuda() || x.scalar_type() != at::kBFloat16 || x.dim() != 2 || x.size(1) % 8 != 0 ||
      fused_disabled()) {
    return false;
  }
  const auto& loaded = rtc(x.get_device());
  if (loaded.quantize_rows_e4m3 == nullptr || loaded.arch < 89) return false;
  auto& r = ready_rtc(x);
  auto xc = x.contiguous();
  codes = at::empty(xc.sizes(), xc.options().dtype(at::kFloat8_e4m3fn));
  scale = at::empty({xc.size(0), 1}, xc.options().dtype(at::kFloat));
  const void* xp = xc.data_ptr();
  void* cp = codes.data_ptr();
  void* sp = scale.data_ptr();
  int row_vecs = static_cast<int>(xc.size(1) / 8);
  void* args[] = {&xp, &cp, &sp, &row_vecs};
  launch(r, r.quantize_rows_e4m3, static_cast<unsigned>(xc.size(0)),
         row_vecs >= 512 ? 512u : whole_warps(row_vecs), x, args, "fused fp8 quantisation");
  return true;
}

// --- 4-bit frozen linear ------------------------------------------------------------------------
//
// AI Toolkit's uint4 weight (crates/models/src/uint4.rs): packed codes [out, in/2], bf16 scales and
// uint8 zero points per group of 64 inputs. The linear dequantises the weight right before its
// matmul and lets it go; its backward dequantises again for dX = dY·W, so that no dequantised
// weight is kept between the forward and the backward (autograd would keep W for every linear of
// every block that records a graph).
constexpr int64_t kUint4Group = 64;

// (q − zp)·scale in bf16, then `kind`: one kernel on CUDA, libtorch's ops elsewhere (the same
// rounding: the subtraction is exact, the product rounded once).
at::Tensor dequantize_uint4(const at::Tensor& packed, const at::Tensor& scale,
                            const at::Tensor& zero_point, at::ScalarType kind) {
  const int64_t out = packed.size(0), in = packed.size(1) * 2, groups = scale.size(1);
  TORCH_CHECK(packed.scalar_type() == at::kByte && zero_point.scalar_type() == at::kByte &&
                  scale.scalar_type() == at::kBFloat16 && groups * kUint4Group == in &&
                  scale.size(0) == out && zero_point.sizes() == scale.sizes(),
              "uint4 linear: packed [out, in/2] uint8, scale and zero point [out, in/64]");
  if (packed.is_cuda() && !fused_disabled() && rtc(packed.get_device()).dequant_uint4_bf16) {
    auto& r = ready_rtc(packed);
    auto pc = packed.contiguous(), sc = scale.contiguous(), zc = zero_point.contiguous();
    auto w = at::empty({out, in}, packed.options().dtype(at::kBFloat16));
    const void* pp = pc.data_ptr();
    const void* sp = sc.data_ptr();
    const void* zp = zc.data_ptr();
    void* wp = w.data_ptr();
    long long vecs = out * in / 8;
    int row_vecs = static_cast<int>(in / 8);
    void* args[] = {&pp, &sp, &zp, &wp, &vecs, &row_vecs};
    const unsigned threads = 256;
    launch(r, r.dequant_uint4_bf16, static_cast<unsigned>((vecs + threads - 1) / threads),
           threads, packed, args, "uint4 dequantisation");
    return kind == at::kBFloat16 ? w : w.to(kind);
  }
  auto codes = at::stack({packed.bitwise_and(15), packed.bitwise_right_shift(4)}, 2);
  auto w = codes.view({out, groups, kUint4Group}).to(at::kBFloat16);
  w.sub_(zero_point.to(at::kBFloat16).unsqueeze(2));
  w.mul_(scale.unsqueeze(2));
  return w.view({out, in}).to(kind);
}

at::Tensor uint4_linear_forward(const at::Tensor& x, const at::Tensor& packed,
                                const at::Tensor& scale, const at::Tensor& zero_point,
                                const at::Tensor& bias) {
  at::NoGradGuard no_grad;
  auto w = dequantize_uint4(packed, scale, zero_point, x.scalar_type());
  return at::linear(x, w, bias.defined() && bias.numel() > 0 ? bias : at::Tensor());
}

// Autograd function of x alone (the weight is frozen; a zero-size bias stands for none, as
// autograd functions take no undefined inputs). Saves only the compact weight.
struct Uint4Linear : public torch::autograd::Function<Uint4Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& packed, const at::Tensor& scale,
                            const at::Tensor& zero_point, const at::Tensor& bias) {
    ctx->save_for_backward({packed, scale, zero_point});
    return uint4_linear_forward(x, packed, scale, zero_point, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto& grad = grad_outputs[0];
    auto w = dequantize_uint4(saved[0], saved[1], saved[2], grad.scalar_type());
    return {grad.matmul(w), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The gate is a constant here (frozen modulation and time embedding): gradients for x and y only.
struct FusedGatedAdd : public torch::autograd::Function<FusedGatedAdd> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& y, const at::Tensor& gate) {
    ctx->save_for_backward({gate});
    return launch_gated_add(x, y, gate);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto gate = ctx->get_saved_variables()[0];
    const auto& grad = grad_outputs[0];
    return {grad, launch_gated_add(at::Tensor(), grad, gate), at::Tensor()};
  }
};

struct FusedRope : public torch::autograd::Function<FusedRope> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return launch_rope(x, cos, sin, 1.0f);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    return {launch_rope(grad_outputs[0], saved[0], saved[1], -1.0f), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Whether the fused kernels compiled for `device` (1) or not (0, with the reason as last error).
int wl_fused_available(int64_t device) {
  auto& r = rtc(static_cast<int>(device));
  if (r.rope_bf16 != nullptr) return 1;
  last_error = r.error;
  return 0;
}

// RoPE on x [B, N, H, D] bf16 CUDA with [N, D] tables (see the kernel): one memory pass forward
// and one backward.
int wl_fused_rope(const at::Tensor* x, const at::Tensor* cos, const at::Tensor* sin,
                  at::Tensor** out) {
  return guarded([&] {
    at::Tensor y;
    if (at::GradMode::is_enabled() && x->requires_grad()) {
      y = FusedRope::apply(*x, *cos, *sin);
    } else {
      y = launch_rope(*x, *cos, *sin, 1.0f);
    }
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"

extern "C" {

// x + y·gate on bf16 CUDA tensors x, y [B, N, D] with a constant gate [1 or B, 1, D], rounded once.
int wl_fused_gated_add(const at::Tensor* x, const at::Tensor* y, const at::Tensor* gate,
                       at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(!gate->requires_grad(), "fused gated add: the gate must not require grad");
    at::Tensor r;
    if (at::GradMode::is_enabled() && (x->requires_grad() || y->requires_grad())) {
      r = FusedGatedAdd::apply(*x, *y, *gate);
    } else {
      r = launch_gated_add(*x, *y, *gate);
    }
    *out = new at::Tensor(std::move(r));
  });
}

// rope(rms_norm(x)·weight) in one pass, for x that needs no graph (sampling, the checkpointed
// forward): x [B, N, D] bf16 CUDA, see launch_rms_rope.
int wl_fused_rms_rope(const at::Tensor* x, const at::Tensor* weight, const at::Tensor* cos,
                      const at::Tensor* sin, double eps, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(!(at::GradMode::is_enabled() && (x->requires_grad() || weight->requires_grad())),
                "fused RMSNorm+RoPE has no backward: call it without a graph");
    *out = new at::Tensor(launch_rms_rope(*x, *weight, *cos, *sin, eps));
  });
}

// The 4-bit frozen linear x·deq(W)ᵀ + bias (bias may be null), see Uint4Linear.
int wl_uint4_linear(const at::Tensor* x, const at::Tensor* packed, const at::Tensor* scale,
                    const at::Tensor* zero_point, const at::Tensor* bias, at::Tensor** out) {
  return guarded([&] {
    auto b = bias != nullptr ? *bias : at::empty({0}, x->options());
    at::Tensor y;
    if (at::GradMode::is_enabled() && x->requires_grad()) {
      y = Uint4Linear::apply(*x, *packed, *scale, *zero_point, b);
    } else {
      y = uint4_linear_forward(*x, *packed, *scale, *zero_point, b);
    }
    *out = new at::Tensor(std::move(y));
  });
}

// The 4-bit weight dequantised to bf16, as the linear computes it.
int wl_uint4_dequantize(const at::Tensor* packed, const at::Tensor* scale,
                        const at::Tensor* zero_point, at::Tensor** out) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    *out = new at::Tensor(dequantize_uint4(*packed, *scale, *zero_point, at::kBFloat16));
  });
}

// Backpropagates `grad` from `output` (autograd::backward with an explicit output gradient).
int wl_backward_with_grad(const at::Tensor* output, const at::Tensor* grad) {
  return guarded([&] { torch::autograd::backward({*output}, {*grad}); });
}

}  // extern "C"

// --- LoRA down-projection fused into the frozen weight's GEMM ---------------------------------
//
// A LoRA'd linear y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, with the frozen W [out, in] stored as the first
// `out` rows of a buffer W_ext [out + r, in] whose last r rows hold the current A (copied in by the
// forward, without autograd through the buffer). With s = m·α/r and h = s·(x·Aᵀ):
//
//   forward   z  = x·W_extᵀ (+ [b; 0])          one GEMM over x instead of two
//             h  = s·z[:, out:]
//             y  = z[:, :out] + h·Bᵀ             addmm: its copy of z[:, :out] makes y contiguous
//   backward  dh = dy·B,  du = s·dh
//             dB = dyᵀ·h,  dA = duᵀ·x
//             dx = [dy, du]·W_ext                one GEMM (when out ≤ in, see below)
//
// Saved: x and h, as the unfused path's linear and addmm save them, plus the frozen W_ext and B.
// W_ext is saved through autograd, so a second forward that rewrites its A rows before this
// graph's backward fails loudly ("modified by an inplace operation") instead of differentiating
// against another A.
namespace {

struct LoraLinearParts {
  at::Tensor y, h;
};

// The forward on x [..., in]: y [..., out] and h [N, r] (N = rows of x).
LoraLinearParts fused_lora_forward(const at::Tensor& x, const at::Tensor& w_ext,
                                   const at::Tensor& a, const at::Tensor& b,
                                   const at::Tensor& bias, double scale) {
  at::NoGradGuard no_grad;
  const int64_t rank = a.size(0);
  const int64_t in = w_ext.size(1);
  const int64_t out = w_ext.size(0) - rank;
  TORCH_CHECK(w_ext.dim() == 2 && a.dim() == 2 && b.dim() == 2,
              "fused LoRA linear: W_ext, A and B must be matrices");
  TORCH_CHECK(out > 0 && a.size(1) == in && b.size(0) == out && b.size(1) == rank,
              "fused LoRA linear: W_ext ", w_ext.sizes(), " does not hold W [out, in] and A ",
              a.sizes(), " with B ", b.sizes());
  TORCH_CHECK(x.size(-1) == in, "fused LoRA linear: input has ", x.size(-1),
              " features, the weight expects ", in);
  TORCH_CHECK(w_ext.is_contiguous(), "fused LoRA linear: W_ext must be contiguous");
  TORCH_CHECK(x.scalar_type() == w_ext.scalar_type() && a.scalar_type() == w_ext.scalar_type() &&
                  b.scalar_type() == w_ext.scalar_type(),
              "fused LoRA linear: x, W_ext, A and B must share one dtype");
  w_ext.narrow(0, out, rank).copy_(a);
  auto x2 = x.reshape({-1, in});
  at::Tensor z;
  if (bias.defined() && bias.numel() > 0) {
    auto bias_k = bias.to(x.scalar_type());
    auto bias_ext = at::cat({bias_k, at::zeros({rank}, bias_k.options())});
    z = at::addmm(bias_ext, x2, w_ext.t());
  } else {
    z = at::mm(x2, w_ext.t());
  }
  auto h = z.narrow(1, out, rank).mul(scale);
  auto y = at::addmm(z.narrow(1, 0, out), h, b.t());
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return {y.view(sizes), h};
}

struct FusedLoraLinear : public torch::autograd::Function<FusedLoraLinear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w_ext, const at::Tensor& a, const at::Tensor& b,
                            const at::Tensor& bias, double scale) {
    auto parts = fused_lora_forward(x, w_ext, a, b, bias, scale);
    ctx->save_for_backward({x, w_ext, b, parts.h});
    ctx->saved_data["scale"] = scale;
    return parts.y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w_ext = saved[1], &b = saved[2], &h = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t rank = b.size(1);
    const int64_t out = b.size(0);
    const int64_t in = w_ext.size(1);
    auto dy = grad_outputs[0].reshape({-1, out}).to(w_ext.scalar_type());
    auto x2 = x.reshape({-1, in});
    auto du = at::mm(dy, b).mul_(scale);
    at::Tensor dx, da, db;
    if (ctx->needs_input_grad(2)) da = at::mm(du.t(), x2);
    if (ctx->needs_input_grad(3)) db = at::mm(dy.t(), h);
    if (ctx->needs_input_grad(0)) {
      if (out <= in) {
        // [dy, du]·W_ext: one GEMM; the price is one copy of dy (N×out) into the wider matrix,
        // against the unfused path's separate du·A product (N×in) and its sum with dy·W.
        auto dyu = at::empty({dy.size(0), out + rank}, dy.options());
        dyu.narrow(1, 0, out).copy_(dy);
        dyu.narrow(1, out, rank).copy_(du);
        dx = at::mm(dyu, w_ext);
      } else {
        // A wide output (the MLP's up-projection): copying dy would move more than adding the
        // rank-r product into dx in place, which is one GEMM epilogue pass over N×in.
        dx = at::mm(dy, w_ext.narrow(0, 0, out));
        dx.addmm_(du, w_ext.narrow(0, out, rank));
      }
      dx = dx.view(x.sizes());
    }
    return {dx, at::Tensor(), da, db, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// y = x·Wᵀ + bias + scale·(x·Aᵀ)·Bᵀ with W and A in one buffer `w_ext` [out + r, in] (A is copied
// into its last r rows here); `bias` may be null. With grad mode on and x, A or B requiring grad,
// the result carries FusedLoraLinear's backward (gradients for x, A and B).
int wl_fused_lora_linear(const at::Tensor* x, const at::Tensor* w_ext, const at::Tensor* a,
                         const at::Tensor* b, const at::Tensor* bias, double scale,
                         at::Tensor** out) {
  return guarded([&] {
    auto bias_or_empty = bias != nullptr ? *bias : at::empty({0}, x->options());
    at::Tensor y;
    if (at::GradMode::is_enabled() &&
        (x->requires_grad() || a->requires_grad() || b->requires_grad())) {
      TORCH_CHECK(!w_ext->requires_grad() && !bias_or_empty.requires_grad(),
                  "fused LoRA linear: the frozen weight and bias must not require grad");
      y = FusedLoraLinear::apply(*x, *w_ext, *a, *b, bias_or_empty, scale);
    } else {
      y = fused_lora_forward(*x, *w_ext, *a, *b, bias_or_empty, scale).y;
    }
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"
