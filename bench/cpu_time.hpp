// The CPU a row costs: on-CPU time of every thread of the client process and of the server
// process over the measured interval. It is the scheduler's own account (what
// /proc/PID/task/*/schedstat shows per thread), read as each process's CPU-time clock: exact where
// the tick-sampled utime/stime are not (a round trip is far below a tick), with the time of
// threads that ended. Another process's thread that is on a CPU is counted up to its last tick:
// read a server's while it is stopped (ServerChild::pause).
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "bench_support.hpp"

namespace sidecar::bench {

// Nanoseconds on a CPU so far, all threads of process `pid` together.
std::uint64_t process_cpu_ns(pid_t pid);

// The row with its CPU per request from the nanoseconds its client and its server (0 for a row
// without one) spent on `calls` requests.
Row charge_cpu(Row row, std::uint64_t client_ns, std::uint64_t server_ns, std::uint64_t calls);

// What a ready, idle server costs: its CPU time per second over `seconds`, as a row.
Row idle_row(const std::string& name, const std::string& model, pid_t server, double seconds);

}  // namespace sidecar::bench
