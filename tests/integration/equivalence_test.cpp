// The sidecar's answers against an in-process forward of the same model, prepared the same way
// (frozen + optimize_for_inference, one intra-op thread): for the unbatched path they must be equal
// bit for bit. Links LibTorch, so it also covers the header-only torch adapter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model_runner.hpp"
#include "sidecar/client.hpp"
#include "sidecar/torch_adapter.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::model_path;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

class TensorSink final : public OutputSink {
 public:
  Status accept(std::span<const OutputView> outputs, std::string&) override {
    tensors.clear();
    for (const OutputView& output : outputs) {
      const std::vector<std::int64_t> dims(output.shape.dims, output.shape.dims + output.shape.rank);
      tensors.push_back(torch::from_blob(const_cast<void*>(output.data), dims,
                                         torch_adapter::scalar_type(static_cast<DType>(output.shape.dtype)))
                            .clone());
    }
    return Status::kOk;
  }
  std::vector<torch::Tensor> tensors;
};

TEST(Equivalence, DemoModelThroughTheSidecarEqualsInProcessForwardBitForBit) {
  configure_torch_threads(1, 1);
  const std::string name = unique_name("equal");
  SidecarProcess sidecar(name, {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "2",
                                "--warmup-iterations", "5", "--max-clients", "4"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();

  auto runner = ModelRunner::load(model_path("demo"), {});
  runner->warm_up({{TensorShape{static_cast<std::uint8_t>(DType::kFloat32), 4, 0, 0, {1, 3, 224, 224}}}}, 5);
  auto client = Client::connect(name);
  ASSERT_TRUE(client.ok()) << client.message();

  torch::manual_seed(42);
  for (int trial = 0; trial < 5; ++trial) {
    const torch::Tensor input = torch::randn({1, 3, 224, 224});
    auto remote = client->infer(torch_adapter::view_of(input), 60s);
    ASSERT_TRUE(remote.ok()) << remote.message();
    ASSERT_EQ(remote->size(), 1u);
    const torch::Tensor through_sidecar = torch_adapter::to_torch((*remote)[0]);

    TensorSink sink;
    InputView view{TensorShape{static_cast<std::uint8_t>(DType::kFloat32), 4, 0, 0, {1, 3, 224, 224}}, nullptr};
    torch::Tensor local_input = input.clone();
    view.data = local_input.data_ptr();
    const CallOutcome outcome = runner->run(std::span<const InputView>(&view, 1), sink);
    ASSERT_EQ(outcome.status, Status::kOk) << outcome.message;
    ASSERT_EQ(sink.tensors.size(), 1u);
    EXPECT_EQ(through_sidecar.sizes(), sink.tensors[0].sizes());
    EXPECT_TRUE(torch::equal(through_sidecar, sink.tensors[0]))
        << "max difference " << (through_sidecar - sink.tensors[0]).abs().max().item<float>();
  }
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(TorchAdapter, RoundTripsDtypesAndShapes) {
  const torch::Tensor ints = torch::arange(12, torch::kLong).reshape({3, 4});
  const TensorView view = torch_adapter::view_of(ints);
  EXPECT_EQ(view.dtype, DType::kInt64);
  EXPECT_EQ(view.bytes, 96u);
  const torch::Tensor back = torch_adapter::to_torch(Tensor::copy_of(view));
  EXPECT_TRUE(torch::equal(back, ints));
  EXPECT_THROW(torch_adapter::view_of(ints.t()), std::invalid_argument);
  EXPECT_THROW(torch_adapter::dtype_for(c10::kComplexFloat), std::invalid_argument);
}

}  // namespace
}  // namespace sidecar
