// sidecar-bench --plot: hands the rows' JSON to bench/plot.py, which draws them with matplotlib.
#pragma once

#include <string>

namespace sidecar::bench {

// Throws, naming what to install, when the script cannot run (no python3, no matplotlib), so that a
// run asked to plot fails before it spends minutes measuring.
void check_plotting();
// Writes the PNGs of the rows in `json_path` into `out_dir`; throws if the script fails.
void plot_rows(const std::string& json_path, const std::string& out_dir);

}  // namespace sidecar::bench
