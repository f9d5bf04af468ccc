// Runs the model of the sidecar named on the command line once, on a 1x64 float32 input, and
// prints the first output's values. Built against the installed library (CMakeLists.txt here).
//
//   infer_cpp NAME
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sidecar/client.hpp>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SIDECAR_NAME\n", argv[0]);
    return 2;
  }
  sidecar::ConnectOptions options;
  options.timeout = std::chrono::seconds(30);  // covers a sidecar still warming up
  auto client = sidecar::Client::connect(argv[1], options);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s: %s\n", sidecar::error_code_name(client.code()), client.message().c_str());
    return 1;
  }

  // The same input as infer.c, so that the two programs' outputs can be compared.
  std::vector<float> input(64);
  for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 7) * 0.25f - 0.5f;
  const std::int64_t shape[] = {1, 64};
  auto outputs = client->infer(sidecar::TensorView::of(input, shape), std::chrono::seconds(5));
  if (!outputs.ok()) {
    std::fprintf(stderr, "infer: %s: %s\n", sidecar::error_code_name(outputs.code()), outputs.message().c_str());
    return 1;
  }
  const sidecar::Tensor& output = outputs->at(0);
  if (output.dtype != sidecar::DType::kFloat32) {
    std::fprintf(stderr, "expected a float32 output, got %s\n", sidecar::describe(output.dtype, output.shape).c_str());
    return 1;
  }
  std::printf("%s:", sidecar::describe(output.dtype, output.shape).c_str());
  for (float value : output.values<float>()) std::printf(" %.6g", value);
  std::printf("\n");
  return 0;
}
