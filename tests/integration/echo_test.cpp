// --echo: the real sidecar serving no model answers each request with its inputs, through the same
// admission, scheduling and output path as a model's answers, and refuses to start with a model.
#include <gtest/gtest.h>

#include <cstring>

#include "client_helpers.hpp"
#include "commands.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::connect_or_fail;
using testing::describe;
using testing::ramp;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

// Two inputs of different dtypes, so that the answer is seen to keep each tensor's own.
const std::int64_t kFloatShape[] = {1, 64};
const std::int64_t kIndexShape[] = {2, 3};

TEST(Echo, AClientGetsItsInputsBackAndTheModelIsDescribedByThem) {
  SidecarProcess sidecar(unique_name("echo"), {"--echo", "--warmup-shape", "1x64,2x3:int64", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  EXPECT_EQ(client.model().input_count, 2u);
  ASSERT_EQ(client.model().signatures.size(), 1u);
  const auto& outputs_described = client.model().signatures[0].outputs;
  ASSERT_EQ(outputs_described.size(), 2u);
  EXPECT_EQ(outputs_described[0], std::make_pair(DType::kFloat32, std::vector<std::int64_t>{1, 64}));
  EXPECT_EQ(outputs_described[1], std::make_pair(DType::kInt64, std::vector<std::int64_t>{2, 3}));

  const std::vector<float> values = ramp(64, 0.25f);
  const std::vector<std::int64_t> indices{7, -1, 3, 1ll << 40, 0, 42};
  const TensorView inputs[] = {TensorView::of(values, kFloatShape), TensorView::of(indices, kIndexShape)};
  auto outputs = client.infer(inputs, 5s);
  ASSERT_TRUE(outputs.ok()) << outputs.message();
  ASSERT_EQ(outputs->size(), 2u);
  EXPECT_EQ((*outputs)[0].dtype, DType::kFloat32);
  EXPECT_EQ((*outputs)[0].shape, (std::vector<std::int64_t>{1, 64}));
  ASSERT_EQ((*outputs)[0].data.size(), values.size() * sizeof(float));
  EXPECT_EQ(std::memcmp((*outputs)[0].data.data(), values.data(), values.size() * sizeof(float)), 0);
  EXPECT_EQ((*outputs)[1].dtype, DType::kInt64);
  EXPECT_EQ((*outputs)[1].shape, (std::vector<std::int64_t>{2, 3}));
  const auto echoed = (*outputs)[1].values<std::int64_t>();
  EXPECT_EQ(std::vector<std::int64_t>(echoed.begin(), echoed.end()), indices);

  // Admission is the model's: a shape not declared is refused as it would be.
  const std::int64_t wrong[] = {1, 65};
  const std::vector<float> longer = ramp(65, 0.25f);
  const TensorView refused[] = {TensorView::of(longer, wrong), TensorView::of(indices, kIndexShape)};
  EXPECT_EQ(client.infer(refused, 5s).code(), ErrorCode::kRejected);
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Echo, BatchedRequestsEachGetTheirOwnInputBack) {
  SidecarProcess sidecar(unique_name("echo-batch"),
                         {"--echo", "--warmup-shape", "1x64", "--max-batch", "4", "--workers", "1", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  std::vector<std::vector<float>> values;
  std::vector<RequestHandle> handles;
  for (int r = 0; r < 8; ++r) values.push_back(ramp(64, 0.5f + static_cast<float>(r)));
  for (const auto& input : values) {
    const TensorView one[] = {TensorView::of(input, kFloatShape)};
    auto handle = client.submit(one);
    ASSERT_TRUE(handle.ok()) << handle.message();
    handles.push_back(*handle);
  }
  for (std::size_t r = 0; r < handles.size(); ++r) {
    auto outputs = client.wait(handles[r], 5s);
    ASSERT_TRUE(outputs.ok()) << outputs.message();
    const auto echoed = (*outputs)[0].values<float>();
    EXPECT_EQ(std::vector<float>(echoed.begin(), echoed.end()), values[r]) << "request " << r;
  }
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Echo, WithAModelOrWithoutShapesStartUpIsRefusedInOneLine) {
  const std::vector<std::vector<std::string>> refused{
      {"--name", "x", "--echo", "--model", testing::model_path("tiny"), "--warmup-shape", "1x64"},
      {"--name", "x", "--echo"}};
  const std::string expected[] = {"give --echo or --model, not both", "--echo needs --warmup-shape"};
  for (std::size_t i = 0; i < refused.size(); ++i) {
    std::vector<std::string> argv{SIDECAR_BINARY};
    argv.insert(argv.end(), refused[i].begin(), refused[i].end());
    const testing::CommandResult result = testing::run_program(argv);
    EXPECT_EQ(result.exit_code, 1) << describe(result);
    EXPECT_NE(result.err.find(expected[i]), std::string::npos) << describe(result);
    EXPECT_EQ(result.err.find('\n'), result.err.size() - 1) << describe(result);
  }
}

}  // namespace
}  // namespace sidecar
