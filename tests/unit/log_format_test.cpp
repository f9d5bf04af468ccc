// Log lines for operators: the journal's priority prefix, and warnings about clients' requests
// rate-limited per client.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>

#include "channel_table.hpp"
#include "log_format.hpp"

namespace sidecar {
namespace {

TEST(LogFormat, JournalStreamMustNameThisVeryFile) {
  EXPECT_TRUE(journal_stream_matches("8:12345", 8, 12345));
  EXPECT_FALSE(journal_stream_matches("8:12346", 8, 12345));
  EXPECT_FALSE(journal_stream_matches("9:12345", 8, 12345));
  EXPECT_FALSE(journal_stream_matches("8:12345x", 8, 12345));
  EXPECT_FALSE(journal_stream_matches("", 8, 12345));
  EXPECT_FALSE(journal_stream_matches(nullptr, 8, 12345));
}

TEST(LogFormat, LevelsMapToSdDaemonPriorities) {
  EXPECT_STREQ(journal_prefix(spdlog::level::err), "<3>");
  EXPECT_STREQ(journal_prefix(spdlog::level::warn), "<4>");
  EXPECT_STREQ(journal_prefix(spdlog::level::info), "<6>");
  EXPECT_STREQ(journal_prefix(spdlog::level::debug), "<7>");
}

// Captures what the default logger writes while it lives.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
    sink->set_pattern("%l %v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() const { return text_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream text_;
};

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t count = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

TEST(ClientWarnings, OneClientsFloodDoesNotHideAnothersFirstError) {
  CapturedLog log;
  ChannelSlot flooding;
  flooding.index = 1;
  flooding.peer_pid = 100;
  ChannelSlot quiet;
  quiet.index = 2;
  quiet.peer_pid = 200;
  for (int i = 0; i < 50; ++i) warn_request_failed(flooding, Status::kInvalidRequest, "input 0: expected [1, 64]");
  warn_request_failed(quiet, Status::kModelError, "RuntimeError: negative input\nTraceback line");
  const std::string text = log.text();
  EXPECT_EQ(count_of(text, "client 1 (pid 100"), 1u) << text;
  EXPECT_NE(text.find("warning client 1 (pid 100, uid 0): request refused: input 0: expected [1, 64]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("warning client 2 (pid 200, uid 0): model error: RuntimeError: negative input\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("Traceback"), std::string::npos) << "one line per warning";
}

TEST(ClientWarnings, OnlyModelErrorsAndRefusalsAreWarnedAbout) {
  CapturedLog log;
  ChannelSlot slot;
  warn_request_failed(slot, Status::kDeadlineExceeded, "the deadline passed");
  warn_request_failed(slot, Status::kCancelled, "cancelled by the client");
  EXPECT_EQ(log.text(), "");
}

}  // namespace
}  // namespace sidecar
