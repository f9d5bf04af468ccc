// The daemon's TOML config file (--config), read into the same CLI11 options the flags fill: every
// setting is a flag, and the file's keys are the flags' long names without the dashes, so a flag
// added to the command line is a key of the file and a line of --print-config with nothing more.
//
// Why not CLI11's own config support (App::set_config): its parser is a TOML-like subset, and what
// it hands back (CLI::ConfigItem) carries no position, so a value found bad later (a byte size, a
// shape, a range) could not be traced to its line. toml++ parses real TOML and keeps the line of
// every key; the values go into the options through CLI11 all the same, validators included.
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>

#include "sidecar/shared/error.hpp"

namespace sidecar {

// Where each setting's value came from, by key ("cache-bytes"): "FILE:LINE" for the file's values.
// Settings absent from it came from the command line or are defaults.
using SettingSources = std::map<std::string, std::string>;

// True for the options that are settings, as opposed to actions (--help, --version,
// --print-config) and --config itself.
bool is_setting(const CLI::Option& option);
// The key of a setting in the file and in --print-config: its long name without the dashes.
std::string setting_key(const CLI::Option& option);

// Reads `path` into the settings of `app` (already parsed from the command line) that the command
// line did not give: a flag given replaces the file's value, a repeatable one the file's whole
// list. kInvalidArgument with one line "PATH:LINE: KEY: what is wrong" for a value CLI11 refuses,
// an unknown key, a value of the wrong TOML type, or a file that is not TOML.
Done read_config_file(CLI::App& app, const std::string& path, SettingSources& sources);

// Every setting of `app` as it stands after parsing, as TOML that read_config_file reads back to
// the same settings: the defaults too, in the order of --help.
std::string settings_as_toml(const CLI::App& app);

}  // namespace sidecar
