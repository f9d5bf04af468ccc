// The model: a TorchScript module loaded, frozen, optimized, warmed up and run. The only part of the
// daemon that includes LibTorch (model_runner.cpp): everything else sees dtypes, shapes and bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar {

struct InputView {
  TensorShape shape;
  void* data;  // dense, row-major; read (and possibly written) by the model during the call
};

struct OutputView {
  TensorShape shape;
  const void* data;
  std::uint64_t bytes;
};

// Receives a call's outputs while they are alive. Returns Status::kOk or an error with `message`.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual Status accept(std::span<const OutputView> outputs, std::string& message) = 0;
};

struct CallOutcome {
  Status status = Status::kOk;
  std::string message;
};

struct WarmupResult {
  InputSignature inputs;
  std::vector<TensorShape> outputs;
  double first_call_us = 0;   // the cold call, on the first thread warmed
  double warmed_call_us = 0;  // median of the last iterations
};

class ModelRunner {
 public:
  struct LoadOptions {
    bool freeze = true;
    bool optimize_for_inference = true;
  };

  // Throws std::runtime_error with one clear line when the file is missing or not a TorchScript
  // module with a forward method.
  static std::unique_ptr<ModelRunner> load(const std::string& path, const LoadOptions& options);
  virtual ~ModelRunner() = default;

  // Number of tensors forward() takes.
  virtual std::size_t input_count() const noexcept = 0;
  // How the module was prepared ("frozen + optimize_for_inference", or what it fell back to).
  virtual const std::string& preparation() const noexcept = 0;

  // Called once on each worker thread before it warms up or runs anything (LibTorch keeps its
  // thread settings per thread).
  virtual void prepare_worker_thread() {}

  // Runs forward `iterations` times on each signature on the calling thread, with deterministic
  // inputs, so that this thread's profiling executor has specialized the graph for each shape.
  // Throws std::runtime_error naming the signature when the model fails on it.
  virtual std::vector<WarmupResult> warm_up(const std::vector<InputSignature>& signatures, int iterations) = 0;

  // One forward on the calling thread, under inference mode. Never throws: the model's exceptions
  // come back as Status::kModelError with TorchScript's text.
  virtual CallOutcome run(std::span<const InputView> inputs, OutputSink& sink) noexcept = 0;
};

// Sets LibTorch's intra-op and inter-op thread counts; call once, before any model runs.
void configure_torch_threads(int intra_op_threads, int inter_op_threads);

// Keeps memory that forwards free mapped for the next forward. glibc by default returns the large
// temporaries of a forward (a 1x64x222x222 activation is 12 MB) to the kernel on free, and the next
// forward page-faults them back in, which costs more than many forwards (docs/benchmarks.md,
// "Memory"). Call once at start-up, before the model runs.
void retain_freed_memory();


}  // namespace sidecar
