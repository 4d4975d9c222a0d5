// Declarations only: libtorch ships its gloo-backed process group (ProcessGroupGloo.hpp) but not
// gloo's headers. The helper only holds gloo objects through pointers that libtorch creates and
// destroys, so declarations are enough: the members named here are those the header's inline
// functions mention, which the helper never calls (no gloo code is compiled into it).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
