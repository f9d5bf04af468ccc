// sidecar-bench: round-trip latency of a model called in-process and through a real sidecar
// process, spinning and blocking, of the result cache's hits and misses, and of the peers a user
// would run instead. Prints a table; --json writes the rows for later comparison.
//
// Rows:
//   in_process        the frozen model called in this process (the floor)
//   sidecar_spin      through the sidecar, cache bypassed, both sides polling (--spin-us, adaptive)
//   sidecar_block     the same, both sides sleeping at once
//   sidecar_idle      what sidecar_spin's sidecar spends per second once its client stops sending
//   unix_socket       the same model behind a plain blocking Unix-socket server (sidecar-socket-server),
//                     length-prefixed bytes: what a user would write instead of the sidecar
//   cache_miss        a new input every call, cache on: the client's lookup misses, the sidecar
//                     runs the model and stores the result
//   cache_hit_client  the same input every call, looked up by the client in shared memory
//   cache_hit_sidecar the same input every call, looked up by the sidecar
//   key_hash, memcmp, memcpy   the pieces of a hit on the model's input bytes, for GB/s
//   in_process_cold, sidecar_cold   the first call on a freshly loaded model (no warm-up), each
//                     sample a new process (--cold-repeats of them), against in_process and
//                     sidecar_spin: what warm-up removes
// With --peers, also:
//   grpc_tcp, grpc_unix   the same model behind a synchronous gRPC C++ server (sidecar-grpc-server),
//                     tensors as bytes, over TCP loopback and over a Unix socket (when built with gRPC)
//   *_echo            sidecar_spin, sidecar_block, unix_socket, grpc_tcp and grpc_unix serving no
//                     model (--echo: each answer is the request's inputs): what moving the bytes costs
// Every server of a model is started once; then the rows are measured in --blocks blocks each,
// round-robin, every other server stopped (SIGSTOP) meanwhile, so that the machine's drift and idle
// spinning hit every row alike. Percentiles are over all the blocks of a row.
// With --clients 1,2,4,8,16: closed-loop client processes instead, each with one request in
// flight, new inputs every call, cache bypassed; rows batching_off and batching_on per client count
// with throughput_rps and mean_batch_size beside the latency percentiles, on "demo" and "mlp"; with
// --peers also unix_socket, grpc_tcp and grpc_unix per client count (the servers take a thread per
// connection, and gRPC's own pool).
// Every latency row has the CPU time its client and its server spent per request (all threads,
// the scheduler's own account); --rate R paces the client, to show a service that is not saturated.
// The sidecar rows use the zero-copy path (inputs written in place); the cache rows use infer(),
// whose lookup reads the caller's buffer, so a client-side hit copies nothing into shared memory.
//
//   sidecar-bench                                  # makes and measures "tiny" and "demo"
//   sidecar-bench --peers --json out.json          # and the peers, and the echo rows
//   sidecar-bench --peers --clients 1,2,4,8,16     # throughput of the sidecar and the peers
//   sidecar-bench --model m.pt --shape 1x3x224x224 --json out.json
//   sidecar-bench --model tiny.pt --shape 1x64 --rate 1000    # a client paced to 1000 requests/s
//   sidecar-bench --plot plots/                    # and PNGs of the rows (bench/plot.py)
#include <sched.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench_support.hpp"
#include "cold_rows.hpp"
#include "latency_rows.hpp"
#include "model_runner.hpp"
#include "model_zoo.hpp"
#include "options.hpp"
#include "plot_runner.hpp"
#include "report.hpp"
#include "throughput_rows.hpp"

namespace sidecar::bench {
namespace {

int run(int argc, char** argv) {
  std::string model_path, shape = "1x3x224x224", json_path, sidecar_binary = SIDECAR_BINARY;
  PeerBinaries peers{SOCKET_SERVER_BINARY, GRPC_SERVER_BINARY};
  std::size_t requests = 0, blocks = 10, cold_repeats = 5;
  bool with_peers = false;
  std::string first_call_of;
  CLI::App app{"sidecar-bench: round-trip latency in-process and through the sidecar"};
  app.add_option("--model", model_path, "TorchScript model (default: make and measure 'tiny' and 'demo')");
  app.add_option("--shape", shape, "input signature for --model, e.g. 1x3x224x224 or 1x8:int64,1x8");
  app.add_option("--json", json_path, "write the rows to this file");
  std::string plot_dir;
  app.add_option("--plot", plot_dir,
                 "draw the rows into PNGs in this directory with bench/plot.py (the JSON goes there too unless "
                 "--json names a file)");
  app.add_option("--requests", requests, "measured requests per row (default: 20000 tiny, 300 demo, 300 --model)");
  double rate = 0;
  app.add_option("--rate", rate,
                 "pace the client of the latency rows to this many requests/s (a request starts at its slot or "
                 "when the answer before it came, whichever is later); default: as fast as answers come");
  std::uint32_t spin_us = 50;
  app.add_option("--spin-us", spin_us,
                 "both sides' spin budget in the spinning sidecar rows (the sidecar's and the library's default; "
                 "the spin adapts within it)")
      ->capture_default_str();
  app.add_option("--sidecar", sidecar_binary, "inference-sidecar binary");
  app.add_option("--socket-server", peers.socket_server, "sidecar-socket-server binary (the unix_socket rows)");
  app.add_option("--grpc-server", peers.grpc_server, "sidecar-grpc-server binary (the grpc rows)");
  app.add_flag("--peers", with_peers,
               "also the gRPC rows, and the echo rows of the sidecar and every peer (and with --clients, the "
               "peers' throughput rows)");
  app.add_option("--blocks", blocks, "blocks per latency row, measured round-robin")->capture_default_str();
  app.add_option("--cold-repeats", cold_repeats, "fresh loads behind each cold row (0: no cold rows)")
      ->capture_default_str();
  // The new process behind one in_process_cold sample.
  app.add_option("--first-call-of", first_call_of)->group("");
  std::vector<std::string> sidecar_args;
  app.add_option("--sidecar-args", sidecar_args,
                 "further sidecar flags for the sidecar_spin and sidecar_block rows, one string "
                 "(e.g. \"--wake-ahead-us 0\")")
      ->delimiter(' ');
  bool no_pin = false;
  app.add_flag("--no-pin", no_pin, "let the scheduler place the client and the sidecar");
  bool no_cache = false;
  app.add_flag("--no-cache-rows", no_cache, "skip the cache rows");
  std::vector<std::uint32_t> client_counts;
  ThroughputSettings throughput;
  app.add_option("--clients", client_counts,
                 "throughput rows instead: closed-loop client processes, e.g. --clients 1,2,4,8,16 (default models: "
                 "demo and mlp)")
      ->delimiter(',');
  app.add_option("--max-batch", throughput.max_batch, "--max-batch of the batching_on rows")->capture_default_str();
  app.add_option("--batch-delay-us", throughput.batch_delay_us, "--max-queue-delay-us of the batching_on rows")
      ->capture_default_str();
  app.add_option("--seconds", throughput.seconds, "length of each throughput row")->capture_default_str();
  app.add_option("--on-args", throughput.on_args, "further sidecar flags for the batching_on rows, one string")
      ->delimiter(' ');
  app.add_option("--off-args", throughput.off_args, "further sidecar flags for the batching_off rows, one string")
      ->delimiter(' ');
  CLI11_PARSE(app, argc, argv);
  if (!first_call_of.empty()) return first_call_child(first_call_of, shape);
  if (with_peers && !grpc_peer_built()) std::fprintf(stderr, "built without gRPC: no grpc rows\n");
  std::vector<Peer> peer_kinds{Peer::kUnixSocket};
  if (with_peers && grpc_peer_built()) peer_kinds.insert(peer_kinds.end(), {Peer::kGrpcTcp, Peer::kGrpcUnix});
  if (!plot_dir.empty()) {
    check_plotting();
    std::filesystem::create_directories(plot_dir);
    if (json_path.empty()) json_path = plot_dir + "/sidecar-bench.json";
  }
  // Many clients share the machine with the sidecar: the scheduler places everyone.
  placement = plan_placement(!no_pin && client_counts.empty());
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
  std::fprintf(stderr, "%s\n",
               placement.pinned ? "client pinned to the last CPU, the servers to the others" : "not pinned");
  std::fprintf(stderr, "sockets in %s\n", bench_runtime_dir().c_str());

  // As the sidecar's defaults, so that in_process does the same work and rows differ by transport.
  configure_torch_threads(1, 1);
  retain_freed_memory();
  std::vector<ModelCase> models;
  const std::string scratch = std::filesystem::temp_directory_path() / ("sidecar-bench-" + std::to_string(::getpid()));
  if (model_path.empty() && client_counts.empty()) {
    std::filesystem::create_directories(scratch);
    save_tiny_model(scratch + "/tiny.pt");
    save_demo_model(scratch + "/demo.pt");
    models.push_back({"tiny", scratch + "/tiny.pt", parse_signature("1x64"), requests ? requests : 20000});
    models.push_back({"demo", scratch + "/demo.pt", parse_signature("1x3x224x224"), requests ? requests : 300});
  } else if (model_path.empty()) {
    // Throughput: the demo CNN, whose cost per row is the same at any batch size, and the MLP,
    // whose weights make a batch cost little more than one row.
    std::filesystem::create_directories(scratch);
    save_demo_model(scratch + "/demo.pt");
    save_mlp_model(scratch + "/mlp.pt");
    models.push_back({"demo", scratch + "/demo.pt", parse_signature("1x3x224x224"), 0});
    models.push_back({"mlp", scratch + "/mlp.pt", parse_signature("1x1024"), 0});
  } else {
    models.push_back(
        {std::filesystem::path(model_path).stem(), model_path, parse_signature(shape), requests ? requests : 300});
  }
  for (auto& model : models) {
    model.rate_per_client = rate;
    for (const TensorShape& input : model.signature) {
      if (input.dtype != static_cast<std::uint8_t>(DType::kFloat32)) {
        throw std::runtime_error("sidecar-bench feeds float32 inputs only");
      }
    }
  }

  std::vector<Row> rows;
  if (!client_counts.empty()) {
    for (const ModelCase& model : models) {
      for (std::uint32_t clients : client_counts) {
        for (bool batching : {false, true}) {
          std::fprintf(stderr, "%s, %u clients, batching %s...\n", model.name.c_str(), clients,
                       batching ? "on" : "off");
          rows.push_back(measure_throughput(model, sidecar_binary, clients, batching, throughput));
        }
        for (Peer peer : peer_kinds) {
          if (!with_peers) break;
          std::fprintf(stderr, "%s, %u clients, %s...\n", model.name.c_str(), clients, peer_row_name(peer, false).c_str());
          rows.push_back(measure_peer_throughput(model, peer, peers, clients, throughput.seconds));
        }
      }
    }
    if (model_path.empty()) std::filesystem::remove_all(scratch);
    print_throughput(rows);
    if (!json_path.empty()) write_json(json_path, rows);
    if (!plot_dir.empty()) plot_rows(json_path, plot_dir);
    return 0;
  }
  for (const ModelCase& model : models) {
    std::fprintf(stderr, "measuring %s: starting every server...\n", model.name.c_str());
    // Spinning: both sides poll for up to --spin-us before they sleep, adapting within it.
    SidecarSettings spin{sidecar_binary, std::chrono::microseconds(spin_us), false, true, sidecar_args};
    SidecarSettings block{sidecar_binary, std::chrono::microseconds(0), false, true, sidecar_args};
    {
      std::vector<std::unique_ptr<LatencyProbe>> probes;
      probes.push_back(in_process_probe(model));
      probes.push_back(sidecar_probe("sidecar_spin", model, spin));
      probes.push_back(sidecar_probe("sidecar_block", model, block));
      for (Peer peer : peer_kinds) probes.push_back(peer_probe(peer, model, false, peers));
      if (with_peers) {
        SidecarSettings spin_echo = spin, block_echo = block;
        spin_echo.echo = block_echo.echo = true;
        probes.push_back(sidecar_probe("sidecar_spin_echo", model, spin_echo));
        probes.push_back(sidecar_probe("sidecar_block_echo", model, block_echo));
        for (Peer peer : peer_kinds) probes.push_back(peer_probe(peer, model, true, peers));
      }
      if (!no_cache) {
        for (CacheRow kind : {CacheRow::kMiss, CacheRow::kHitInClient, CacheRow::kHitInSidecar}) {
          probes.push_back(cache_probe(kind, model, sidecar_binary, spin.spin));
        }
      }
      std::fprintf(stderr, "measuring %s: %zu rows in %zu blocks...\n", model.name.c_str(), probes.size(), blocks);
      for (Row& row : measure_interleaved(probes, model, blocks)) rows.push_back(std::move(row));
      std::fprintf(stderr, "measuring %s: the spinning sidecar idle...\n", model.name.c_str());
      for (auto& probe : probes) {
        if (probe->row() == "sidecar_spin") rows.push_back(measure_idle("sidecar_idle", *probe, model));
      }
    }
    if (cold_repeats > 0) {
      std::fprintf(stderr, "measuring %s: first calls...\n", model.name.c_str());
      rows.push_back(measure_in_process_cold(model, cold_repeats));
      rows.push_back(measure_sidecar_cold(model, spin, cold_repeats));
    }
    if (!no_cache) {
      for (Row& row : measure_hit_parts(model)) rows.push_back(std::move(row));
    }
  }
  if (model_path.empty()) std::filesystem::remove_all(scratch);
  if (rate > 0) std::printf("the latency rows' client paced to %.0f requests/s\n", rate);
  print_table(rows);
  print_echo_and_cold_summary(rows);
  print_cache_summary(rows);
  if (!json_path.empty()) write_json(json_path, rows);
  if (!plot_dir.empty()) plot_rows(json_path, plot_dir);
  return 0;
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) {
  try {
    return sidecar::bench::run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sidecar-bench: %s\n", error.what());
    return 1;
  }
}
