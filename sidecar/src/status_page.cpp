#include "status_page.hpp"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <new>

namespace sidecar {

Result<StatusPageWriter> StatusPageWriter::create(const StatusIdentity& identity) {
  Result<OwnedMemory> memory = create_committed_memory("sidecar-status", kStatusPageBytes);
  if (!memory.ok()) return memory.error();
  StatusPageWriter writer;
  writer.memory_ = std::move(*memory);
  auto* page = new (writer.memory_.mapping.base()) StatusPage{};
  page->magic = kStatusMagic;
  page->protocol_version = kProtocolVersion;
  page->page_bytes = sizeof(StatusPage);
  page->sidecar_pid = ::getpid();
  page->sidecar_uid = ::geteuid();
  page->started_unix_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  page->start_generation = identity.start_generation;
  page->max_clients = identity.max_clients;
  page->cache_scope = static_cast<std::uint32_t>(identity.cache_scope);
  page->default_arena_bytes = identity.default_arena_bytes;
  page->max_arena_bytes = identity.max_arena_bytes;
  page->cache_bytes = identity.cache_bytes;
  page->state.store(static_cast<std::uint32_t>(SidecarState::kStarting), std::memory_order_relaxed);
  // What is loading is visible (sidecarctl status) while it warms up; shapes follow at ready.
  std::strncpy(page->model.model_path, identity.model_path.c_str(), kModelPathBytes - 1);
  page->model.input_count = identity.input_count;
  // From here on only this mapping, made before the seal, can write the page.
  if (Done sealed = add_seals(writer.fd(), kReadOnlySeals); !sealed.ok()) return sealed.error();
  return writer;
}

void StatusPageWriter::set_state(SidecarState state) noexcept {
  page().state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
}

}  // namespace sidecar
