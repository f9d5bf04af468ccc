// sidecar-demo: what the sidecar buys, measured from a client process.
//
// Loads the same model in this process to time a cold first call and warmed forwards, then sends
// the same input through a running, warmed sidecar and compares latencies and outputs.
//
//   sidecar-demo --name demo --model demo.pt [--shape 1x3x224x224] [--requests 50]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "model_runner.hpp"
#include "options.hpp"
#include "sidecar/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace sidecar;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double percentile(std::vector<double> values, double quantile) {
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(quantile * static_cast<double>(values.size() - 1))];
}

class KeepingSink final : public OutputSink {
 public:
  Status accept(std::span<const OutputView> outputs, std::string&) override {
    bytes.assign(static_cast<const std::byte*>(outputs[0].data),
                 static_cast<const std::byte*>(outputs[0].data) + outputs[0].bytes);
    return Status::kOk;
  }
  std::vector<std::byte> bytes;
};

}  // namespace

int main(int argc, char** argv) {
  std::string name, model_path, shape_text = "1x3x224x224";
  int requests = 50;
  int intra_op_threads = 1;
  CLI::App app{"sidecar-demo: a model in-process and through a sidecar, side by side"};
  app.add_option("--name", name, "the running sidecar's name")->required();
  app.add_option("--model", model_path, "the model the sidecar serves")->required();
  app.add_option("--shape", shape_text, "input shape, float32");
  app.add_option("--requests", requests, "forwards measured each way")->check(CLI::Range(1, 100000));
  app.add_option("--intra-op-threads", intra_op_threads, "as given to the sidecar");
  CLI11_PARSE(app, argc, argv);

  try {
    const InputSignature signature = parse_signature(shape_text);
    if (signature.size() != 1 || signature[0].dtype != static_cast<std::uint8_t>(DType::kFloat32)) {
      throw std::invalid_argument("the demo feeds one float32 input");
    }
    const TensorShape& shape = signature[0];
    std::vector<float> input(element_count(shape));
    std::mt19937 generator(1);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    for (float& value : input) value = uniform(generator);
    const std::span<const std::int64_t> dims(shape.dims, shape.rank);

    // In-process: the same preparation as the sidecar (frozen, optimized, same thread count).
    configure_torch_threads(intra_op_threads, 1);
    retain_freed_memory();
    auto runner = ModelRunner::load(model_path, {});
    KeepingSink local;
    InputView view{shape, input.data()};
    auto start = Clock::now();
    if (runner->run(std::span<const InputView>(&view, 1), local).status != Status::kOk)
      throw std::runtime_error("forward failed");
    const double cold_ms = ms_since(start);
    runner->warm_up({signature}, 10);
    std::vector<double> in_process;
    for (int i = 0; i < requests; ++i) {
      start = Clock::now();
      (void)runner->run(std::span<const InputView>(&view, 1), local);
      in_process.push_back(ms_since(start));
    }

    ConnectOptions options;
    options.timeout = std::chrono::minutes(5);
    auto client = Client::connect(name, options);
    if (!client.ok()) throw std::runtime_error(client.message());
    auto send = [&]() -> double {
      const auto begin = Clock::now();
      auto buffer = client->input_buffer(DType::kFloat32, dims);
      if (!buffer.ok()) throw std::runtime_error(buffer.message());
      std::memcpy(buffer->data(), input.data(), buffer->size());
      // Bypassing the result cache: these calls measure the forward through shared memory.
      auto outputs = client->run(std::chrono::seconds(60), CachePolicy::kBypass);
      if (!outputs.ok()) throw std::runtime_error(outputs.message());
      const double elapsed = ms_since(begin);
      const TensorView& out = (*outputs)[0];
      if (out.bytes != local.bytes.size() || std::memcmp(out.data, local.bytes.data(), out.bytes) != 0) {
        throw std::runtime_error("the sidecar's output differs from the in-process output");
      }
      return elapsed;
    };
    const double first_through_sidecar_ms = send();
    std::vector<double> through_sidecar;
    for (int i = 0; i < requests; ++i) through_sidecar.push_back(send());

    // The same input again, with the cache: the first call stores the result, the others find it
    // in shared memory from this process, without a round trip to the sidecar.
    std::vector<double> from_cache;
    for (int i = 0; i <= requests; ++i) {
      const auto begin = Clock::now();
      auto outputs = client->infer(TensorView::of(input, dims), std::chrono::seconds(60));
      const double elapsed = ms_since(begin);
      if (!outputs.ok()) throw std::runtime_error(outputs.message());
      const Tensor& out = (*outputs)[0];
      if (out.data.size() != local.bytes.size() ||
          std::memcmp(out.data.data(), local.bytes.data(), out.data.size()) != 0) {
        throw std::runtime_error("the cached output differs from the in-process output");
      }
      if (i > 0 && client->last_cache_outcome() != CacheOutcome::kHitInClient) {
        throw std::runtime_error(std::string("a repeated input was a cache ") +
                                 cache_outcome_name(client->last_cache_outcome()));
      }
      if (i > 0) from_cache.push_back(elapsed);
    }

    const double in_p50 = percentile(in_process, 0.5);
    const double side_p50 = percentile(through_sidecar, 0.5);
    std::printf("model %s, input %s float32, %d forwards each way, %d intra-op thread(s)\n", model_path.c_str(),
                shape_text.c_str(), requests, intra_op_threads);
    std::printf("  first call in-process, cold (what warm-up removes): %10.2f ms\n", cold_ms);
    std::printf("  first call through the warmed sidecar:              %10.2f ms\n", first_through_sidecar_ms);
    std::printf("  in-process LibTorch forward, warmed:   p50 %10.2f ms   p99 %10.2f ms\n", in_p50,
                percentile(in_process, 0.99));
    std::printf("  through the sidecar (shared memory):   p50 %10.2f ms   p99 %10.2f ms   (p50 %+.3f ms)\n", side_p50,
                percentile(through_sidecar, 0.99), side_p50 - in_p50);
    const double cache_p50 = percentile(from_cache, 0.5);
    std::printf("  the same input again, found in the shared-memory result cache by this client:\n");
    std::printf("                                         p50 %10.3f ms   p99 %10.3f ms   (1/%.0f of the forward)\n",
                cache_p50, percentile(from_cache, 0.99), in_p50 / cache_p50);
    std::printf("  outputs through the sidecar and from the cache equal the in-process outputs bit for bit: yes\n");
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sidecar-demo: %s\n", error.what());
    return 1;
  }
}
