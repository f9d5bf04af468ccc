// The start-up check that the warmed-up requests fit a client's default arena.
#include "arena_fit.hpp"
#include "options.hpp"

#include <gtest/gtest.h>

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

TEST(ArenaFit, ARequestTakesTheCancelWordItsAlignedInputsAndItsPackedOutputs) {
  // 64 (cancel word) + 4 * 10 = 40 -> 64, + 1000 * 4 = 4000 -> 4128 + two outputs packed.
  const TensorShape inputs[] = {shape({10}), shape({1000})};
  const TensorShape outputs[] = {shape({3}), shape({5}, DType::kInt64)};
  const std::uint64_t output_sizes[] = {12, 40};
  const std::uint64_t expected = align_up(64 + 64 + align_up(4000, 64) + OutputRegion::packed_bytes(output_sizes, 2), 64);
  EXPECT_EQ(arena_bytes_for_request(inputs, outputs), expected);
}

TEST(ArenaFit, RequestsThatFitPass) {
  const std::vector<WarmupResult> results = {warmed({shape({1, 3, 224, 224})}, {shape({1, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(results, 1, 8 << 20).ok());
}

TEST(ArenaFit, OutputsThatDoNotFitNameTheShapeTheSizesAndTheArenaNeeded) {
  // A 1x3x224x224 image in, the same size out: 64 + 602112 + 602112 bytes.
  const std::vector<WarmupResult> results = {warmed({shape({1, 3, 224, 224})}, {shape({1, 3, 224, 224})})};
  const Done fits = check_requests_fit_arena(results, 1, 1 << 20);
  ASSERT_FALSE(fits.ok());
  EXPECT_EQ(fits.code(), ErrorCode::kOutputTooLarge);
  EXPECT_EQ(fits.message(),
            "outputs of 1x3x224x224 need 1204288 bytes of arena with their inputs, --arena-bytes is 1048576; use "
            "--arena-bytes >= 1208320");
}

TEST(ArenaFit, BatchableShapesAreCheckedAtMaxBatchRows) {
  // 1x64 in, 1x10 out: 64 + 256 + 40 fits in 4K alone; 32 rows need 64 + 8192 + 1280.
  const std::vector<WarmupResult> results = {warmed({shape({1, 64})}, {shape({1, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(results, 1, 4096).ok());
  const Done fits = check_requests_fit_arena(results, 32, 4096);
  ASSERT_FALSE(fits.ok());
  EXPECT_NE(fits.message().find("outputs of 32x64 need 9536 bytes"), std::string::npos) << fits.message();
  EXPECT_NE(fits.message().find("--arena-bytes >= 12288 (or a smaller --max-batch)"), std::string::npos)
      << fits.message();
  // A shape whose leading dim is not 1 is never batched: its own size counts.
  const std::vector<WarmupResult> unbatched = {warmed({shape({2, 64})}, {shape({2, 10})})};
  EXPECT_TRUE(check_requests_fit_arena(unbatched, 32, 4096).ok());
}

TEST(ArenaFit, ShapesAreSpelledAsWarmupShapeTakesThem) {
  const TensorShape two[] = {shape({1, 8}, DType::kInt64), shape({1, 8})};
  EXPECT_EQ(shape_flag_text(two), "1x8:int64,1x8");
  EXPECT_EQ(parse_signature(shape_flag_text(two)).size(), 2u);
}

}  // namespace
}  // namespace sidecar
