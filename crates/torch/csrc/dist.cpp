// libtorch's own distributed engine (c10d), reached from Rust: a TCPStore for the rendezvous and a
// ProcessGroupGloo (CPU tensors) over it — all-reduce of one flat tensor and a barrier. libtorch
// exports both; gloo's headers are not shipped, so gloo_decl/ declares the few gloo types the
// process group's header names (held through pointers only).
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
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

struct GlooGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  int world;
};
}  // namespace

extern "C" {

const char* wl_dist_last_error() { return dist_error.c_str(); }

// Rank 0 serves the store on host:port; every rank connects, then the gloo group forms over it.
int wl_dist_gloo_new(const char* host, int port, int rank, int world, int64_t timeout_ms,
                     void** out) {
  return dist_guarded([&] {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(world);
    options.waitWorkers = true;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    options.useLibUV = false;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    auto pg_options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    pg_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, pg_options);
    *out = new GlooGroup{store, group, world};
  });
}

// In place: the tensor becomes the mean of its values on every rank.
int wl_dist_allreduce_mean(void* group, void* tensor) {
  return dist_guarded([&] {
    auto* g = static_cast<GlooGroup*>(group);
    auto* t = static_cast<at::Tensor*>(tensor);
    std::vector<at::Tensor> tensors{*t};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    g->group->allreduce(tensors, options)->wait();
    t->div_(g->world);
  });
}

int wl_dist_barrier(void* group) {
  return dist_guarded([&] {
    auto* g = static_cast<GlooGroup*>(group);
    g->group->barrier(c10d::BarrierOptions())->wait();
  });
}

void wl_dist_free(void* group) { delete static_cast<GlooGroup*>(group); }

}  // extern "C"
