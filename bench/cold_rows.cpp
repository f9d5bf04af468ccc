#include "cold_rows.hpp"

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "model_runner.hpp"
#include "options.hpp"

namespace sidecar::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kFirstCallLine = "first_call_us ";

// Discards the outputs: the cold call's cost is the forward's.
class DiscardingSink final : public OutputSink {
 public:
  Status accept(std::span<const OutputView>, std::string&) override { return Status::kOk; }
};

double first_call_in_new_process(const ModelCase& model) {
  ServerChild child("/proc/self/exe", {"--first-call-of", model.path, "--shape", signature_text(model.signature)});
  const auto give_up = Clock::now() + std::chrono::minutes(5);
  while (child.running()) {
    if (Clock::now() > give_up) throw std::runtime_error("in_process_cold: the child never finished\n" + child.log());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string log = child.log();
  const std::size_t at = log.find(kFirstCallLine);
  if (at == std::string::npos) throw std::runtime_error("in_process_cold: the child failed\n" + log);
  return std::stod(log.substr(at + std::string(kFirstCallLine).size()));
}

}  // namespace

Row measure_in_process_cold(const ModelCase& model, std::size_t repeats) {
  std::vector<double> latencies;
  for (std::size_t r = 0; r < repeats; ++r) latencies.push_back(first_call_in_new_process(model));
  return summarize("in_process_cold", model.name, std::move(latencies));
}

Row measure_sidecar_cold(const ModelCase& model, SidecarSettings settings, std::size_t repeats) {
  settings.warm = false;
  std::vector<double> latencies;
  for (std::size_t r = 0; r < repeats; ++r) {
    auto probe = sidecar_probe("sidecar_cold", model, settings);
    latencies.push_back(probe->timed_call_us());
  }
  return summarize("sidecar_cold", model.name, std::move(latencies));
}

int first_call_child(const std::string& path, const std::string& shape) {
  try {
    // As the sidecar's workers and the in_process row run.
    configure_torch_threads(1, 1);
    retain_freed_memory();
    const InputSignature signature = parse_signature(shape);
    auto runner = ModelRunner::load(path, {});
    runner->prepare_worker_thread();
    std::vector<std::vector<float>> inputs;
    std::vector<InputView> views;
    for (const TensorShape& input : signature) inputs.push_back(random_input(element_count_of(input)));
    for (std::size_t i = 0; i < inputs.size(); ++i) views.push_back(InputView{signature[i], inputs[i].data()});
    DiscardingSink sink;
    const auto start = Clock::now();
    const CallOutcome outcome = runner->run(views, sink);
    const double took = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    if (outcome.status != Status::kOk) throw std::runtime_error(outcome.message);
    std::fprintf(stderr, "%s%.3f\n", kFirstCallLine, took);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "first call: %s\n", error.what());
    return 1;
  }
}

}  // namespace sidecar::bench
