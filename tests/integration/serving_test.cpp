// The real inference-sidecar process serving clients in this process and in child processes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "raw_client.hpp"
#include "sidecar/sidecar_client.h"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::connect_or_fail;
using testing::model_path;
using testing::ramp;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

class TinySidecar : public testing::SuiteSidecar<TinySidecar> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--max-clients", "16", "--arena-bytes", "1M"};
  }
};

TEST_F(TinySidecar, AnswersARequestAndDescribesTheModel) {
  Client client = connect_or_fail(sidecar_->name());
  EXPECT_EQ(client.model().input_count, 1u);
  ASSERT_EQ(client.model().signatures.size(), 1u);
  EXPECT_EQ(client.model().signatures[0].outputs[0].second, (std::vector<std::int64_t>{1, 10}));
  const auto input = ramp(64, 0.01f);
  auto outputs = client.infer(TensorView::of(input, kTinyShape), 5s);
  ASSERT_TRUE(outputs.ok()) << outputs.message();
  ASSERT_EQ(outputs->size(), 1u);
  EXPECT_EQ((*outputs)[0].shape, (std::vector<std::int64_t>{1, 10}));
  EXPECT_EQ((*outputs)[0].dtype, DType::kFloat32);
  // A linear layer: the same input gives the same output, a different one a different output.
  auto again = client.infer(TensorView::of(input, kTinyShape), 5s);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].data, (*outputs)[0].data);
  const auto other = ramp(64, 0.02f);
  auto different = client.infer(TensorView::of(other, kTinyShape), 5s);
  ASSERT_TRUE(different.ok());
  EXPECT_NE((*different)[0].data, (*outputs)[0].data);
}

TEST_F(TinySidecar, WrongShapeIsRejectedWithTheExpectedShapeAndServingGoesOn) {
  Client client = connect_or_fail(sidecar_->name());
  const auto input = ramp(65, 0.01f);
  const std::int64_t wrong[] = {1, 65};
  auto rejected = client.infer(TensorView::of(input, wrong), 5s);
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.code(), ErrorCode::kRejected);
  EXPECT_NE(rejected.message().find("expected [1, 64] float32"), std::string::npos) << rejected.message();
  EXPECT_NE(rejected.message().find("got [1, 65] float32"), std::string::npos) << rejected.message();
  auto fine = client.infer(TensorView::of(ramp(64, 0.01f), kTinyShape), 5s);
  EXPECT_TRUE(fine.ok()) << fine.message();
}

TEST_F(TinySidecar, WrongDtypeRankAndInputCountAreRejected) {
  Client client = connect_or_fail(sidecar_->name());
  std::vector<double> doubles(64, 1.0);
  auto wrong_dtype = client.infer(TensorView::of(doubles, kTinyShape), 5s);
  ASSERT_EQ(wrong_dtype.code(), ErrorCode::kRejected);
  EXPECT_NE(wrong_dtype.message().find("got [1, 64] float64"), std::string::npos) << wrong_dtype.message();

  const auto input = ramp(64, 0.01f);
  const std::int64_t rank3[] = {1, 1, 64};
  auto wrong_rank = client.infer(TensorView::of(input, rank3), 5s);
  ASSERT_EQ(wrong_rank.code(), ErrorCode::kRejected);
  EXPECT_NE(wrong_rank.message().find("expected [1, 64] float32"), std::string::npos);

  const TensorView two[] = {TensorView::of(input, kTinyShape), TensorView::of(input, kTinyShape)};
  auto wrong_count = client.infer(two, 5s);
  ASSERT_EQ(wrong_count.code(), ErrorCode::kRejected);
  EXPECT_NE(wrong_count.message().find("takes 1 input tensor(s), the request has 2"), std::string::npos)
      << wrong_count.message();

  // Bytes that disagree with the shape never leave this process.
  TensorView short_bytes = TensorView::of(input, kTinyShape);
  short_bytes.bytes -= 4;
  EXPECT_EQ(client.infer(short_bytes, 5s).code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());
}

TEST_F(TinySidecar, ZeroCopyPathReturnsOutputsInSharedMemory) {
  Client client = connect_or_fail(sidecar_->name());
  auto buffer = client.input_buffer(DType::kFloat32, kTinyShape);
  ASSERT_TRUE(buffer.ok()) << buffer.message();
  const auto input = ramp(64, 0.01f);
  std::memcpy(buffer->data(), input.data(), buffer->size());
  auto outputs = client.run(5s);
  ASSERT_TRUE(outputs.ok()) << outputs.message();
  auto copied = client.infer(TensorView::of(input, kTinyShape), 5s);
  ASSERT_TRUE(copied.ok());
  // The views of the first run point into the arena, which the second call reused for the same
  // input and so the same output.
  ASSERT_EQ((*outputs)[0].bytes, 40u);
  EXPECT_EQ(std::memcmp((*outputs)[0].data, (*copied)[0].data.data(), 40), 0);
}

TEST_F(TinySidecar, CApiRunsTheModel) {
  sidecar_client* client = nullptr;
  ASSERT_EQ(sidecar_connect(sidecar_->name().c_str(), 5000, &client), SIDECAR_OK) << sidecar_connect_error();
  const auto input = ramp(64, 0.01f);
  const sidecar_tensor tensor{SIDECAR_FLOAT32, 2, kTinyShape, input.data(), input.size() * sizeof(float)};
  sidecar_tensor outputs[2];
  std::size_t output_count = 2;
  ASSERT_EQ(sidecar_infer(client, &tensor, 1, outputs, &output_count, 5'000'000), SIDECAR_OK)
      << sidecar_last_error(client);
  ASSERT_EQ(output_count, 1u);
  EXPECT_EQ(outputs[0].rank, 2);
  EXPECT_EQ(outputs[0].shape[1], 10);
  const std::int64_t wrong_shape[] = {1, 32};
  const sidecar_tensor wrong{SIDECAR_FLOAT32, 2, wrong_shape, input.data(), 32 * sizeof(float)};
  output_count = 2;
  EXPECT_EQ(sidecar_infer(client, &wrong, 1, outputs, &output_count, 5'000'000), SIDECAR_REJECTED);
  EXPECT_NE(std::string(sidecar_last_error(client)).find("expected [1, 64] float32"), std::string::npos);
  // Bytes that disagree with the shape are refused here, and nothing half-built is sent.
  const sidecar_tensor short_input{SIDECAR_FLOAT32, 2, kTinyShape, input.data(), 63 * sizeof(float)};
  output_count = 2;
  EXPECT_EQ(sidecar_infer(client, &short_input, 1, outputs, &output_count, 5'000'000), SIDECAR_INVALID_ARGUMENT);
  output_count = 2;
  ASSERT_EQ(sidecar_infer(client, &tensor, 1, outputs, &output_count, 5'000'000), SIDECAR_OK)
      << sidecar_last_error(client);
  EXPECT_EQ(output_count, 1u);
  sidecar_close(client);

  sidecar_client* missing = nullptr;
  EXPECT_EQ(sidecar_connect("no-such-sidecar", 0, &missing), SIDECAR_NOT_RUNNING);
  EXPECT_NE(std::string(sidecar_connect_error()).find("no sidecar named 'no-such-sidecar'"), std::string::npos);
}

// Several client processes at once, each checking its answers against the first it got for the
// same input: answers never cross between clients.
TEST_F(TinySidecar, ManyClientProcessesGetTheirOwnAnswers) {
  constexpr int kProcesses = 6;
  constexpr int kRequests = 300;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto client = Client::connect(sidecar_->name());
      if (!client.ok()) ::_exit(2);
      // Each process owns a distinct input; its answer must be stable across requests.
      const auto input = ramp(64, 0.001f * static_cast<float>(p + 1));
      auto first = client->infer(TensorView::of(input, kTinyShape), 10s);
      if (!first.ok()) ::_exit(3);
      for (int r = 0; r < kRequests; ++r) {
        auto next = client->infer(TensorView::of(input, kTinyShape), 10s);
        if (!next.ok()) ::_exit(4);
        if ((*next)[0].data != (*first)[0].data) ::_exit(5);
      }
      ::_exit(0);
    }
    children.push_back(child);
  }
  for (pid_t child : children) {
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status)) << "child killed";
    EXPECT_EQ(WEXITSTATUS(status), 0) << "child failed with code " << WEXITSTATUS(status);
  }
}

// Clients that vanish without closing get their channels back: after more connect/kill cycles
// than there are channels, connecting still works.
TEST_F(TinySidecar, ChannelsOfKilledClientsAreRecycled) {
  for (int round = 0; round < 20; ++round) {
    int ready_pipe[2];
    ASSERT_EQ(::pipe(ready_pipe), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto client = Client::connect(sidecar_->name());
      const char state = client.ok() ? 'y' : 'n';
      (void)!::write(ready_pipe[1], &state, 1);
      ::pause();
      ::_exit(0);
    }
    char state = 0;
    ASSERT_EQ(::read(ready_pipe[0], &state, 1), 1);
    ::close(ready_pipe[0]);
    ::close(ready_pipe[1]);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ASSERT_EQ(state, 'y') << "round " << round << ": connect failed in the child";
  }
  ConnectOptions options;
  options.timeout = 10s;
  auto client = Client::connect(sidecar_->name(), options);
  ASSERT_TRUE(client.ok()) << client.message();
  EXPECT_TRUE(client->infer(TensorView::of(ramp(64, 0.01f), kTinyShape), 5s).ok());
}

using testing::RawClient;
using testing::tiny_request;

// Flags from a newer client, or garbage: refused by name, never guessed at.
TEST_F(TinySidecar, UnknownRequestFlagsAreRefused) {
  RawClient raw(sidecar_->name());
  RequestDescriptor request = tiny_request(77, 0);
  request.flags = 1u << 30;
  raw.post(request);
  const ResponseDescriptor response = raw.await(5000ms);
  EXPECT_EQ(response.request_id, 77u);
  ASSERT_EQ(response.status, static_cast<std::uint32_t>(Status::kInvalidRequest));
  const std::string message(response.message, response.message_length);
  EXPECT_NE(message.find("unknown request flags"), std::string::npos) << message;
}

// Malformed descriptors get error answers naming the problem, and the sidecar keeps serving.
TEST_F(TinySidecar, MalformedDescriptorsAreAnsweredWithErrors) {
  RawClient raw(sidecar_->name());
  const std::uint64_t arena = raw.arena_bytes();
  struct Case {
    std::string expect;
    RequestDescriptor request;
  };
  std::vector<Case> cases;
  cases.push_back({"outside the channel's arena", tiny_request(1, arena)});
  cases.push_back({"outside the channel's arena", tiny_request(2, ~0ull - 63)});
  auto bad_bytes = tiny_request(3, 0);
  bad_bytes.inputs[0].bytes = 1 << 30;
  cases.push_back({"does not match shape", bad_bytes});
  auto bad_dtype = tiny_request(4, 0);
  bad_dtype.inputs[0].shape.dtype = 99;
  cases.push_back({"unknown dtype", bad_dtype});
  auto bad_rank = tiny_request(5, 0);
  bad_rank.inputs[0].shape.rank = 200;
  cases.push_back({"rank 200", bad_rank});
  auto bad_count = tiny_request(6, 0);
  bad_count.input_count = 60000;
  cases.push_back({"input count 60000", bad_count});
  auto bad_output = tiny_request(7, 0);
  bad_output.output_offset = arena - 64;
  bad_output.output_capacity = 1 << 20;
  cases.push_back({"output region", bad_output});
  auto small_output = tiny_request(8, 0);
  small_output.output_capacity = 16;
  cases.push_back({"the outputs need 40 bytes", small_output});

  for (const Case& item : cases) {
    raw.post(item.request);
    const ResponseDescriptor response = raw.await(10s);
    EXPECT_EQ(response.request_id, item.request.request_id);
    EXPECT_NE(response.status, static_cast<std::uint32_t>(Status::kOk));
    const std::string message(response.message, std::min<std::size_t>(response.message_length, kMessageBytes));
    EXPECT_NE(message.find(item.expect), std::string::npos) << "request " << item.request.request_id << ": " << message;
  }
  raw.post(tiny_request(100, 0));
  EXPECT_EQ(raw.await(10s).status, static_cast<std::uint32_t>(Status::kOk));
}

// A client that scribbles on its own ring's fill counters loses its channel, not the sidecar.
TEST_F(TinySidecar, CorruptRingIndicesCostOnlyTheirOwner) {
  {
    RawClient raw(sidecar_->name());
    // A fill count no honest producer could have reached at the sidecar's head (slot 0, lap 0).
    raw.channel()->requests.cells[0].fills.store(1ull << 40, std::memory_order_release);
    Client client = connect_or_fail(sidecar_->name());
    for (int i = 0; i < 50; ++i) {
      auto outputs = client.infer(TensorView::of(ramp(64, 0.01f), kTinyShape), 5s);
      ASSERT_TRUE(outputs.ok()) << outputs.message();
    }
  }
  EXPECT_TRUE(sidecar_->log().find("request ring indices corrupt") != std::string::npos) << sidecar_->log();
  EXPECT_FALSE(sidecar_->has_exited());
}

// Models with several inputs and outputs, list outputs, and outputs that cannot be sent back.
TEST(ModelKinds, TwoInputsOfDifferentDtypesAndATupleOfOutputs) {
  SidecarProcess sidecar(unique_name("two"),
                         {"--model", model_path("two_in_two_out"), "--warmup-shape", "2x3,2x3:int64", "--workers", "1",
                          "--max-clients", "4", "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  const std::vector<float> x{1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> index{10, 20, 30, 40, 50, 60};
  const std::int64_t shape[] = {2, 3};
  const TensorView inputs[] = {TensorView::of(x, shape), TensorView::of(index, shape)};
  auto outputs = client.infer(inputs, 5s);
  ASSERT_TRUE(outputs.ok()) << outputs.message();
  ASSERT_EQ(outputs->size(), 2u);
  EXPECT_EQ((*outputs)[0].dtype, DType::kFloat32);
  EXPECT_EQ((*outputs)[1].dtype, DType::kInt64);
  const auto doubled = (*outputs)[0].values<float>();
  const auto incremented = (*outputs)[1].values<std::int64_t>();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(doubled[i], x[i] * 2);
    EXPECT_EQ(incremented[i], index[i] + 1);
  }
  // Swapped dtypes name both expected inputs.
  const TensorView swapped[] = {TensorView::of(index, shape), TensorView::of(x, shape)};
  auto rejected = client.infer(swapped, 5s);
  ASSERT_EQ(rejected.code(), ErrorCode::kRejected);
  EXPECT_NE(rejected.message().find("expected ([2, 3] float32, [2, 3] int64)"), std::string::npos)
      << rejected.message();
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(ModelKinds, ListOutputsAndAnyShapeWithoutWarmupShapes) {
  SidecarProcess sidecar(unique_name("list"), {"--model", model_path("list_out"), "--workers", "1", "--max-clients", "4",
                                               "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_NE(sidecar.log().find("no --warmup-shape given"), std::string::npos);
  Client client = connect_or_fail(sidecar.name());
  for (std::int64_t columns : {3, 5}) {
    std::vector<float> x(static_cast<std::size_t>(2 * columns), 1.0f);
    const std::int64_t shape[] = {2, columns};
    auto outputs = client.infer(TensorView::of(x, shape), 30s);
    ASSERT_TRUE(outputs.ok()) << outputs.message();
    ASSERT_EQ(outputs->size(), 2u);
    EXPECT_EQ((*outputs)[1].shape, (std::vector<std::int64_t>{2}));
    EXPECT_EQ((*outputs)[1].values<float>()[0], static_cast<float>(columns));
  }
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(ModelKinds, DictOutputIsAnsweredWithAnErrorNamingTheType) {
  SidecarProcess sidecar(unique_name("dict"), {"--model", model_path("dict_out"), "--workers", "1", "--max-clients", "4",
                                               "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  std::vector<float> x(4, 1.0f);
  const std::int64_t shape[] = {2, 2};
  auto outputs = client.infer(TensorView::of(x, shape), 30s);
  ASSERT_EQ(outputs.code(), ErrorCode::kUnsupportedOutput);
  EXPECT_NE(outputs.message().find("Dict[str, Tensor]"), std::string::npos) << outputs.message();
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(ModelKinds, AModelThatRaisesIsAnsweredWithTorchScriptsMessage) {
  SidecarProcess sidecar(unique_name("raises"), {"--model", model_path("raises"), "--warmup-shape", "4", "--workers",
                                                 "1", "--max-clients", "4", "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  const std::int64_t shape[] = {4};
  const std::vector<float> negative{1, -1, 4, 9};
  auto raised = client.infer(TensorView::of(negative, shape), 30s);
  ASSERT_EQ(raised.code(), ErrorCode::kModelError);
  EXPECT_NE(raised.message().find("negative input is not allowed"), std::string::npos) << raised.message();
  const std::vector<float> positive{1, 4, 9, 16};
  auto fine = client.infer(TensorView::of(positive, shape), 30s);
  ASSERT_TRUE(fine.ok()) << fine.message();
  EXPECT_EQ((*fine)[0].values<float>()[3], 4.0f);
  EXPECT_EQ(sidecar.stop(), 0);
}

}  // namespace
}  // namespace sidecar
