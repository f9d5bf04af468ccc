// The start-up check that the warmed-up requests fit a client's default arena.
#include "arena_fit.hpp"

#include <gtest/gtest.h>

#include "options.hpp"
#include "sidecar/shared/output_region.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar {
namespace {

TensorShape shape(std::initializer_list<std::int64_t> dims, DType dtype = DType::kFloat32) {
  TensorShape result{};
  result.dtype = static_cast<std::uint8_t>(dtype);
  result.rank = static_cast<std::uint8_t>(dims.size());
  std::copy(dims.begin(), dims.end(), result.dims);
  return result;
}

WarmupResult warmed(InputSignature inputs, std::vector<TensorShape> outputs) {
  WarmupResult result;
  result.inputs = std::move(inputs);
  result.outputs = std::move(outputs);
  return result;
}

// A fixed signature and the outputs its warm-up gave.
OutputBound bound(InputSignature inputs, std::vector<TensorShape> outputs) {
  return OutputBound{exactly(inputs), std::move(outputs), true};
}

TEST(ArenaFit, ARequestTakesTheCancelWordItsAlignedInputsAndItsPackedOutputs) {
  // 64 (cancel word) + 4 * 10 = 40 -> 64, + 1000 * 4 = 4000 -> 4128 + two outputs packed.
  const TensorShape inputs[] = {shape({10}), shape({1000})};
  const TensorShape outputs[] = {shape({3}), shape({5}, DType::kInt64)};
  const std::uint64_t output_sizes[] = {12, 40};
  const std::uint64_t expected =
      align_up(64 + 64 + align_up(4000, 64) + OutputRegion::packed_bytes(output_sizes, 2), 64);
  EXPECT_EQ(arena_bytes_for_request(inputs, outputs), expected);
}

TEST(ArenaFit, RequestsThatFitPass) {
  const std::vector<OutputBound> results = {bound({shape({1, 3, 224, 224})}, {shape({1, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(results, 1, 8 << 20).ok());
}

TEST(ArenaFit, OutputsThatDoNotFitNameTheShapeTheSizesAndTheArenaNeeded) {
  // A 1x3x224x224 image in, the same size out: 64 + 602112 + 602112 bytes.
  const std::vector<OutputBound> results = {bound({shape({1, 3, 224, 224})}, {shape({1, 3, 224, 224})})};
  const Done fits = check_requests_fit_arena(results, 1, 1 << 20);
  ASSERT_FALSE(fits.ok());
  EXPECT_EQ(fits.code(), ErrorCode::kOutputTooLarge);
  EXPECT_EQ(fits.message(),
            "outputs of 1x3x224x224 need 1204288 bytes of arena with their inputs, --arena-bytes is 1048576; use "
            "--arena-bytes >= 1208320");
}

TEST(ArenaFit, BatchableShapesAreCheckedAtMaxBatchRows) {
  // 1x64 in, 1x10 out: 64 + 256 + 40 fits in 4K alone; 32 rows need 64 + 8192 + 1280.
  const std::vector<OutputBound> results = {bound({shape({1, 64})}, {shape({1, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(results, 1, 4096).ok());
  const Done fits = check_requests_fit_arena(results, 32, 4096);
  ASSERT_FALSE(fits.ok());
  EXPECT_NE(fits.message().find("outputs of 32x64 need 9536 bytes"), std::string::npos) << fits.message();
  EXPECT_NE(fits.message().find("--arena-bytes >= 12288 (or a smaller --max-batch)"), std::string::npos)
      << fits.message();
  // A shape whose leading dim is not 1 is never batched: its own size counts.
  const std::vector<OutputBound> unbatched = {bound({shape({2, 64})}, {shape({2, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(unbatched, 32, 4096).ok());
}

TEST(ArenaFit, ARangeIsBoundByTheOutputsOfItsLargestRequestAndAnyDimByNothing) {
  const AdmissionRules rules =
      AdmissionRules::from(1, {parse_accepted_signature("1x1..512:int64"), parse_accepted_signature("1x?:int32")},
                           {parse_signature("1x7:int64")}, 1);
  const std::vector<WarmupResult> results = {warmed({shape({1, 7}, DType::kInt64)}, {shape({1, 7, 16})}),
                                             warmed({shape({1, 512}, DType::kInt64)}, {shape({1, 512, 16})})};
  const std::vector<OutputBound> bounds = output_bounds(rules, results);
  ASSERT_EQ(bounds.size(), 2u);
  ASSERT_TRUE(bounds[0].known);
  ASSERT_EQ(bounds[0].outputs.size(), 1u);
  EXPECT_TRUE(same_shape(bounds[0].outputs[0], shape({1, 512, 16})));
  EXPECT_FALSE(bounds[1].known);
  // Length 7 reserves room for 512 tokens' outputs: a bound, checked again after the forward.
  const TensorShape seven[] = {shape({1, 7}, DType::kInt64)};
  EXPECT_EQ(expected_output_bytes(bounds[0].accepted, bounds[0].outputs, seven, 1), 512u * 16u * 4u);
  const TensorShape too_long[] = {shape({1, 513}, DType::kInt64)};
  EXPECT_EQ(expected_output_bytes(bounds[0].accepted, bounds[0].outputs, too_long, 1), 0u);
  // The arena check uses the largest request: 64 + 4096 + 32768 bytes.
  const Done fits = check_requests_fit_arena(bounds, 1, 32768);
  ASSERT_FALSE(fits.ok());
  EXPECT_NE(fits.message().find("outputs of 1x512:int64 need 36928 bytes"), std::string::npos) << fits.message();
}

TEST(ArenaFit, ShapesAreSpelledAsWarmupShapeTakesThem) {
  const TensorShape two[] = {shape({1, 8}, DType::kInt64), shape({1, 8})};
  EXPECT_EQ(shape_flag_text(two), "1x8:int64,1x8");
  EXPECT_EQ(parse_signature(shape_flag_text(two)).size(), 2u);
}

}  // namespace
}  // namespace sidecar
