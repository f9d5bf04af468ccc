// The client library's request table reuses the node of an erased entry for the next request: a
// reused entry must carry nothing of the request before it.
#include <gtest/gtest.h>

#include "request_table.hpp"

namespace sidecar {
namespace {

TEST(RequestTable, AReusedEntryKeepsNothingOfTheRequestBefore) {
  RequestTable table;
  const std::uint64_t first_id = table.next_id();
  RequestTable::Entry& first = table.add(first_id);
  first.offset = 4096;
  first.bytes = 512;
  first.in_flight = true;
  first.outputs_allowed = OutputRegion{4096, 256};
  first.in_place = true;
  first.done = true;
  first.abandoned = true;
  first.cancelled = true;
  first.code = ErrorCode::kModelError;
  first.message = "the model raised";
  first.outputs.emplace_back();
  first.placed_count = 2;
  first.cache_outcome = CacheOutcome::kHitInSidecar;
  first.service = ServiceInfo{4, 9};
  table.erase(first_id);
  EXPECT_EQ(table.find(first_id), nullptr);

  const std::uint64_t second_id = table.next_id();
  RequestTable::Entry& second = table.add(second_id);
  EXPECT_EQ(&second, &first);  // the same node, reused
  EXPECT_EQ(table.find(second_id), &second);
  const RequestTable::Entry fresh{};
  EXPECT_EQ(second.offset, fresh.offset);
  EXPECT_EQ(second.bytes, fresh.bytes);
  EXPECT_EQ(second.in_flight, fresh.in_flight);
  EXPECT_EQ(second.outputs_allowed.offset, fresh.outputs_allowed.offset);
  EXPECT_EQ(second.outputs_allowed.capacity, fresh.outputs_allowed.capacity);
  EXPECT_EQ(second.in_place, fresh.in_place);
  EXPECT_EQ(second.done, fresh.done);
  EXPECT_EQ(second.abandoned, fresh.abandoned);
  EXPECT_EQ(second.cancelled, fresh.cancelled);
  EXPECT_EQ(second.code, fresh.code);
  EXPECT_EQ(second.message, fresh.message);
  EXPECT_TRUE(second.outputs.empty());
  EXPECT_EQ(second.placed_count, fresh.placed_count);
  EXPECT_EQ(second.cache_outcome, fresh.cache_outcome);
  EXPECT_EQ(second.service.batch_size, fresh.service.batch_size);
  EXPECT_EQ(second.service.service_order, fresh.service.service_order);
}

TEST(RequestTable, EntriesStayFindableInAnyOrderOfErasing) {
  RequestTable table;
  std::uint64_t ids[4];
  for (std::uint64_t& id : ids) {
    id = table.next_id();
    table.add(id).bytes = id;
  }
  table.erase(ids[1]);
  table.erase(ids[3]);
  const std::uint64_t newest = table.next_id();
  table.add(newest).bytes = newest;
  for (std::uint64_t id : {ids[0], ids[2], newest}) {
    ASSERT_NE(table.find(id), nullptr);
    EXPECT_EQ(table.find(id)->bytes, id);
  }
  EXPECT_EQ(table.find(ids[1]), nullptr);
  EXPECT_EQ(table.find(ids[3]), nullptr);
}

}  // namespace
}  // namespace sidecar
