// Dynamic batching through the real sidecar: client threads, each with its own channel, send at
// once; the sidecar runs their requests as one forward and splits the outputs back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <latch>
#include <random>
#include <thread>

#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::connect_or_fail;
using testing::model_path;
using testing::random_values;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

struct Call {
  Result<std::vector<Tensor>> result{ErrorCode::kTimeout, "not run"};
  ServiceInfo service;
};

// `inputs.size()` threads, each with its own client, send their input at the same moment.
std::vector<Call> send_together(const std::string& name, const std::vector<std::vector<float>>& inputs,
                                std::span<const std::int64_t> shape) {
  std::vector<Client> clients;
  for (std::size_t i = 0; i < inputs.size(); ++i) clients.push_back(connect_or_fail(name));
  std::vector<Call> calls(inputs.size());
  std::latch start(static_cast<std::ptrdiff_t>(inputs.size()));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      calls[i].result = clients[i].infer(TensorView::of(inputs[i], shape), 30s, CachePolicy::kBypass);
      calls[i].service = clients[i].last_service();
    });
  }
  for (std::thread& thread : threads) thread.join();
  return calls;
}

// How far apart two float tensors are, relative to their scale: max|a - b| / max(max|a|, max|b|);
// infinite when either holds a NaN or an infinity. Relative to the tensor, not to each element: a
// batched matrix product sums in another order than a matrix-vector product, which moves every
// element by a few float32 roundings of the terms it sums (~3e-8 here); for an element that sums
// to almost zero (2.9e-4 in the demo CNN's output) that is 2e-5 of itself, while whole outputs
// agree to 1.5e-7 (demo) and 5e-7 (MLP). The outputs of two different requests in this test are
// at least 3.4e-3 apart (demo: its output depends on the inputs' channel means, which random
// inputs share) and 0.5 apart (MLP).
double normwise_relative_difference(const Tensor& a, const Tensor& b) {
  const auto x = a.values<float>();
  const auto y = b.values<float>();
  if (x.size() != y.size()) return INFINITY;
  double largest_difference = 0;
  double scale = 1e-30;  // two all-zero outputs are equal, not 0/0
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return INFINITY;
    largest_difference = std::max(largest_difference, std::fabs(double{x[i]} - double{y[i]}));
    scale = std::max({scale, std::fabs(double{x[i]}), std::fabs(double{y[i]})});
  }
  return largest_difference / scale;
}

// Four requests alone, then the same four sent together through one worker with a long gathering
// window, so that they form a batch: each batched output must match its unbatched one.
void expect_batched_outputs_match_unbatched_ones(const std::string& model, const std::vector<std::int64_t>& shape) {
  std::string shape_text;  // as --warmup-shape takes it
  for (std::int64_t dim : shape) shape_text += (shape_text.empty() ? "" : "x") + std::to_string(dim);
  SidecarProcess sidecar(
      unique_name("batch-" + model),
      {"--model", model_path(model), "--warmup-shape", shape_text, "--max-batch", "4", "--max-queue-delay-us", "300000",
       "--workers", "1", "--warmup-iterations", "2", "--max-clients", "8", "--arena-bytes", "4M", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  TensorShape warmed{};
  warmed.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  warmed.rank = static_cast<std::uint8_t>(shape.size());
  std::copy(shape.begin(), shape.end(), warmed.dims);
  for (int rows = 1; rows <= 4; ++rows) {
    warmed.dims[0] = rows;
    EXPECT_NE(sidecar.log().find("warmed (" + describe_shape(warmed) + ")"), std::string::npos)
        << rows << " rows not warmed up:\n"
        << sidecar.log();
  }
  std::size_t elements = 1;
  for (std::int64_t dim : shape) elements *= static_cast<std::size_t>(dim);
  std::vector<std::vector<float>> inputs;
  for (std::uint32_t i = 0; i < 4; ++i) inputs.push_back(random_values(elements, 10 + i));

  // Each alone first: the reference.
  Client client = connect_or_fail(sidecar.name());
  EXPECT_EQ(client.model().max_batch, 4u);
  std::vector<Tensor> alone;
  for (const auto& input : inputs) {
    auto result = client.infer(TensorView::of(input, shape), 30s, CachePolicy::kBypass);
    ASSERT_TRUE(result.ok()) << result.message();
    EXPECT_EQ(client.last_service().batch_size, 1u);
    alone.push_back((*result)[0]);
  }

  const std::vector<Call> together = send_together(sidecar.name(), inputs, shape);
  std::uint32_t largest_batch = 0;
  for (std::size_t i = 0; i < together.size(); ++i) {
    ASSERT_TRUE(together[i].result.ok()) << together[i].result.message();
    const Tensor& output = together[i].result.ok() ? (*const_cast<Call&>(together[i]).result)[0] : alone[i];
    EXPECT_EQ(output.shape, (std::vector<std::int64_t>{1, 10}));
    EXPECT_LE(normwise_relative_difference(output, alone[i]), 1e-5) << "request " << i;
    largest_batch = std::max(largest_batch, together[i].service.batch_size);
  }
  EXPECT_GE(largest_batch, 2u) << "requests sent together were never batched: the test did not exercise batching";
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Batching, BatchedOutputsMatchUnbatchedOnesAndEveryBatchSizeIsWarmed) {
  expect_batched_outputs_match_unbatched_ones("demo", {1, 3, 224, 224});
}

// The MLP's linear layers go through BLAS, where a batch is one matrix product instead of four
// matrix-vector products: a different summation order, still within the bound.
TEST(Batching, BatchedMatrixProductsMatchUnbatchedOnes) {
  expect_batched_outputs_match_unbatched_ones("mlp", {1, 1024});
}

TEST(Batching, OneBadRequestInABatchDoesNotFailTheOthers) {
  // The model raises on any negative element: a batch holding one such request raises as a whole,
  // and the sidecar runs its requests one by one so that only that one fails.
  SidecarProcess sidecar(
      unique_name("batchbad"),
      {"--model", model_path("raises"), "--warmup-shape", "1x16", "--max-batch", "4", "--max-queue-delay-us", "300000",
       "--workers", "1", "--max-clients", "8", "--arena-bytes", "64K", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::int64_t shape[] = {1, 16};
  std::vector<std::vector<float>> inputs;
  for (std::uint32_t i = 0; i < 4; ++i) inputs.push_back(random_values(16, 20 + i, 0.0f));
  inputs[2][7] = -1.0f;
  const std::vector<Call> together = send_together(sidecar.name(), inputs, shape);
  for (std::size_t i = 0; i < together.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    if (i == 2) {
      ASSERT_FALSE(together[i].result.ok());
      EXPECT_EQ(together[i].result.code(), ErrorCode::kModelError);
      EXPECT_NE(together[i].result.message().find("negative input"), std::string::npos);
      continue;
    }
    ASSERT_TRUE(together[i].result.ok()) << together[i].result.message();
    const auto values = (*const_cast<Call&>(together[i]).result)[0].values<float>();
    ASSERT_EQ(values.size(), 16u);
    for (std::size_t j = 0; j < 16; ++j) EXPECT_FLOAT_EQ(values[j], std::sqrt(inputs[i][j]));
  }
  EXPECT_NE(sidecar.log().find("running them one by one"), std::string::npos) << sidecar.log();
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Batching, AShapeThatCannotBeBatchedGoesAlone) {
  // 8x64 has more rows than --max-batch: such requests run alone, while 1x64 ones are batched.
  SidecarProcess sidecar(unique_name("batchalone"),
                         {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--warmup-shape", "8x64",
                          "--max-batch", "4", "--max-queue-delay-us", "300000", "--workers", "1", "--max-clients", "8",
                          "--arena-bytes", "64K", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::int64_t wide[] = {8, 64};
  std::vector<std::vector<float>> wide_inputs{random_values(8 * 64, 30), random_values(8 * 64, 31)};
  for (const Call& call : send_together(sidecar.name(), wide_inputs, wide)) {
    ASSERT_TRUE(call.result.ok()) << call.result.message();
    EXPECT_EQ(call.service.batch_size, 1u);
  }
  const std::int64_t narrow[] = {1, 64};
  std::vector<std::vector<float>> narrow_inputs{random_values(64, 32), random_values(64, 33), random_values(64, 34)};
  std::uint32_t largest_batch = 0;
  for (const Call& call : send_together(sidecar.name(), narrow_inputs, narrow)) {
    ASSERT_TRUE(call.result.ok()) << call.result.message();
    largest_batch = std::max(largest_batch, call.service.batch_size);
  }
  EXPECT_GE(largest_batch, 2u);
  EXPECT_EQ(sidecar.stop(), 0);
}

}  // namespace
}  // namespace sidecar
