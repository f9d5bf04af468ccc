#include "echo_runner.hpp"

#include <algorithm>
#include <stdexcept>

namespace sidecar {
namespace {

class EchoRunner final : public ModelRunner {
 public:
  explicit EchoRunner(std::size_t input_count) : input_count_(input_count) {}
  std::size_t input_count() const noexcept override { return input_count_; }
  const std::string& preparation() const noexcept override { return preparation_; }

  std::vector<WarmupResult> warm_up(const std::vector<InputSignature>& signatures, int) override {
    std::vector<WarmupResult> results;
    for (const InputSignature& signature : signatures) {
      WarmupResult result;
      result.inputs = signature;
      result.outputs.assign(signature.begin(), signature.end());
      results.push_back(std::move(result));
    }
    return results;
  }

  // The outputs are the inputs themselves: the sink copies them where outputs go, as it copies a
  // model's outputs, so the path after the forward is the real one.
  CallOutcome run(std::span<const InputView> inputs, OutputSink& sink) noexcept override {
    OutputView outputs[kMaxTensors];
    const std::size_t count = std::min<std::size_t>(inputs.size(), kMaxTensors);
    for (std::size_t i = 0; i < count; ++i) {
      std::uint64_t bytes = 0;
      shape_byte_size(inputs[i].shape, bytes);
      outputs[i] = OutputView{inputs[i].shape, inputs[i].data, bytes};
    }
    CallOutcome outcome;
    outcome.status = sink.accept(std::span<const OutputView>(outputs, count), outcome.message);
    return outcome;
  }

 private:
  std::size_t input_count_;
  std::string preparation_ = "echo: answers with its inputs, no model";
};

}  // namespace

std::unique_ptr<ModelRunner> make_echo_runner(std::size_t input_count) {
  return std::make_unique<EchoRunner>(input_count);
}

std::size_t echo_input_count(const std::vector<InputSignature>& signatures) {
  if (signatures.empty()) {
    throw std::invalid_argument("--echo needs --warmup-shape: the shapes it answers with are the ones it accepts");
  }
  for (const InputSignature& signature : signatures) {
    if (signature.size() != signatures.front().size()) {
      throw std::invalid_argument("--echo: every --warmup-shape must have the same number of inputs");
    }
  }
  return signatures.front().size();
}

}  // namespace sidecar
