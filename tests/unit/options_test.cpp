#include "options.hpp"

#include <gtest/gtest.h>

namespace sidecar {
namespace {

TEST(Options, ParsesSignaturesWithDtypes) {
  const auto single = parse_signature("1x3x224x224");
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0].rank, 4);
  EXPECT_EQ(single[0].dims[3], 224);
  EXPECT_EQ(single[0].dtype, static_cast<std::uint8_t>(DType::kFloat32));

  const auto pair = parse_signature("2x3,2x3:int64");
  ASSERT_EQ(pair.size(), 2u);
  EXPECT_EQ(pair[1].dtype, static_cast<std::uint8_t>(DType::kInt64));
}

TEST(Options, RejectsMalformedSignatures) {
  EXPECT_THROW(parse_signature(""), std::invalid_argument);
  EXPECT_THROW(parse_signature("1xx3"), std::invalid_argument);
  EXPECT_THROW(parse_signature("1x-3"), std::invalid_argument);
  EXPECT_THROW(parse_signature("1x3:complex"), std::invalid_argument);
  EXPECT_THROW(parse_signature("1x1x1x1x1x1x1x1x1"), std::invalid_argument);
}

TEST(Options, ParsesAcceptedRangesAndAnySize) {
  const AcceptedSignature tokens = parse_accepted_signature("1x1..512:int64,1x?");
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[0].dtype, static_cast<std::uint8_t>(DType::kInt64));
  EXPECT_EQ(tokens[0].smallest[1], 1);
  EXPECT_EQ(tokens[0].largest[1], 512);
  EXPECT_EQ(tokens[0].smallest[0], 1);
  EXPECT_EQ(tokens[0].largest[0], 1);
  EXPECT_EQ(tokens[1].largest[1], kAnySize);
  EXPECT_EQ(describe_accepted(tokens), "[1, 1..512] int64, [1, ?] float32");
  EXPECT_THROW(parse_accepted_signature("1x512..1"), std::invalid_argument);
  EXPECT_THROW(parse_accepted_signature("1x1..."), std::invalid_argument);
  EXPECT_THROW(parse_accepted_signature("1x..4"), std::invalid_argument);
  EXPECT_THROW(parse_signature("1x1..4"), std::invalid_argument) << "warm-up shapes are concrete";
}

TEST(Options, WarmupShapesMustLieWithinTheAcceptedOnes) {
  const char* inside[] = {
      "inference-sidecar", "--name",         "x",         "--model",        "m.pt",       "--accept-shape",
      "1x1..512:int64",    "--warmup-shape", "1x7:int64", "--warmup-shape", "1x512:int64"};
  const auto parsed = parse_command_line(static_cast<int>(std::size(inside)), const_cast<char**>(inside));
  ASSERT_TRUE(parsed.options.has_value()) << parsed.error;
  EXPECT_EQ(parsed.options->accepted_signatures.size(), 1u);
  EXPECT_EQ(parsed.options->warmup_signatures.size(), 2u);
  const char* outside[] = {"inference-sidecar", "--name",         "x",          "--model", "m.pt", "--accept-shape",
                           "1x1..512:int64",    "--warmup-shape", "1x513:int64"};
  const auto refused = parse_command_line(static_cast<int>(std::size(outside)), const_cast<char**>(outside));
  EXPECT_FALSE(refused.options.has_value());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.error.find("1x513:int64 is not within any --accept-shape: ([1, 1..512] int64)"), std::string::npos)
      << refused.error;
}

TEST(Options, MoreThanEightWarmupShapesNeedAcceptedRanges) {
  std::vector<std::string> args = {"inference-sidecar", "--name", "x", "--model", "m.pt"};
  for (int length = 1; length <= 20; ++length) {
    args.push_back("--warmup-shape");
    args.push_back("1x" + std::to_string(length));
  }
  const auto argv = [](std::vector<std::string>& strings) {
    std::vector<char*> pointers;
    for (std::string& text : strings) pointers.push_back(text.data());
    return pointers;
  };
  std::vector<char*> without = argv(args);
  const auto refused = parse_command_line(static_cast<int>(without.size()), without.data());
  EXPECT_FALSE(refused.options.has_value());
  EXPECT_NE(refused.error.find("declare ranges with --accept-shape"), std::string::npos) << refused.error;
  args.push_back("--accept-shape");
  args.push_back("1x1..20");
  std::vector<char*> with = argv(args);
  const auto parsed = parse_command_line(static_cast<int>(with.size()), with.data());
  ASSERT_TRUE(parsed.options.has_value()) << parsed.error;
  EXPECT_EQ(parsed.options->warmup_signatures.size(), 20u);
}

TEST(Options, ParsesByteSizes) {
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_EQ(parse_byte_size("64K"), 65536u);
  EXPECT_EQ(parse_byte_size("8M"), 8u << 20);
  EXPECT_EQ(parse_byte_size("1G"), 1ull << 30);
  EXPECT_THROW(parse_byte_size("8X"), std::invalid_argument);
  EXPECT_THROW(parse_byte_size("M"), std::invalid_argument);
}

TEST(Options, EchoTakesTheModelsPlaceAndNeedsShapes) {
  const char* echo[] = {"inference-sidecar", "--name", "x", "--echo", "--warmup-shape", "1x64"};
  const ParsedOptions parsed = parse_command_line(6, const_cast<char**>(echo));
  ASSERT_TRUE(parsed.options.has_value()) << parsed.error;
  EXPECT_TRUE(parsed.options->echo);
  EXPECT_TRUE(parsed.options->model_path.empty());
  const char* both[] = {"inference-sidecar", "--name", "x", "--echo", "--model", "m.pt", "--warmup-shape", "1x64"};
  EXPECT_FALSE(parse_command_line(8, const_cast<char**>(both)).options.has_value());
  const char* shapeless[] = {"inference-sidecar", "--name", "x", "--echo"};
  EXPECT_FALSE(parse_command_line(4, const_cast<char**>(shapeless)).options.has_value());
}

TEST(Options, CommandLineRequiresModelAndValidName) {
  const char* missing_model[] = {"inference-sidecar", "--name", "x"};
  EXPECT_FALSE(parse_command_line(3, const_cast<char**>(missing_model)).options.has_value());
  const char* bad_name[] = {"inference-sidecar", "--name", "../etc", "--model", "m.pt"};
  const auto parsed = parse_command_line(5, const_cast<char**>(bad_name));
  EXPECT_FALSE(parsed.options.has_value());
  EXPECT_NE(parsed.exit_code, 0);
  const char* good[] = {"inference-sidecar", "--name", "x", "--model", "m.pt", "--warmup-shape", "1x64"};
  const auto ok = parse_command_line(7, const_cast<char**>(good));
  ASSERT_TRUE(ok.options.has_value());
  EXPECT_GE(ok.options->workers, 1);
  EXPECT_EQ(ok.options->warmup_signatures.size(), 1u);
  EXPECT_EQ(ok.options->cache_bytes, 64ull << 20);
}

TEST(Options, CacheBytesZeroTurnsTheCacheOffAndTinyBudgetsAreRefused) {
  const char* off[] = {"inference-sidecar", "--name", "x", "--model", "m.pt", "--cache-bytes", "0"};
  const auto parsed_off = parse_command_line(7, const_cast<char**>(off));
  ASSERT_TRUE(parsed_off.options.has_value());
  EXPECT_EQ(parsed_off.options->cache_bytes, 0u);
  const char* sized[] = {"inference-sidecar",       "--name", "x", "--model", "m.pt", "--cache-bytes", "1G",
                         "--cache-max-entry-bytes", "2M"};
  const auto parsed_sized = parse_command_line(9, const_cast<char**>(sized));
  ASSERT_TRUE(parsed_sized.options.has_value());
  EXPECT_EQ(parsed_sized.options->cache_bytes, 1ull << 30);
  EXPECT_EQ(parsed_sized.options->cache_max_entry_bytes, 2ull << 20);
  const char* tiny[] = {"inference-sidecar", "--name", "x", "--model", "m.pt", "--cache-bytes", "1000"};
  const auto parsed_tiny = parse_command_line(7, const_cast<char**>(tiny));
  EXPECT_FALSE(parsed_tiny.options.has_value());
  EXPECT_NE(parsed_tiny.exit_code, 0);
}

TEST(Options, ConnectionFlagsAreParsedAndCheckedAgainstEachOther) {
  const char* given[] = {"inference-sidecar",
                         "--name",
                         "x",
                         "--model",
                         "m.pt",
                         "--runtime-dir",
                         "/tmp/r",
                         "--allow-user",
                         "alice",
                         "--allow-user",
                         "1001",
                         "--allow-group",
                         "ml",
                         "--socket-mode",
                         "0600",
                         "--max-clients",
                         "200",
                         "--arena-bytes",
                         "1M",
                         "--max-arena-bytes",
                         "256M",
                         "--cache-scope",
                         "per-user"};
  const auto parsed = parse_command_line(static_cast<int>(std::size(given)), const_cast<char**>(given));
  ASSERT_TRUE(parsed.options.has_value());
  EXPECT_EQ(parsed.options->runtime_dir, "/tmp/r");
  EXPECT_EQ(parsed.options->allow_users, (std::vector<std::string>{"alice", "1001"}));
  EXPECT_EQ(parsed.options->allow_groups, (std::vector<std::string>{"ml"}));
  EXPECT_EQ(parsed.options->socket_mode, 0600u);
  EXPECT_EQ(parsed.options->max_clients, 200u);
  EXPECT_EQ(parsed.options->arena_bytes, 1u << 20);
  EXPECT_EQ(parsed.options->max_arena_bytes, 256u << 20);
  EXPECT_EQ(parsed.options->cache_scope, CacheScope::kPerUser);

  const char* defaults[] = {"inference-sidecar", "--name", "x", "--model", "m.pt"};
  const auto plain = parse_command_line(5, const_cast<char**>(defaults));
  ASSERT_TRUE(plain.options.has_value());
  EXPECT_EQ(plain.options->socket_mode, 0660u);
  EXPECT_EQ(plain.options->cache_scope, CacheScope::kShared);
  EXPECT_TRUE(plain.options->runtime_dir.empty());

  for (std::vector<const char*> bad : {
           std::vector<const char*>{"--socket-mode", "rw"},
           std::vector<const char*>{"--socket-mode", "01777"},
           std::vector<const char*>{"--max-arena-bytes", "4K", "--arena-bytes", "8M"},
           std::vector<const char*>{"--cache-scope", "everyone"},
           std::vector<const char*>{"--max-clients", "0"},
       }) {
    std::vector<const char*> argv{"inference-sidecar", "--name", "x", "--model", "m.pt"};
    argv.insert(argv.end(), bad.begin(), bad.end());
    const auto refused = parse_command_line(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
    EXPECT_FALSE(refused.options.has_value()) << bad[0] << " " << bad[1];
    EXPECT_NE(refused.exit_code, 0);
  }
}

}  // namespace
}  // namespace sidecar
