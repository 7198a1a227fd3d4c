// Arena (owner) and ArenaView (consumer): carving by size class, generations, reuse only after
// `detached` or peer death, forged descriptors, exhaustion, two mappings in one process.
#include "shmctx/shm/arena.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <limits>

#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"

namespace shmctx::shm {
namespace {

class ArenaTest : public ::testing::Test {
protected:
    Names names{test::unique_ns("arena")};
    Uuid owner = Uuid::random();
    Uuid peer = Uuid::random();
};

TEST_F(ArenaTest, CarvesPowerOfTwoClassesFromTheCarveBase) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    EXPECT_EQ(Arena::class_bytes(1), 4096U);
    EXPECT_EQ(Arena::class_bytes(4096 - 128), 4096U);
    EXPECT_EQ(Arena::class_bytes(4096 - 127), 8192U);
    EXPECT_EQ(Arena::class_bytes(70'000), 131072U);
    const Carve a = arena.carve(100);
    const Carve b = arena.carve(5000);
    EXPECT_EQ(a.descriptor.offset, kArenaCarveBase + kCarveHeaderBytes);
    EXPECT_EQ(b.descriptor.offset, kArenaCarveBase + 4096 + kCarveHeaderBytes);
    EXPECT_EQ(a.descriptor.bytes, 100U);
    EXPECT_EQ(a.body.size(), 100U);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.body.data()) % kFalseSharingRange, 0U);
    EXPECT_LT(a.descriptor.generation, b.descriptor.generation);
    EXPECT_EQ(arena.used_bytes(), kArenaCarveBase + 4096 + 8192);
}

TEST_F(ArenaTest, CarvedRangesAreBackedAtCarveTime) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{64} << 20, 0600});
    struct stat before {};
    ASSERT_EQ(::fstat(arena.segment().fd(), &before), 0);
    (void)arena.carve(std::size_t{1} << 20);
    struct stat after {};
    ASSERT_EQ(::fstat(arena.segment().fd(), &after), 0);
    EXPECT_GE((after.st_blocks - before.st_blocks) * 512, std::int64_t{1} << 20);
    // Sparse: far less than the virtual size is backed.
    EXPECT_LT(after.st_blocks * 512, std::int64_t{8} << 20);
}

TEST_F(ArenaTest, CreatesWithTheRequestedMode) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0640});
    struct stat st {};
    ASSERT_EQ(::fstat(arena.segment().fd(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640U);
}

TEST_F(ArenaTest, ReuseWaitsForDetachAndBumpsTheGeneration) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve first = arena.carve(1000);
    ASSERT_NO_THROW((void)view.attach(first.descriptor));
    arena.release(first.descriptor);
    EXPECT_EQ(arena.pending_count(), 1U);
    EXPECT_EQ(arena.collect(), 0U);  // not detached yet
    // Same class, but the released slot is not reused before the consumer detached.
    const Carve second = arena.carve(2000);
    EXPECT_NE(second.descriptor.offset, first.descriptor.offset);
    view.detach(first.descriptor);
    const Carve third = arena.carve(3000);  // collects, then reuses the slot
    EXPECT_EQ(third.descriptor.offset, first.descriptor.offset);
    EXPECT_GT(third.descriptor.generation, second.descriptor.generation);
    EXPECT_EQ(arena.pending_count(), 0U);
    // The stale descriptor of the first carve is rejected; the new one attaches.
    EXPECT_THROW((void)view.attach(first.descriptor), ProtocolError);
    CarveDescriptor stale_gen = third.descriptor;
    stale_gen.generation = first.descriptor.generation;
    EXPECT_THROW((void)view.attach(stale_gen), ProtocolError);
    EXPECT_NO_THROW((void)view.attach(third.descriptor));
}

TEST_F(ArenaTest, LateDetachWithAStaleDescriptorDoesNotFreeTheNewCarve) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve first = arena.carve(1000);
    arena.release(first.descriptor);
    view.detach(first.descriptor);
    const Carve second = arena.carve(1000);  // collects and reuses the slot
    ASSERT_EQ(second.descriptor.offset, first.descriptor.offset);
    // A buggy consumer's second detach of the old descriptor passed its generation check just
    // before the re-carve and stores now: its store names the old generation.
    auto* header = reinterpret_cast<CarveHeader*>(  // NOLINT: a view of the carve header
        const_cast<std::byte*>(second.body.data()) - kCarveHeaderBytes);
    header->detached.store(first.descriptor.generation, std::memory_order::release);
    arena.release(second.descriptor);
    EXPECT_EQ(arena.collect(), 0U);  // the live carve is not freed by the stale detach
    view.detach(second.descriptor);
    EXPECT_EQ(arena.collect(), 1U);
}

TEST_F(ArenaTest, ReuseIsByClassOnly) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve small = arena.carve(100);
    arena.release(small.descriptor);
    view.detach(small.descriptor);
    EXPECT_EQ(arena.collect(), 1U);
    EXPECT_EQ(arena.free_count(), 1U);
    const Carve big = arena.carve(10'000);  // another class: bumps
    EXPECT_NE(big.descriptor.offset, small.descriptor.offset);
    const Carve again = arena.carve(50);
    EXPECT_EQ(again.descriptor.offset, small.descriptor.offset);
    EXPECT_EQ(arena.free_count(), 0U);
}

TEST_F(ArenaTest, PeerDeathFreesPendingCarves) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    const Carve a = arena.carve(100);
    const Carve b = arena.carve(100);
    arena.release(a.descriptor);
    arena.release(b.descriptor);
    EXPECT_EQ(arena.collect(false), 0U);
    EXPECT_EQ(arena.collect(true), 2U);
    EXPECT_EQ(arena.free_count(), 2U);
}

TEST_F(ArenaTest, ReleaseOfAnUnknownDescriptorIsRefused) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    const Carve a = arena.carve(100);
    arena.release(a.descriptor);
    EXPECT_THROW(arena.release(a.descriptor), std::invalid_argument);  // twice
    EXPECT_THROW(arena.release({12345, 1, 1}), std::invalid_argument);
}

TEST_F(ArenaTest, ForgedDescriptorsAreRejected) {
    const std::size_t size = std::size_t{1} << 20;
    Arena arena = Arena::create(names, owner, peer, {size, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve c = arena.carve(1000);
    const CarveDescriptor good = c.descriptor;
    const auto rejects = [&](CarveDescriptor d) {
        EXPECT_THROW((void)view.attach(d), ProtocolError)
            << d.offset << " " << d.bytes << " " << d.generation;
        EXPECT_THROW(view.detach(d), ProtocolError);
    };
    rejects({size + 4096 + 128, 10, good.generation});  // past the end
    rejects({good.offset, std::numeric_limits<std::uint64_t>::max(), good.generation});  // overflow
    rejects({size - 128, 4096, good.generation});                // runs past the end
    rejects({good.offset + 8, good.bytes, good.generation});     // misaligned
    rejects({64, 8, good.generation});                           // in the header page
    rejects({good.offset, 0, good.generation});                  // empty
    rejects({good.offset, good.bytes + 1, good.generation});     // bytes mismatch
    rejects({good.offset + 4096, good.bytes, good.generation});  // no carve there
    rejects({good.offset, good.bytes, good.generation + 1});     // generation
    EXPECT_NO_THROW((void)view.attach(good));
}

TEST_F(ArenaTest, ExhaustionOfTheVirtualSizeIsShmExhaustedWithFigures) {
    Arena arena = Arena::create(names, owner, peer, {64 * 1024, 0600});
    std::size_t carves = 0;
    try {
        for (;;) {
            (void)arena.carve(8000);  // 8 KiB class
            ++carves;
        }
    } catch (const ShmExhausted& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("8000 bytes"), std::string::npos) << what;
        EXPECT_NE(what.find("65536 virtual bytes"), std::string::npos) << what;
    }
    EXPECT_EQ(carves, (64U * 1024 - kArenaCarveBase) / 8192);
    EXPECT_THROW((void)arena.carve(std::size_t{1} << 20), ShmExhausted);
    // A smaller class still fits in the remainder.
    EXPECT_NO_THROW((void)arena.carve(100));
}

// A peer polls the owner's control-ring slot before the owner has carved it. Reading that
// page while it is a hole would allocate it (and on a full tmpfs fault with SIGBUS: CI's
// ShmExhaustion test under TSan died so), so carved() must answer without touching it: false,
// and the object's backed size unchanged.
TEST_F(ArenaTest, PollingAnUncarvedSlotLeavesItsPageUntouched) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const CarveDescriptor slot{kArenaCarveBase + kCarveHeaderBytes, 256, 1};
    struct stat before {};
    ASSERT_EQ(::fstat(arena.segment().fd(), &before), 0);
    EXPECT_FALSE(view.carved(slot));
    struct stat after {};
    ASSERT_EQ(::fstat(arena.segment().fd(), &after), 0);
    EXPECT_EQ(after.st_blocks, before.st_blocks) << "carved() read the hole and allocated it";
    const Carve c = arena.carve(256);
    EXPECT_EQ(c.descriptor.offset, slot.offset);
    EXPECT_TRUE(view.carved(c.descriptor));
}

// The same for the arena header: an arena object whose header pages are still a hole (its
// owner has created it and not allocated them yet, or failed to) is "not there yet", and is
// not read.
TEST_F(ArenaTest, OpeningAnArenaWhoseHeaderIsAHoleReadsNothing) {
    const std::string name = names.arena(owner, peer);
    Segment bare =
        Segment::create(name, std::size_t{1} << 20, SegmentOptions{0600}, Backing::sparse);
    struct stat before {};
    ASSERT_EQ(::fstat(bare.fd(), &before), 0);
    EXPECT_FALSE(ArenaView::try_open(names, owner, peer).has_value());
    struct stat after {};
    ASSERT_EQ(::fstat(bare.fd(), &after), 0);
    EXPECT_EQ(after.st_blocks, before.st_blocks) << "try_open read the hole and allocated it";
    Segment::remove(name);
}

TEST_F(ArenaTest, OwnerAndViewMappingsSeeTheSameBytes) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve c = arena.carve(256);
    std::memcpy(c.body.data(), "through the arena", 18);
    const std::span<std::byte> seen = view.attach(c.descriptor);
    EXPECT_NE(seen.data(), c.body.data());  // two mappings
    EXPECT_EQ(std::memcmp(seen.data(), "through the arena", 18), 0);
    EXPECT_EQ(arena.body(c.descriptor).data(), c.body.data());
}

TEST_F(ArenaTest, ViewValidatesTheHeader) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    EXPECT_THROW((void)ArenaView::open(names.arena(owner, peer), peer, owner), ProtocolError);
    auto* header = reinterpret_cast<ArenaHeader*>(arena.segment().data());
    header->layout_version = kLayoutVersion + 3;
    try {
        (void)ArenaView::open(names, owner, peer);
        ADD_FAILURE() << "no LayoutError";
    } catch (const LayoutError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(std::to_string(kLayoutVersion + 3)), std::string::npos) << what;
        EXPECT_NE(what.find(std::to_string(kLayoutVersion)), std::string::npos) << what;
    }
    header->layout_version = kLayoutVersion;
    header->magic.store(1);
    EXPECT_THROW((void)ArenaView::open(names, owner, peer), LayoutError);
}

TEST_F(ArenaTest, NameIsRemovedWithTheOwner) {
    const std::string name = names.arena(owner, peer);
    {
        Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
        Arena moved = std::move(arena);
        EXPECT_TRUE(Segment::try_open(name).has_value());
    }
    EXPECT_FALSE(Segment::try_open(name).has_value());
}

TEST_F(ArenaTest, RingInACarveIsAttachedThroughTheView) {
    Arena arena = Arena::create(names, owner, peer, {std::size_t{1} << 20, 0600});
    ArenaView view = ArenaView::open(names, owner, peer);
    const Carve c = arena.carve(ring_region_bytes(8192));
    RingWriter writer =
        RingWriter::create(c.body, {8192, c.descriptor.generation, 64, false}, WakeTable{});
    RingReader reader =
        RingReader::attach(view.attach(c.descriptor), c.descriptor.generation, WakeTable{});
    const char text[] = "record";
    ASSERT_EQ(writer.try_write(1, std::as_bytes(std::span(text))), WriteResult::ok);
    RecordView record;
    ASSERT_EQ(reader.try_read(record), ReadResult::ok);
    EXPECT_STREQ(reinterpret_cast<const char*>(record.payload.data()), "record");
    EXPECT_THROW((void)RingReader::attach(view.attach(c.descriptor), c.descriptor.generation + 1,
                                          WakeTable{}),
                 ProtocolError);
}

}  // namespace
}  // namespace shmctx::shm
