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
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
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
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x) {
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
