#include "sidecar/shared/descriptor_check.hpp"

#include <gtest/gtest.h>

namespace sidecar {
namespace {

constexpr std::uint64_t kArena = 1 << 20;

TensorDescriptor float_tensor(std::initializer_list<std::int64_t> dims, std::uint64_t offset = 0) {
  TensorDescriptor tensor{};
  tensor.shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  tensor.shape.rank = static_cast<std::uint8_t>(dims.size());
  std::copy(dims.begin(), dims.end(), tensor.shape.dims);
  tensor.offset = offset;
  shape_byte_size(tensor.shape, tensor.bytes);
  return tensor;
}

RequestDescriptor one_input_request(const TensorDescriptor& input) {
  RequestDescriptor request{};
  request.input_count = 1;
  request.inputs[0] = input;
  request.output_offset = 4096;
  request.output_capacity = kArena - 4096;
  return request;
}

TEST(DescriptorCheck, AcceptsASoundRequest) {
  EXPECT_EQ(check_request(one_input_request(float_tensor({1, 64})), kArena), "");
}

TEST(DescriptorCheck, RejectsUnknownDtype) {
  auto tensor = float_tensor({1, 64});
  tensor.shape.dtype = 200;
  EXPECT_NE(check_tensor(tensor, kArena).find("unknown dtype"), std::string::npos);
  tensor.shape.dtype = 0;
  EXPECT_NE(check_tensor(tensor, kArena).find("unknown dtype"), std::string::npos);
}

TEST(DescriptorCheck, RejectsRankAboveEight) {
  auto tensor = float_tensor({1, 1, 1, 1, 1, 1, 1, 1});
  EXPECT_EQ(check_tensor(tensor, kArena), "");
  tensor.shape.rank = 9;
  EXPECT_NE(check_tensor(tensor, kArena).find("rank 9"), std::string::npos);
}

TEST(DescriptorCheck, RejectsByteCountThatDisagreesWithShape) {
  auto tensor = float_tensor({1, 64});
  tensor.bytes = 255;
  const std::string problem = check_tensor(tensor, kArena);
  EXPECT_NE(problem.find("byte count 255"), std::string::npos) << problem;
  EXPECT_NE(problem.find("needs 256"), std::string::npos) << problem;
}

TEST(DescriptorCheck, RejectsNegativeAndOverflowingDims) {
  auto tensor = float_tensor({1, 64});
  tensor.shape.dims[1] = -64;
  EXPECT_NE(check_tensor(tensor, kArena).find("negative dimension or overflows"), std::string::npos);
  auto huge = float_tensor({1 << 30, 1 << 30, 1 << 30});
  huge.bytes = 0;  // the product wraps: it must not pass as a small tensor
  EXPECT_NE(check_tensor(huge, kArena).find("overflows"), std::string::npos);
}

TEST(DescriptorCheck, RejectsBytesOutsideTheArena) {
  EXPECT_NE(check_tensor(float_tensor({1, 64}, kArena - 128), kArena).find("outside the channel's arena"),
            std::string::npos);
  EXPECT_NE(check_tensor(float_tensor({1, 64}, ~0ull - 63), kArena).find("outside"), std::string::npos);
  EXPECT_EQ(check_tensor(float_tensor({1, 64}, kArena - 256), kArena), "");
}

TEST(DescriptorCheck, RejectsUnalignedOffset) {
  EXPECT_NE(check_tensor(float_tensor({1, 64}, 8), kArena).find("aligned"), std::string::npos);
}

TEST(DescriptorCheck, RejectsBadInputCountAndOutputRegion) {
  auto request = one_input_request(float_tensor({1, 64}));
  request.input_count = 0;
  EXPECT_NE(check_request(request, kArena).find("input count 0"), std::string::npos);
  request.input_count = 9;
  EXPECT_NE(check_request(request, kArena).find("input count 9"), std::string::npos);
  request.input_count = 1;
  request.output_capacity = kArena;  // runs past the end
  EXPECT_NE(check_request(request, kArena).find("output region"), std::string::npos);
  request.output_offset = ~0ull - 63;
  request.output_capacity = 128;
  EXPECT_NE(check_request(request, kArena).find("output region"), std::string::npos);
}

TEST(DescriptorCheck, NamesTheFailingInput) {
  auto request = one_input_request(float_tensor({1, 64}));
  request.input_count = 2;
  request.inputs[1] = float_tensor({2, 2}, 4);
  EXPECT_EQ(check_request(request, kArena).rfind("input 1: ", 0), 0u);
}

TEST(DescriptorCheck, DescribesShapes) {
  EXPECT_EQ(describe_shape(float_tensor({1, 3, 224, 224}).shape), "[1, 3, 224, 224] float32");
}

}  // namespace
}  // namespace sidecar
