// The first call on a freshly loaded model, in-process and through the sidecar, to set beside the
// warmed rows: what warm-up removes. Each sample loads the model anew (a new process), so a row is
// `repeats` first calls, not one.
#pragma once

#include <string>

#include "bench_support.hpp"
#include "latency_rows.hpp"

namespace sidecar::bench {

// in_process_cold: each first call in a new process (this binary run with --first-call-of), on the
// servers' CPUs, with the model loaded, frozen and optimized as the sidecar does, and no warm-up.
Row measure_in_process_cold(const ModelCase& model, std::size_t repeats);
// sidecar_cold: each first call through a new sidecar started without --warmup-shape (its way of
// skipping warm-up), spinning as sidecar_spin does.
Row measure_sidecar_cold(const ModelCase& model, SidecarSettings settings, std::size_t repeats);

// The new process's side of in_process_cold: loads `path`, times one forward on `shape`, prints
// "first_call_us N". Returns the exit code.
int first_call_child(const std::string& path, const std::string& shape);

}  // namespace sidecar::bench
