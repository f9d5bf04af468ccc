// How the daemon's log lines look. On a terminal or in a file: a timestamp, the level, the name.
// Under systemd, whose journal reads stderr and stamps each line itself: no timestamp, and each
// line starts with its syslog priority ("<3>" for an error, sd-daemon.h's SD_ERR) so that the
// journal files it at that priority rather than all at the unit's default.
#pragma once

#include <spdlog/common.h>
#include <sys/types.h>

#include <string>

namespace sidecar {

// True when $JOURNAL_STREAM ("DEVICE:INODE", set by systemd) names the file stderr is: the
// variable is inherited by children whose stderr goes elsewhere, so it is only trusted when the
// two match (sd-daemon(3)).
bool stderr_is_journal();
bool journal_stream_matches(const char* journal_stream, dev_t device, ino_t inode);

// The sd-daemon prefix of a level: "<3>" for error, "<4>" for warn, "<6>" for info, "<7>" below.
const char* journal_prefix(spdlog::level::level_enum level);

// Makes the default logger write to stderr in the format above. `level` is one of --log-level's.
void configure_logging(const std::string& name, const std::string& level, bool journal);

// A start-up error reported before the logger exists (a bad flag or config file): one line on
// stderr, with the error priority under the journal.
void print_startup_error(const std::string& line, bool journal);

}  // namespace sidecar
