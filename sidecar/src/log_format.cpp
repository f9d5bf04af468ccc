#include "log_format.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>

namespace sidecar {
namespace {

class JournalPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& message, const std::tm&, spdlog::memory_buf_t& out) override {
    const char* prefix = journal_prefix(message.level);
    out.append(prefix, prefix + std::strlen(prefix));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JournalPriority>(); }
};

}  // namespace

bool journal_stream_matches(const char* journal_stream, dev_t device, ino_t inode) {
  if (journal_stream == nullptr) return false;
  std::uintmax_t stream_device = 0;
  std::uintmax_t stream_inode = 0;
  int used = 0;
  if (std::sscanf(journal_stream, "%ju:%ju%n", &stream_device, &stream_inode, &used) != 2) return false;
  if (journal_stream[used] != '\0') return false;
  return stream_device == device && stream_inode == inode;
}

bool stderr_is_journal() {
  struct stat info {};
  if (::fstat(2, &info) != 0) return false;
  return journal_stream_matches(std::getenv("JOURNAL_STREAM"), info.st_dev, info.st_ino);
}

const char* journal_prefix(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical: return SD_CRIT;
    case spdlog::level::err: return SD_ERR;
    case spdlog::level::warn: return SD_WARNING;
    case spdlog::level::info: return SD_INFO;
    default: return SD_DEBUG;
  }
}

void configure_logging(const std::string& name, const std::string& level, bool journal) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("sidecar"));
  spdlog::set_level(spdlog::level::from_str(level));
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (journal) {
    formatter->add_flag<JournalPriority>('*').set_pattern("%*%l [%n:" + name + "] %v");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n:" + name + "] %v");
  }
  spdlog::set_formatter(std::move(formatter));
}

void print_startup_error(const std::string& line, bool journal) {
  std::cerr << (journal ? SD_ERR : "") << "inference-sidecar: " << line << std::endl;
}

}  // namespace sidecar
