// Admission on the sidecar's private copy of a request: the pure checks, in the order they run.
#include "admission.hpp"

#include <gtest/gtest.h>

#include "shape_text.hpp"
#include "warmed_shapes.hpp"

namespace sidecar {
namespace {

constexpr std::uint64_t kArena = 1 << 20;

TensorShape floats(std::initializer_list<std::int64_t> dims) {
  TensorShape shape{};
  shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  shape.rank = static_cast<std::uint8_t>(dims.size());
  std::copy(dims.begin(), dims.end(), shape.dims);
  return shape;
}

RequestDescriptor request_of(const TensorShape& shape) {
  RequestDescriptor request{};
  request.input_count = 1;
  request.inputs[0].shape = shape;
  request.inputs[0].bytes = element_count(shape) * 4;
  request.output_offset = align_up(request.inputs[0].bytes, kTensorAlignment);
  request.output_capacity = 4096;
  return request;
}

const AdmissionRules kRules = AdmissionRules::from(1, {}, {{floats({1, 8})}, {floats({2, 3, 3})}}, 4);

TensorShape int64s(std::initializer_list<std::int64_t> dims) {
  TensorShape shape = floats(dims);
  shape.dtype = static_cast<std::uint8_t>(DType::kInt64);
  return shape;
}

RequestDescriptor int64_request(const TensorShape& shape) {
  RequestDescriptor request = request_of(shape);
  request.inputs[0].bytes = element_count(shape) * 8;
  request.output_offset = align_up(request.inputs[0].bytes, kTensorAlignment);
  return request;
}

// Token ids of 1 to 512, warmed up at 7 and 300, batched up to 4 rows.
AdmissionRules token_rules() {
  return AdmissionRules::from(1, {parse_accepted_signature("1x1..512:int64")},
                              {parse_signature("1x7:int64"), parse_signature("1x300:int64")}, 4);
}

TEST(Admission, TheDeclaredShapesAndBatchableRowsRun) {
  EXPECT_EQ(admit_request(request_of(floats({1, 8})), kArena, kRules, 0).kind, AdmissionVerdict::Kind::kRun);
  EXPECT_EQ(admit_request(request_of(floats({3, 8})), kArena, kRules, 0).kind, AdmissionVerdict::Kind::kRun);
  EXPECT_EQ(admit_request(request_of(floats({2, 3, 3})), kArena, kRules, 0).kind, AdmissionVerdict::Kind::kRun);
  EXPECT_EQ(batch_rows_of(request_of(floats({4, 8})), kRules), 4u);
  EXPECT_EQ(batch_rows_of(request_of(floats({5, 8})), kRules), 0u) << "more rows than --max-batch";
  EXPECT_EQ(batch_rows_of(request_of(floats({2, 3, 3})), kRules), 0u) << "a leading dim of 2 is not batchable";
}

TEST(Admission, TheWarmupPlanCoversEveryBatchSize) {
  const std::vector<InputSignature> plan = kRules.warmup_plan();
  ASSERT_EQ(plan.size(), 2u + 3u);
  EXPECT_TRUE(same_shape(plan[2][0], floats({2, 8})));
  EXPECT_TRUE(same_shape(plan[4][0], floats({4, 8})));
}

TEST(Admission, EachRefusalSaysWhy) {
  struct Case {
    const char* expect;
    Status status;
    RequestDescriptor request;
    std::uint64_t now_ns = 0;
  };
  std::vector<Case> cases;
  RequestDescriptor flags = request_of(floats({1, 8}));
  flags.flags = 1u << 20;
  cases.push_back({"unknown request flags 1048576", Status::kInvalidRequest, flags});
  RequestDescriptor outside = request_of(floats({1, 8}));
  outside.inputs[0].offset = kArena;
  cases.push_back({"lie outside the channel's arena", Status::kInvalidRequest, outside});
  RequestDescriptor cancel = request_of(floats({1, 8}));
  cancel.flags = kRequestFlagCancellable;
  cancel.cancel_offset = kArena - 4;
  cases.push_back({"cancel word at offset", Status::kInvalidRequest, cancel});
  RequestDescriptor late = request_of(floats({1, 8}));
  late.deadline_ns = 100;
  cases.push_back({"the deadline passed", Status::kDeadlineExceeded, late, 200});
  RequestDescriptor two = request_of(floats({1, 8}));
  two.input_count = 2;
  two.inputs[1] = two.inputs[0];
  two.inputs[1].offset = 1024;
  two.output_offset = 2048;
  cases.push_back({"the model takes 1 input tensor(s), the request has 2", Status::kInvalidRequest, two});
  cases.push_back(
      {"inputs ([1, 9] float32) match no accepted signature; expected ([1, 8] float32) or ([2, 3, 3] "
       "float32)",
       Status::kInvalidRequest, request_of(floats({1, 9}))});
  for (const Case& item : cases) {
    const AdmissionVerdict verdict = admit_request(item.request, kArena, kRules, item.now_ns);
    EXPECT_EQ(verdict.kind, AdmissionVerdict::Kind::kRefuse) << item.expect;
    EXPECT_EQ(verdict.status, item.status) << item.expect;
    EXPECT_NE(verdict.message.find(item.expect), std::string::npos) << verdict.message;
  }
  RequestDescriptor flush{};
  flush.flags = kRequestFlagFlushCache;
  EXPECT_EQ(admit_request(flush, kArena, kRules, 0).kind, AdmissionVerdict::Kind::kFlushCache);
}

TEST(Admission, WithoutDeclaredShapesAnyShapeRuns) {
  const AdmissionRules any = AdmissionRules::from(1, {}, {}, 1);
  EXPECT_EQ(admit_request(request_of(floats({7, 3})), kArena, any, 0).kind, AdmissionVerdict::Kind::kRun);
  EXPECT_TRUE(any.warmup_plan().empty());
}

TEST(Admission, ARangeTakesEverySizeWithinItAndNamesItWhenRefusing) {
  const AdmissionRules rules = token_rules();
  for (std::int64_t length : {1, 7, 300, 512}) {
    EXPECT_EQ(admit_request(int64_request(int64s({1, length})), kArena, rules, 0).kind, AdmissionVerdict::Kind::kRun)
        << length;
  }
  for (std::int64_t length : {0, 513}) {
    const AdmissionVerdict verdict = admit_request(int64_request(int64s({1, length})), kArena, rules, 0);
    EXPECT_EQ(verdict.kind, AdmissionVerdict::Kind::kRefuse) << length;
    EXPECT_EQ(verdict.message, "input 0: expected [1, 1..512] int64, got [1, " + std::to_string(length) + "] int64");
  }
  EXPECT_EQ(admit_request(request_of(floats({1, 7})), kArena, rules, 0).kind, AdmissionVerdict::Kind::kRefuse)
      << "the dtype is part of the signature";
}

TEST(Admission, ARangeBatchesRowsOfEqualLengthOnly) {
  const AdmissionRules rules = token_rules();
  EXPECT_EQ(batch_rows_of(int64_request(int64s({3, 300})), rules), 3u);
  EXPECT_EQ(batch_rows_of(int64_request(int64s({3, 513})), rules), 0u);
  RequestDescriptor a = int64_request(int64s({1, 7}));
  RequestDescriptor b = int64_request(int64s({1, 8}));
  EXPECT_FALSE(same_trailing_shapes(std::span<const TensorShape>(&a.inputs[0].shape, 1),
                                    std::span<const TensorShape>(&b.inputs[0].shape, 1)));
}

TEST(Admission, TheWarmupPlanOfARangeAddsItsLargestRequestAndItsBatchSizes) {
  const std::vector<InputSignature> plan = token_rules().warmup_plan();
  // 7, 300, then 512 (the largest, whose outputs bound every request's), then 2..4 rows of each.
  ASSERT_EQ(plan.size(), 3u + 3u * 3u);
  EXPECT_TRUE(same_shape(plan[0][0], int64s({1, 7})));
  EXPECT_TRUE(same_shape(plan[1][0], int64s({1, 300})));
  EXPECT_TRUE(same_shape(plan[2][0], int64s({1, 512})));
  EXPECT_TRUE(same_shape(plan.back()[0], int64s({4, 512})));
}

TEST(WarmedShapes, KnowEveryShapeOfThePlanAndNoOther) {
  const std::vector<InputSignature> plan = token_rules().warmup_plan();
  const WarmedShapes warmed(plan);
  for (const InputSignature& shapes : plan) EXPECT_TRUE(warmed.contains(shapes)) << describe_signature(shapes);
  const TensorShape eight[] = {int64s({1, 8})};
  EXPECT_FALSE(warmed.contains(eight)) << "within the range, never warmed";
  const TensorShape as_floats[] = {floats({1, 7})};
  EXPECT_FALSE(warmed.contains(as_floats)) << "a warmed length of another dtype";
  const TensorShape five_rows[] = {int64s({5, 7})};
  EXPECT_FALSE(warmed.contains(five_rows)) << "more rows than --max-batch";
}

TEST(Admission, AnyDimTakesAnySizeAndHasNoLargestRequest) {
  const AdmissionRules rules = AdmissionRules::from(1, {parse_accepted_signature("1x?x80")}, {}, 1);
  EXPECT_EQ(admit_request(request_of(floats({1, 0, 80})), kArena, rules, 0).kind, AdmissionVerdict::Kind::kRun);
  EXPECT_EQ(admit_request(request_of(floats({1, 3000, 80})), kArena, rules, 0).kind, AdmissionVerdict::Kind::kRun);
  const AdmissionVerdict verdict = admit_request(request_of(floats({1, 30, 81})), kArena, rules, 0);
  EXPECT_EQ(verdict.message, "input 0: expected [1, ?, 80] float32, got [1, 30, 81] float32");
  EXPECT_TRUE(rules.warmup_plan().empty());
}

}  // namespace
}  // namespace sidecar
