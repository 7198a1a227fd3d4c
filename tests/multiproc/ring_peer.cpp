// Producer peer for ring_xproc_test. Creates an arena, carves a ring, prints its descriptor and
// writes the deterministic RecordStream into it (or corrupts it on purpose).
//
//   ring_peer <action> <arena-name> <owner-hex> <peer-hex> <wakes-name> <count> <wait-mode> <batch>
//
// action: produce        write <count> records; prints "done <count> <checksum>"
//         scribble-len   write <count> records, print "written", wait for a stdin line, then
//                        publish one more record whose header length is forged
//         scribble-tail  as scribble-len, but publish a tail beyond head + data bytes
// wait-mode: busy_spin | spin_yield | block. batch: commits per publish (1 = publish each).
// Prints "ready <offset> <bytes> <generation>" once the ring exists. Exit 0 on success, 2 on a
// ring error, 3 on bad arguments. Fault points (SHMCTX_FAULT) may kill it mid-stream.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ring_records.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"

using namespace shmctx;
using namespace shmctx::shm;

namespace {

constexpr std::size_t kRingData = std::size_t{1} << 20;
constexpr std::size_t kMaxRecord = 4096;

[[noreturn]] void die(int code, const std::string& what) {
    std::fprintf(stderr, "ring_peer: %s\n", what.c_str());
    std::exit(code);
}

WaitMode parse_mode(const std::string& s) {
    if (s == "busy_spin") return WaitMode::busy_spin;
    if (s == "spin_yield") return WaitMode::spin_yield;
    if (s == "block") return WaitMode::block;
    die(3, "unknown wait mode " + s);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 9) die(3, "usage: ring_peer action arena owner peer wakes count mode batch");
    const std::string action = argv[1];
    Uuid owner;
    Uuid peer;
    if (!Uuid::parse_hex(argv[3], owner) || !Uuid::parse_hex(argv[4], peer)) die(3, "bad uuid");
    const std::uint64_t count = std::strtoull(argv[6], nullptr, 10);
    const WaitPolicy policy{parse_mode(argv[7]), 2000};
    const std::uint64_t batch = std::max<std::uint64_t>(1, std::strtoull(argv[8], nullptr, 10));

    Segment wakes = Segment::open(argv[5]);
    const WakeTable table({wakes.data(), wakes.size()});
    Arena arena = Arena::create(std::string(argv[2]), owner, peer, {std::size_t{16} << 20, 0600});
    const Carve carve = arena.carve(ring_region_bytes(kRingData));
    RingWriter writer = RingWriter::create(
        carve.body, {kRingData, carve.descriptor.generation, 1U << 30, false}, table);
    std::printf("ready %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", carve.descriptor.offset,
                carve.descriptor.bytes, carve.descriptor.generation);
    std::fflush(stdout);

    Waiter waiter(table, 1);
    const shmctx::test::RecordStream stream(count, kMaxRecord);
    std::uint64_t checksum = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        const auto payload = stream.payload(i);
        const Publish publish = (i + 1) % batch == 0 ? Publish::now : Publish::deferred;
        for (;;) {
            const RingClaim claim = writer.try_claim(payload.size());
            if (claim.ok()) {
                std::memcpy(claim.buffer.data(), payload.data(), payload.size());
                const WriteResult r =
                    writer.commit(claim, payload.size(), shmctx::test::RecordStream::kind(i),
                                  shmctx::test::RecordStream::flags(i), publish);
                if (r != WriteResult::ok) die(2, "commit: " + std::string(to_string(r)));
                break;
            }
            if (claim.status != WriteResult::full_bytes && claim.status != WriteResult::full_msgs) {
                die(2, "claim: " + std::string(to_string(claim.status)) + " " +
                           std::string(writer.error_text()));
            }
            const WaitStatus s = writer.wait_writable(
                payload.size(), waiter, Deadline(std::chrono::seconds(60)), {}, policy);
            if (s != WaitStatus::ready)
                die(2, "wait_writable timed out at record " + std::to_string(i));
        }
        checksum = shmctx::test::RecordStream::fold(checksum, payload);
    }
    if (writer.publish() != WriteResult::ok) die(2, "publish failed");

    auto* header = reinterpret_cast<RingHeader*>(carve.body.data());
    if (action.starts_with("scribble")) {
        // Let the test read the good records first, then corrupt.
        std::printf("written\n");
        std::fflush(stdout);
        char go[16];
        if (std::fgets(go, sizeof go, stdin) == nullptr) die(2, "no go line for the scribble");
    }
    if (action == "scribble-len") {
        const RingClaim claim = writer.try_claim(64);
        if (!claim.ok()) die(2, "claim for scribble failed");
        std::memset(claim.buffer.data(), 0x5A, 64);
        (void)writer.commit(claim, 64, 1, 0, Publish::deferred);
        RecordHeader forged;
        std::memcpy(&forged, claim.buffer.data() - kRecordHeaderBytes, sizeof forged);
        forged.len = 0x7FFF'FFF0U;
        std::memcpy(claim.buffer.data() - kRecordHeaderBytes, &forged, sizeof forged);
        (void)writer.publish();
        std::printf("scribbled\n");
    } else if (action == "scribble-tail") {
        const std::uint64_t tail = header->producer.tail_bytes.load(std::memory_order::relaxed);
        header->producer.tail_bytes.store(tail + 2 * kRingData, std::memory_order::release);
        std::printf("scribbled\n");
    } else if (action == "produce") {
        std::printf("done %" PRIu64 " %" PRIu64 "\n", count, checksum);
    } else {
        die(3, "unknown action " + action);
    }
    std::fflush(stdout);
    // Stay until the test has attached and read (it closes our stdin or writes a line), so the
    // arena's name outlives the test's open; then the Arena destructor unlinks it.
    char line[16];
    (void)std::fgets(line, sizeof line, stdin);
    return 0;
}
