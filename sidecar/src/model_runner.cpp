#include "model_runner.hpp"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/torch_adapter.hpp"

namespace sidecar {
namespace {

// The dtype <-> ScalarType mapping lives in the client's torch adapter: one table for both sides.
using torch_adapter::scalar_type;

bool from_scalar_type(c10::ScalarType type, DType& dtype) {
  try {
    dtype = torch_adapter::dtype_for(type);
    return true;
  } catch (const std::invalid_argument&) {
    return false;
  }
}

std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

// The line that says what went wrong. An exception raised inside TorchScript reads "The following
// operation failed in the TorchScript interpreter." then a traceback, and ends with the raised
// "RuntimeError: message": that last line is the one a user needs.
std::string error_summary(const std::string& text) {
  if (text.find("TorchScript interpreter") == std::string::npos) return first_line(text);
  std::size_t end = text.find_last_not_of(" \n");
  if (end == std::string::npos) return first_line(text);
  const std::size_t start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end - (start == std::string::npos ? 0 : start + 1) + 1);
}

// For a client: the summary first, so that it survives the response's 512-byte message limit,
// then the full text with TorchScript's traceback.
std::string client_error_text(const std::string& text) {
  const std::string summary = error_summary(text);
  return summary == text ? text : summary + "\n" + text;
}

// torch.save (a pickled nn.Module or state_dict) is the usual mistake for torch.jit.save: both
// write .pt files, and LibTorch's error ("constants.pkl not found") does not say which was used.
// torch.save writes a zip archive with data.pkl but neither TorchScript's code/ nor constants.pkl,
// or, with _use_new_zipfile_serialization=False, a pickle that starts with torch's magic number.
bool saved_with_torch_save(const std::string& path) {
  char head[14] = {};
  std::ifstream file(path, std::ios::binary);
  file.read(head, sizeof head);
  // Pickle protocol 2, then LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c, torch's legacy magic number.
  static constexpr char kLegacyMagic[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
  if (file.gcount() == sizeof head && std::memcmp(head, kLegacyMagic, sizeof head) == 0) return true;
  if (file.gcount() < 4 || std::memcmp(head, "PK\x03\x04", 4) != 0) return false;
  try {
    caffe2::serialize::PyTorchStreamReader archive(path);
    if (!archive.hasRecord("data.pkl") || archive.hasRecord("constants.pkl")) return false;
    for (const std::string& record : archive.getAllRecords()) {
      if (record.rfind("code/", 0) == 0) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

torch::Tensor warmup_tensor(const TensorShape& shape) {
  const std::vector<std::int64_t> dims(shape.dims, shape.dims + shape.rank);
  const auto options = torch::TensorOptions().dtype(scalar_type(static_cast<DType>(shape.dtype)));
  // Uniform [0, 1) floats, like pixel data, and zeros for integers, which are often indices
  // (embeddings) where random values would be out of range.
  if (c10::isFloatingType(options.dtype().toScalarType())) return torch::rand(dims, options);
  return torch::zeros(dims, options);
}

// Flattens a forward() result into tensors, or says why it cannot be sent back.
bool collect_outputs(const c10::IValue& result, std::vector<torch::Tensor>& tensors, std::string& why) {
  tensors.clear();
  auto add = [&](const c10::IValue& value, const std::string& where) {
    if (!value.isTensor()) {
      why = "the model returned " + where + value.type()->annotation_str() +
            "; only a Tensor or a tuple/list of Tensors can be sent back";
      return false;
    }
    tensors.push_back(value.toTensor());
    return true;
  };
  if (result.isTensor()) return add(result, "");
  if (result.isTuple()) {
    for (const auto& element : result.toTupleRef().elements()) {
      if (!add(element, "a tuple holding ")) return false;
    }
  } else if (result.isList()) {
    for (const c10::IValue& element : result.toListRef()) {
      if (!add(element, "a list holding ")) return false;
    }
  } else {
    return add(result, "");
  }
  if (tensors.size() > kMaxTensors) {
    why = "the model returned " + std::to_string(tensors.size()) + " tensors; at most " + std::to_string(kMaxTensors) +
          " can be sent back";
    return false;
  }
  return true;
}

bool describe_tensor(const torch::Tensor& tensor, TensorShape& shape, std::string& why) {
  shape = TensorShape{};
  DType dtype{};
  if (!from_scalar_type(tensor.scalar_type(), dtype)) {
    why = std::string("the model returned a tensor of dtype ") + c10::toString(tensor.scalar_type()) +
          ", which the sidecar cannot send back";
    return false;
  }
  if (tensor.dim() > static_cast<std::int64_t>(kMaxRank)) {
    why = "the model returned a tensor of rank " + std::to_string(tensor.dim()) + "; at most " +
          std::to_string(kMaxRank) + " can be sent back";
    return false;
  }
  shape.dtype = static_cast<std::uint8_t>(dtype);
  shape.rank = static_cast<std::uint8_t>(tensor.dim());
  for (std::int64_t i = 0; i < tensor.dim(); ++i) shape.dims[i] = tensor.size(i);
  return true;
}

class TorchScriptRunner final : public ModelRunner {
 public:
  TorchScriptRunner(torch::jit::Module module, std::size_t inputs, std::string preparation)
      : module_(std::move(module)), input_count_(inputs), preparation_(std::move(preparation)) {}

  std::size_t input_count() const noexcept override { return input_count_; }
  const std::string& preparation() const noexcept override { return preparation_; }
  // OpenMP keeps the thread count per thread: a thread started later would otherwise use one
  // OpenMP thread per core, whatever was configured.
  void prepare_worker_thread() override { at::init_num_threads(); }

  std::vector<WarmupResult> warm_up(const std::vector<InputSignature>& signatures, int iterations) override {
    c10::InferenceMode inference_mode;
    std::vector<WarmupResult> results;
    for (const InputSignature& signature : signatures) {
      WarmupResult result;
      result.inputs = signature;
      std::vector<c10::IValue> inputs;
      for (const TensorShape& shape : signature) inputs.emplace_back(warmup_tensor(shape));
      std::vector<double> latencies;
      c10::IValue output;
      for (int i = 0; i < std::max(iterations, 1); ++i) {
        const auto start = std::chrono::steady_clock::now();
        try {
          output = module_.forward(inputs);
        } catch (const std::exception& error) {
          throw std::runtime_error("warm-up on input " + describe_signature(signature) +
                                   " failed: " + error_summary(error.what()));
        }
        latencies.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
      }
      std::vector<torch::Tensor> tensors;
      std::string why;
      if (!collect_outputs(output, tensors, why)) throw std::runtime_error(why);
      for (const auto& tensor : tensors) {
        TensorShape shape;
        if (!describe_tensor(tensor, shape, why)) throw std::runtime_error(why);
        result.outputs.push_back(shape);
      }
      result.first_call_us = latencies.front();
      // The median of the second half: the graph is specialized by then.
      std::vector<double> tail(latencies.begin() + static_cast<std::ptrdiff_t>(latencies.size() / 2), latencies.end());
      std::nth_element(tail.begin(), tail.begin() + static_cast<std::ptrdiff_t>(tail.size() / 2), tail.end());
      result.warmed_call_us = tail[tail.size() / 2];
      results.push_back(std::move(result));
    }
    return results;
  }

  CallOutcome run(std::span<const InputView> inputs, OutputSink& sink) noexcept override {
    CallOutcome outcome;
    try {
      c10::InferenceMode inference_mode;
      std::vector<c10::IValue> arguments;
      arguments.reserve(inputs.size());
      for (const InputView& input : inputs) {
        const c10::IntArrayRef dims(input.shape.dims, input.shape.rank);
        arguments.emplace_back(torch::from_blob(
            input.data, dims, torch::TensorOptions().dtype(scalar_type(static_cast<DType>(input.shape.dtype)))));
      }
      c10::IValue result = module_.forward(std::move(arguments));
      std::vector<torch::Tensor> tensors;
      if (!collect_outputs(result, tensors, outcome.message)) {
        outcome.status = Status::kUnsupportedOutput;
        return outcome;
      }
      OutputView views[kMaxTensors];
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        tensors[i] = tensors[i].contiguous();
        if (!describe_tensor(tensors[i], views[i].shape, outcome.message)) {
          outcome.status = Status::kUnsupportedOutput;
          return outcome;
        }
        views[i].data = tensors[i].data_ptr();
        views[i].bytes = tensors[i].nbytes();
      }
      outcome.status = sink.accept(std::span<const OutputView>(views, tensors.size()), outcome.message);
    } catch (const c10::Error& error) {
      outcome.status = Status::kModelError;
      outcome.message = client_error_text(error.what_without_backtrace());
    } catch (const std::exception& error) {
      outcome.status = Status::kModelError;
      outcome.message = client_error_text(error.what());
    } catch (...) {
      outcome.status = Status::kInternal;
      outcome.message = "unknown exception from the model";
    }
    return outcome;
  }

 private:
  torch::jit::Module module_;
  std::size_t input_count_;
  std::string preparation_;
};

}  // namespace

std::unique_ptr<ModelRunner> ModelRunner::load(const std::string& path, const LoadOptions& options) {
  std::error_code error_code;
  if (!std::filesystem::is_regular_file(path, error_code)) {
    throw std::runtime_error("model file " + path + " does not exist or is not a regular file");
  }
  const std::string not_torchscript = "model file " + path +
                                      " was saved with torch.save, not torch.jit.save: script or trace the model "
                                      "(torch.jit.script / torch.jit.trace) and save it with torch.jit.save";
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const c10::Error& error) {
    if (saved_with_torch_save(path)) throw std::runtime_error(not_torchscript);
    throw std::runtime_error("model file " + path +
                             " is not a loadable TorchScript module: " + first_line(error.what_without_backtrace()));
  } catch (const std::exception& error) {
    if (saved_with_torch_save(path)) throw std::runtime_error(not_torchscript);
    throw std::runtime_error("model file " + path +
                             " is not a loadable TorchScript module: " + first_line(error.what()));
  }
  auto forward = module.find_method("forward");
  if (!forward) throw std::runtime_error("model file " + path + " has no forward() method");
  const auto& arguments = forward->function().getSchema().arguments();
  // The first argument is `self`. Requests carry the arguments up to the first one with a default
  // (Python puts those last); TorchScript fills in the defaults of the rest on every call, so a
  // model with `mask: Optional[Tensor] = None` is served with its mask left to its default.
  std::size_t input_count = 0;
  std::string defaulted;
  for (std::size_t i = 1; i < arguments.size(); ++i) {
    if (arguments[i].default_value().has_value()) {
      defaulted += (defaulted.empty() ? "" : ", ") + arguments[i].name();
      continue;
    }
    if (!defaulted.empty()) {
      throw std::runtime_error("model file " + path + ": forward() argument '" + arguments[i].name() +
                               "' has no default but follows arguments that have one (" + defaulted + ")");
    }
    if (!arguments[i].type()->isSubtypeOf(*c10::TensorType::get())) {
      throw std::runtime_error("model file " + path + ": forward() argument '" + arguments[i].name() + "' is " +
                               arguments[i].type()->annotation_str() +
                               "; requests carry only tensors, so every argument without a default must be a Tensor");
    }
    ++input_count;
  }
  if (!defaulted.empty()) {
    spdlog::info("{}: forward()'s {} keep their defaults; requests carry the {} argument(s) before them", path,
                 defaulted, input_count);
  }
  if (input_count == 0 || input_count > kMaxTensors) {
    throw std::runtime_error("model file " + path + ": forward() takes " + std::to_string(input_count) +
                             " tensors; 1.." + std::to_string(kMaxTensors) + " are supported");
  }

  module.eval();
  std::string preparation = "eval";
  if (options.freeze) {
    try {
      module = torch::jit::freeze(module);
      preparation = "frozen";
      if (options.optimize_for_inference) {
        try {
          module = torch::jit::optimize_for_inference(module);
          preparation = "frozen + optimize_for_inference";
        } catch (const std::exception& error) {
          preparation = "frozen (optimize_for_inference failed: " + first_line(error.what()) + ")";
        }
      }
    } catch (const std::exception& error) {
      preparation = "eval, not frozen (freeze failed: " + first_line(error.what()) + ")";
    }
  }
  return std::make_unique<TorchScriptRunner>(std::move(module), input_count, std::move(preparation));
}

void configure_torch_threads(int intra_op_threads, int inter_op_threads) {
  at::set_num_threads(intra_op_threads);
  at::set_num_interop_threads(inter_op_threads);
}


void retain_freed_memory() {
  // Every allocation comes from a heap, not mmap, and no heap's top is given back: a batch's
  // intermediates (100 MB for 8 rows of the demo CNN) would otherwise be mmap'd, page-faulted and
  // zeroed on every forward. M_MMAP_THRESHOLD alone stops at glibc's 32 MiB ceiling, below a
  // batch's intermediates (docs/benchmarks.md, "Memory"). A thread arena that cannot hold a large
  // block hands it to the main arena (brk). The cost: the sidecar keeps its peak memory.
  mallopt(M_MMAP_MAX, 0);
  // One arena for every thread: a block over 64 MiB (a thread arena's largest heap) is refused by
  // a thread's arena before the main one serves it, and with mmap off that detour made large
  // batches several times slower per row (docs/benchmarks.md, "Memory").
  // The forwards allocate a few large blocks each, so the shared arena's lock costs nothing here.
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace sidecar
