#!/usr/bin/python3
"""Draws sidecar-bench's rows (its --json output) as PNGs.

  bench/plot.py --out plots/ bench.json [more.json ...]

- latency-cdf-MODEL.png: for every model, the latency CDF of each one-client row (from the row's
  "quantiles_us"), on a log axis, so that rows microseconds and milliseconds apart fit one figure.
- clients-MODEL.png: for every model with --clients rows, throughput and p99 against the number of
  clients, one line per row kind (transport, batching on or off).

sidecar-bench --plot DIR runs this. It needs matplotlib (Debian: python3-matplotlib); --check exits
0 when it can be imported, so that a bench run fails before it measures rather than after.
"""

import argparse
import json
import os
import sys

MISSING_MATPLOTLIB = 3


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        print("bench/plot.py: matplotlib is missing: apt-get install python3-matplotlib "
              "(scripts/deps.sh), and run this with /usr/bin/python3", file=sys.stderr)
        sys.exit(MISSING_MATPLOTLIB)
    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as pyplot
    return pyplot


def whole_number_ticks(axes, values):
    from matplotlib.ticker import FixedLocator, FormatStrFormatter
    axes.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    axes.xaxis.set_major_formatter(FormatStrFormatter("%d"))
    axes.xaxis.set_minor_locator(FixedLocator([]))


def save(pyplot, figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def read_rows(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as file:
            rows.extend(json.load(file)["rows"])
    return rows


def in_order_of_appearance(values):
    return list(dict.fromkeys(values))


def plot_latency_cdfs(pyplot, rows, out_dir):
    written = []
    latency_rows = [row for row in rows if row.get("clients", 0) == 0 and row.get("quantiles_us")]
    for model in in_order_of_appearance(row["model"] for row in latency_rows):
        figure, axes = pyplot.subplots(figsize=(10, 6))
        mine = [row for row in latency_rows if row["model"] == model]
        # A transport and its echo row share a colour; the echo is dotted, a cold first call
        # dash-dotted, and the pieces of a cache hit (hash, compare, copy: not round trips) dashed.
        transports = in_order_of_appearance(row["name"].removesuffix("_echo") for row in mine)
        colours = pyplot.cm.tab20.colors
        for row in mine:
            quantiles = row["quantiles_us"]
            fractions = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
            name = row["name"]
            style = ("--" if row.get("input_bytes", 0) else ":" if name.endswith("_echo")
                     else "-." if name.endswith("_cold") else "-")
            colour = colours[transports.index(name.removesuffix("_echo")) % len(colours)]
            axes.step(quantiles, fractions, where="post", linestyle=style, color=colour,
                      label=f'{name} (p50 {row["p50_us"]:.3g} µs)')
        axes.set_xscale("log")
        axes.set_xlabel("latency, µs (log)")
        axes.set_ylabel("fraction of requests at or under")
        axes.set_ylim(0, 1.01)
        axes.set_title(f"{model}: round-trip latency, one client")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        written.append(save(pyplot, figure, os.path.join(out_dir, f"latency-cdf-{model}.png")))
    return written


def plot_clients(pyplot, rows, out_dir):
    written = []
    client_rows = [row for row in rows if row.get("clients", 0) > 0]
    for model in in_order_of_appearance(row["model"] for row in client_rows):
        figure, (throughput_axes, p99_axes) = pyplot.subplots(1, 2, figsize=(12, 5))
        mine = [row for row in client_rows if row["model"] == model]
        for kind in in_order_of_appearance(row["name"] for row in mine):
            points = sorted((row for row in mine if row["name"] == kind), key=lambda row: row["clients"])
            clients = [row["clients"] for row in points]
            throughput_axes.plot(clients, [row["throughput_rps"] for row in points], marker="o", label=kind)
            p99_axes.plot(clients, [row["p99_us"] / 1000 for row in points], marker="o", label=kind)
        for axes in (throughput_axes, p99_axes):
            axes.set_xscale("log", base=2)
            axes.set_xlabel("clients (closed loop, one request in flight each)")
            whole_number_ticks(axes, [row["clients"] for row in mine])
            axes.grid(True, which="both", alpha=0.3)
            axes.legend(fontsize="small")
        throughput_axes.set_ylabel("requests/s")
        throughput_axes.set_title(f"{model}: throughput")
        p99_axes.set_ylabel("p99 latency, ms")
        p99_axes.set_yscale("log")
        p99_axes.set_title(f"{model}: p99 latency")
        written.append(save(pyplot, figure, os.path.join(out_dir, f"clients-{model}.png")))
    return written


def main():
    parser = argparse.ArgumentParser(description="PNGs of sidecar-bench --json rows")
    parser.add_argument("json", nargs="*", help="files written by sidecar-bench --json")
    parser.add_argument("--out", default=".", help="directory for the PNGs")
    parser.add_argument("--check", action="store_true", help="only check that matplotlib can be imported")
    args = parser.parse_args()
    pyplot = import_pyplot()
    if args.check:
        return 0
    if not args.json:
        parser.error("no JSON file given")
    rows = read_rows(args.json)
    os.makedirs(args.out, exist_ok=True)
    written = plot_latency_cdfs(pyplot, rows, args.out) + plot_clients(pyplot, rows, args.out)
    if not written:
        print("bench/plot.py: no rows with quantiles_us or clients to draw", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
