#include "cpu_time.hpp"

#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

namespace sidecar::bench {

std::uint64_t process_cpu_ns(pid_t pid) {
  clockid_t clock = CLOCK_PROCESS_CPUTIME_ID;
  if (pid != ::getpid()) {
    if (const int error = ::clock_getcpuclockid(pid, &clock); error != 0) {
      throw std::runtime_error("no CPU clock for process " + std::to_string(pid) + ": " + std::strerror(error));
    }
  }
  timespec spent{};
  if (::clock_gettime(clock, &spent) != 0) {
    throw std::runtime_error("cannot read the CPU time of process " + std::to_string(pid) + ": " +
                             std::strerror(errno));
  }
  return static_cast<std::uint64_t>(spent.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(spent.tv_nsec);
}

Row charge_cpu(Row row, std::uint64_t client_ns, std::uint64_t server_ns, std::uint64_t calls) {
  const double requests = calls != 0 ? static_cast<double>(calls) : 1.0;
  row.cpu_measured = true;
  row.client_cpu_us = static_cast<double>(client_ns) / 1e3 / requests;
  row.server_cpu_us = static_cast<double>(server_ns) / 1e3 / requests;
  row.cpu_us_per_request = row.client_cpu_us + row.server_cpu_us;
  return row;
}

Row idle_row(const std::string& name, const std::string& model, pid_t server, double seconds) {
  const std::uint64_t before = process_cpu_ns(server);
  const auto started = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Row row;
  row.name = name;
  row.model = model;
  row.idle_server_cpu_us_per_s = static_cast<double>(process_cpu_ns(server) - before) / 1e3 / elapsed_s;
  return row;
}

}  // namespace sidecar::bench
