// What sidecar-bench prints and writes: the table of rows with their CPU per request, the
// summaries that compare rows (what the sidecar adds over in-process, the echo rows against the
// spinning sidecar's, cold against warmed calls, a cache hit and its pieces), and the JSON.
#pragma once

#include <string>
#include <vector>

#include "bench_support.hpp"

namespace sidecar::bench {

void print_table(const std::vector<Row>& rows);
const Row* find_row(const std::vector<Row>& rows, const std::string& name, const std::string& model);
void print_echo_and_cold_summary(const std::vector<Row>& rows);
void print_cache_summary(const std::vector<Row>& rows);
void write_json(const std::string& path, const std::vector<Row>& rows);

}  // namespace sidecar::bench
