// libtorch's own distributed engine (c10d), reached from Rust: a TCPStore for the rendezvous and a
// process group over it — ProcessGroupGloo (CPU tensors, and the CPU tests) or ProcessGroupNCCL
// (CUDA tensors) — with an all-reduce of one flat tensor and a barrier.
//
// Gloo: libtorch_cpu exports it; gloo's headers are not shipped, so gloo_decl/ declares the few
// gloo types the process group's header names (held through pointers only).
//
// NCCL: ProcessGroupNCCL lives in libtorch_cuda.so, which the binary does not link (it is
// dlopen'ed at start-up on CUDA machines, so one binary serves CPU and GPU machines), and its
// header needs the CUDA toolkit's headers, which CPU machines lack. So the group is built through
// the two exported constructors, found with dlsym: ProcessGroupNCCL::Options(bool) and
// ProcessGroupNCCL(intrusive_ptr<Store>, int, int, intrusive_ptr<Options>). Everything after
// construction goes through the c10d::Backend base class's virtual functions, whose header is
// the one this file is compiled against (the same libtorch 2.11.0 as the loaded library).
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <dlfcn.h>

#include <chrono>
#include <cstring>
#include <new>
#include <string>

namespace {
thread_local std::string dist_error;

template <typename F>
int dist_guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    dist_error = e.what();
    return -1;
  } catch (...) {
    dist_error = "unknown C++ exception";
    return -1;
  }
}

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int world;
};

// Rank 0 serves the store on host:port; every rank connects and waits for all `world` ranks, up
// to `timeout_ms` (also the store's timeout for its own operations).
c10::intrusive_ptr<c10d::Store> connect_store(const char* host, int port, int rank, int world,
                                              int64_t timeout_ms) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(port);
  options.isServer = rank == 0;
  options.numWorkers = static_cast<std::size_t>(world);
  options.waitWorkers = true;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  options.useLibUV = false;
  return c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
}

// The exported constructors of libtorch_cuda's ProcessGroupNCCL (Itanium C++ ABI: `this` first;
// an intrusive_ptr argument, non-trivial to copy, is passed as the address of the caller's
// temporary, which the caller destroys after the call).
constexpr const char* kNcclOptionsCtor = "_ZN4c10d16ProcessGroupNCCL7OptionsC1Eb";
constexpr const char* kNcclGroupCtor =
    "_ZN4c10d16ProcessGroupNCCLC1EN3c1013intrusive_ptrINS_5StoreENS1_6detail34intrusive_target_"
    "default_null_typeIS3_EEEEiiNS2_INS0_7OptionsENS5_IS8_EEEE";
using NcclOptionsCtor = void (*)(void* self, bool high_priority_stream);
using NcclGroupCtor = void (*)(void* self, c10::intrusive_ptr<c10d::Store>* store, int rank,
                               int size, c10::intrusive_ptr<c10d::Backend::Options>* options);
// libtorch 2.11.0 allocates 0xf8 and 0x458 bytes for these (operator new in its own
// make_intrusive calls); the objects get ample room, and are never deleted (see Group).
constexpr std::size_t kNcclOptionsBytes = 4096;
constexpr std::size_t kNcclGroupBytes = 16384;

constexpr const char* kNcclMissing =
    "ProcessGroupNCCL is not loaded: NCCL needs libtorch_cuda.so (a CUDA machine with PyTorch's "
    "libraries on LD_LIBRARY_PATH); on CPUs the data-parallel ranks use gloo";

// Constructs `bytes` of zeroed storage as an object through `ctor`, owned by an intrusive_ptr
// of its base class `Base` (at offset 0: the classes here derive singly). One extra reference is
// never dropped: deleting the object would free our larger block with libtorch's size for the
// class, which allocators that use the size (tcmalloc, jemalloc) must not be given. So the
// objects stay allocated after shutdown (one group per process).
template <typename Base, typename Construct>
c10::intrusive_ptr<Base> construct_at_new(std::size_t bytes, Construct&& ctor) {
  void* raw = ::operator new(bytes);
  std::memset(raw, 0, bytes);
  try {
    ctor(raw);
  } catch (...) {
    ::operator delete(raw);
    throw;
  }
  auto owned = c10::intrusive_ptr<Base>::unsafe_steal_from_new(static_cast<Base*>(raw));
  c10::intrusive_ptr<Base>(owned).release();  // the reference that keeps it alive
  return owned;
}
}  // namespace

extern "C" {

const char* wl_dist_last_error() { return dist_error.c_str(); }

// `join_ms` bounds the rendezvous, `collective_ms` each collective.
int wl_dist_gloo_new(const char* host, int port, int rank, int world, int64_t join_ms,
                     int64_t collective_ms, void** out) {
  return dist_guarded([&] {
    auto store = connect_store(host, port, rank, world, join_ms);
    auto pg_options =
        c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(collective_ms));
    pg_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    c10::intrusive_ptr<c10d::Backend> group =
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, pg_options);
    *out = new Group{store, group, world};
  });
}

// The NCCL group of this rank, bound to CUDA device `device`; its communicator is formed here
// (eagerly) so that a wrong setup fails at the join, not at the first step. Returns -2 when
// ProcessGroupNCCL is not loaded at all (no libtorch_cuda.so), -1 on any other failure.
int wl_dist_nccl_new(const char* host, int port, int rank, int world, int64_t join_ms,
                     int64_t collective_ms, int device, void** out) {
  auto make_options = reinterpret_cast<NcclOptionsCtor>(dlsym(RTLD_DEFAULT, kNcclOptionsCtor));
  auto make_group = reinterpret_cast<NcclGroupCtor>(dlsym(RTLD_DEFAULT, kNcclGroupCtor));
  if (make_options == nullptr || make_group == nullptr) {
    dist_error = kNcclMissing;
    return -2;
  }
  return dist_guarded([&] {
    auto store = connect_store(host, port, rank, world, join_ms);
    auto options = construct_at_new<c10d::Backend::Options>(
        kNcclOptionsBytes, [&](void* self) { make_options(self, false); });
    options->timeout = std::chrono::milliseconds(collective_ms);
    auto store_arg = store;
    auto options_arg = options;
    auto group = construct_at_new<c10d::Backend>(kNcclGroupBytes, [&](void* self) {
      make_group(self, &store_arg, rank, world, &options_arg);
    });
    const at::Device cuda(at::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    group->setBoundDeviceId(cuda);
    group->eagerConnectSingleDevice(cuda);
    *out = new Group{store, group, world};
  });
}

// In place: the tensor becomes the mean of its values on every rank.
int wl_dist_allreduce_mean(void* group, void* tensor) {
  return dist_guarded([&] {
    auto* g = static_cast<Group*>(group);
    auto* t = static_cast<at::Tensor*>(tensor);
    std::vector<at::Tensor> tensors{*t};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    g->backend->allreduce(tensors, options)->wait();
    t->div_(g->world);
  });
}

int wl_dist_barrier(void* group) {
  return dist_guarded([&] {
    auto* g = static_cast<Group*>(group);
    g->backend->barrier(c10d::BarrierOptions())->wait();
  });
}

// The backend's name as c10d reports it ("gloo", "nccl").
int wl_dist_backend_name(void* group, char* out, int capacity) {
  return dist_guarded([&] {
    auto name = static_cast<Group*>(group)->backend->getBackendName();
    std::snprintf(out, static_cast<std::size_t>(capacity), "%s", name.c_str());
  });
}

void wl_dist_free(void* group) {
  auto* g = static_cast<Group*>(group);
  // Stops NCCL's watchdog threads before the group goes (a no-op for gloo).
  dist_guarded([&] { g->backend->shutdown(); });
  delete g;  // an NCCL backend stays allocated (construct_at_new)
}

}  // extern "C"
