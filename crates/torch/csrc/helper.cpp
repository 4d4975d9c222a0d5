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

#include <cstring>
#include <string>

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

}  // extern "C"
