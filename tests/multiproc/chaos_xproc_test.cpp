// The chaos peer (issue 9 "Isolation"; DESIGN.md threat model and §2; docs/protocol.d/isolation.md
// lists every case with what the victim saw). This process is the victim V. It links with two
// peers, each its own process:
//   - N, an actor_node, streams 200,000 counted ints to V (stream_ints_spill: V allows overruns,
//     so N spills instead of failing) while everything else happens;
//   - C, a chaos_peer, links with V normally and then writes corruption into a shared structure
//     V reads: its own arena (ring indices, record headers, control records, stream-open
//     descriptors, carve and ring headers, the arena header) or the consumer words of V's rings
//     in V's arena, which C may legitimately write. One test per structure and kind of damage,
//     plus a seeded random mode (the seed is printed; SHMCTX_CHAOS_SEED replays it).
// Every case checks:
//   - V's link with C fails with ProtocolError (LayoutError where the damage makes the object
//     look like another layout: a wrong magic or layout version), naming C, and V logs it on
//     stderr naming C; V's context with C ends with that error; V does not crash or hang (the
//     test runs under ASan/UBSan and TSan too);
//   - the workload with N ends with zero loss, in order, and V still serves N afterwards (a
//     final round trip);
//   - V leaves nothing behind: once N and C have quit and V's actor is gone, the namespace is
//     empty.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "context_support.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_counters.hpp"
#include "shmctx/shm/actor_segment.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using test::objects_of;
using test::wait_until;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kDeadline = 30s;
constexpr auto kTestLimit = 240s;

/// What V does after C corrupted something, so that V meets the damage.
enum class Trigger {
    receive,  ///< receive on C's stream until it raises
    /// Receive one message first, then corrupt, then receive until it raises: V has loaded (and
    /// cached) C's tail, so a tail moved backwards is one V can tell from a short publish.
    receive_after_one,
    send_small,    ///< send small messages to C until it raises
    send_large,    ///< send 48 KiB messages to C until it raises (the ring's bytes run short)
    control_send,  ///< a second context on the link (its Start is a control record from V)
    connect,       ///< (forge cases) connect to C: V attaches C's forged arena
};

enum class Expect { protocol, layout };

struct ChaosCase {
    const char* name;
    const char* command;  ///< "corrupt <case>" or "forge <case>" (C's stdin)
    int mode;             ///< C's "chaos" endpoint mode (0: stream + 8 records, 1: nothing)
    Trigger trigger;
    Expect expect = Expect::protocol;
};

void PrintTo(const ChaosCase& c, std::ostream* os) { *os << c.name; }

const ChaosCase kCases[] = {
    // C's control ring, read by V's control loop.
    {"CtrlTailBackwards", "corrupt ctrl_tail_backwards", 0, Trigger::receive},
    {"CtrlTailBeyondCapacity", "corrupt ctrl_tail_beyond_capacity", 0, Trigger::receive},
    {"CtrlTailMisaligned", "corrupt ctrl_tail_misaligned", 0, Trigger::receive},
    {"CtrlRecordLenOverMax", "corrupt ctrl_record_len", 0, Trigger::receive},
    {"CtrlRecordPastTail", "corrupt ctrl_record_past_tail", 0, Trigger::receive},
    {"CtrlRecordKindUnknown", "corrupt ctrl_record_kind", 0, Trigger::receive},
    {"CtrlRecordSeqWrong", "corrupt ctrl_record_seq", 0, Trigger::receive},
    {"CtrlPaddingShort", "corrupt ctrl_padding", 0, Trigger::receive},
    {"CtrlPayloadGarbage", "corrupt ctrl_payload_garbage", 0, Trigger::receive},
    {"CtrlPayloadByteFlipped", "corrupt ctrl_payload_flip", 0, Trigger::receive},
    {"CtrlSpaceCellBadSlot", "corrupt ctrl_space_cell_slot", 0, Trigger::receive},
    // StreamOpen descriptors (control records) naming no valid carve or ring.
    {"StreamOpenOutOfRange", "corrupt stream_open_out_of_range", 1, Trigger::receive},
    {"StreamOpenSizeOverflow", "corrupt stream_open_overflow", 1, Trigger::receive},
    {"StreamOpenMisaligned", "corrupt stream_open_misaligned", 1, Trigger::receive},
    {"StreamOpenStaleGeneration", "corrupt stream_open_stale", 1, Trigger::receive},
    {"StreamOpenWrongBytes", "corrupt stream_open_bytes", 1, Trigger::receive},
    {"StreamOpenInArenaHeader", "corrupt stream_open_in_header", 1, Trigger::receive},
    {"StreamOpenDuplicateStale", "corrupt stream_open_stale", 0, Trigger::receive},
    {"StreamOpenRingMagic", "corrupt stream_open_ring_magic", 1, Trigger::receive},
    {"StreamOpenRingDataBytes", "corrupt stream_open_ring_data_bytes", 1, Trigger::receive},
    {"StreamOpenRingTooBig", "corrupt stream_open_ring_too_big", 1, Trigger::receive},
    {"StreamOpenRingMaxPayload", "corrupt stream_open_ring_max_payload", 1, Trigger::receive},
    {"StreamOpenRingGeneration", "corrupt stream_open_ring_generation", 1, Trigger::receive},
    {"StreamOpenRingHeaderBytes", "corrupt stream_open_ring_header_bytes", 1, Trigger::receive},
    {"StreamOpenRingHeadMisaligned", "corrupt stream_open_ring_head", 1, Trigger::receive},
    // C's data ring to V (8 unread records).
    {"DataTailBackwards", "corrupt data_tail_backwards", 0, Trigger::receive_after_one},
    {"DataTailBeyondCapacity", "corrupt data_tail_beyond_capacity", 0, Trigger::receive_after_one},
    {"DataTailMisaligned", "corrupt data_tail_misaligned", 0, Trigger::receive_after_one},
    {"DataRecordLenOverMax", "corrupt data_record_len", 0, Trigger::receive},
    {"DataRecordPastTail", "corrupt data_record_past_tail", 0, Trigger::receive},
    {"DataRecordKindUnknown", "corrupt data_record_kind", 0, Trigger::receive},
    {"DataRecordControlKind", "corrupt data_record_control_kind", 0, Trigger::receive},
    {"DataRecordSeqWrong", "corrupt data_record_seq", 0, Trigger::receive},
    {"DataRecordPaddingInMiddle", "corrupt data_record_padding", 0, Trigger::receive},
    {"DataRecordHeaderZeroed", "corrupt data_record_zeroed", 0, Trigger::receive},
    {"DataSpaceCellBadSlot", "corrupt data_space_cell_slot", 0, Trigger::receive},
    // V's rings to C: the consumer words C writes, read by V's writers.
    {"VDataReadMsgsPastWritten", "corrupt v_data_read_past_written", 0, Trigger::send_small},
    {"VDataHeadPastTail", "corrupt v_data_head_past_tail", 0, Trigger::send_large},
    {"VDataHeadMisaligned", "corrupt v_data_head_misaligned", 0, Trigger::send_large},
    {"VDataCellBadSlot", "corrupt v_data_cell_slot", 0, Trigger::send_small},
    {"VCtrlCellBadSlot", "corrupt v_ctrl_cell_slot", 0, Trigger::control_send},
    // C's arena as V attaches it at link set-up (arena header, control carve, control ring).
    {"ArenaOwnerWrong", "forge arena_owner", 0, Trigger::connect},
    {"ArenaPeerWrong", "forge arena_peer", 0, Trigger::connect},
    {"ArenaLayoutVersion", "forge arena_layout", 0, Trigger::connect, Expect::layout},
    {"ArenaMagic", "forge arena_magic", 0, Trigger::connect, Expect::layout},
    {"ArenaVirtualBytesOverObject", "forge arena_virtual_bytes", 0, Trigger::connect},
    {"ArenaVirtualBytesTiny", "forge arena_virtual_bytes_small", 0, Trigger::connect},
    {"ArenaCarveBase", "forge arena_carve_base", 0, Trigger::connect},
    {"ControlCarveMagic", "forge carve_magic", 0, Trigger::connect},
    {"ControlCarveBytes", "forge carve_bytes", 0, Trigger::connect},
    {"ControlCarveClass", "forge carve_class", 0, Trigger::connect},
    {"ControlCarveGeneration", "forge carve_generation", 0, Trigger::connect},
    {"ControlRingMagic", "forge ring_magic", 0, Trigger::connect, Expect::layout},
    {"ControlRingLayout", "forge ring_layout", 0, Trigger::connect, Expect::layout},
    {"ControlRingDataBytes", "forge ring_data_bytes", 0, Trigger::connect},
    {"ControlRingGeneration", "forge ring_generation", 0, Trigger::connect},
    {"ControlRingMaxPayload", "forge ring_max_payload", 0, Trigger::connect},
    {"ControlRingHeadMisaligned", "forge ring_head_misaligned", 0, Trigger::connect},
};

/// The line of `child` starting with one of `prefixes` (others are skipped), or nullopt.
std::optional<std::string> line_with(test::Child& child, const std::vector<std::string>& prefixes,
                                     Deadline deadline) {
    while (auto line = child.read_line(deadline)) {
        for (const auto& p : prefixes) {
            if (line->starts_with(p)) return line;
        }
    }
    return std::nullopt;
}

class Chaos : public ::testing::Test {
protected:
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }
    const shm::Names& names() const { return guard_.names; }

    test::Child spawn_ready(const std::string& exe, const std::vector<std::string>& args) {
        test::Child child = test::spawn(exe, args);
        if (!child.expect_line("ready", kDeadline)) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << exe << " never became ready: " << child.describe();
        }
        return child;
    }

    /// N's workload on its own thread: `count` counted ints, each checked; then a round trip.
    struct Workload {
        std::int64_t received = 0;
        std::int64_t returned = -1;
        std::string error;
        std::atomic<bool> linked{false};  // V's link with N is up
        std::thread thread;
        ~Workload() {
            if (thread.joinable()) thread.join();  // a case that stopped early
        }
    };
    void start_workload(Actor& victim, Workload& w, std::int64_t count) {
        // The chaos starts once V is linked with N, so that V's link count tells both apart.
        w.thread = std::thread([&victim, &w, count] {
            try {
                Portal n = victim.connect("normal", kDeadline);
                w.linked = true;
                OpenOptions o;
                o.allow_overruns = true;  // N spills when we fall behind: no loss, no overrun
                auto r = n.open_context(
                    "stream_ints_spill", Payload::value(count),
                    [&](Context& ctx, const Payload&) {
                        auto stream = ctx.open_stream();
                        while (w.received < count) {
                            const Message m = stream.receive();
                            if (m.value<std::int64_t>() != w.received) {
                                throw std::runtime_error("lost or reordered: got " +
                                                         std::to_string(m.value<std::int64_t>()) +
                                                         ", expected " +
                                                         std::to_string(w.received));
                            }
                            ++w.received;
                        }
                    },
                    o);
                w.returned = r.outcome.value().value<std::int64_t>();
            } catch (const std::exception& e) {
                w.error = e.what();
            }
        });
    }

    /// Everything a case checks after the chaos part: N's workload whole, a last round trip,
    /// the link with C gone, both helpers quit, and (after V's actor is gone) no objects left.
    void finish(std::optional<Actor>& victim, Workload& w, std::int64_t count, test::Child& n,
                test::Child& c) {
        w.thread.join();
        EXPECT_EQ(w.error, "");
        EXPECT_EQ(w.received, count) << "messages from N lost";
        EXPECT_EQ(w.returned, count);
        {
            // Scoped: a Portal keeps the actor's core (and its objects) alive.
            Portal to_n = victim->connect("normal", kDeadline);
            EXPECT_EQ(to_n.run("add_one", Payload::value(std::int64_t{41}), kDeadline)
                          .value<std::int64_t>(),
                      42)
                << "V no longer serves N";
        }
        EXPECT_TRUE(wait_until([&] { return victim->links() == 1; }, kDeadline))
            << "V's link with C is still there (" << victim->links() << " links)";
        c.write("quit\n");
        const auto c_status = c.wait(kDeadline);
        // C's own library must survive what it did (its link failed, nothing else).
        EXPECT_TRUE(c_status && WIFEXITED(*c_status) && WEXITSTATUS(*c_status) == 0)
            << "chaos peer: " << c.describe();
        n.write("quit\n");
        const auto n_status = n.wait(kDeadline);
        EXPECT_TRUE(n_status && WIFEXITED(*n_status) && WEXITSTATUS(*n_status) == 0)
            << n.describe();
        victim.reset();
        EXPECT_TRUE(wait_until([&] { return objects_of(names()).empty(); }, kDeadline))
            << "objects left: " << ::testing::PrintToString(objects_of(names()));
    }

    test::NamespaceGuard guard_{"chaos"};
    test::Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                                 for (const auto& o : test::all_objects(names)) {
                                     ::unlink(shm::shm_path(o).c_str());
                                 }
                             }};
};

class ChaosTargeted : public Chaos, public ::testing::WithParamInterface<ChaosCase> {};

TEST_P(ChaosTargeted, CorruptLinkFailsAloneWithProtocolError) {
    const ChaosCase& k = GetParam();
    const auto count = static_cast<std::int64_t>(test::scaled(200000));
    std::optional<Actor> victim(std::in_place, "victim", options());
    test::Child n = spawn_ready("actor_node", {names().ns(), "normal", "server"});
    test::Child c = spawn_ready("chaos_peer", {names().ns(), "chaos", "victim"});
    ASSERT_TRUE(n.running() && c.running());
    Workload w;
    start_workload(*victim, w, count);
    ASSERT_TRUE(wait_until([&] { return w.linked.load(); }, kDeadline)) << "V never linked with N";

    ::testing::internal::CaptureStderr();
    std::exception_ptr seen;
    std::string damage;
    const auto corrupt = [&] {
        c.write(std::string(k.command) + " 1\n");
        const auto line = line_with(c, {"corrupted ", "forged ", "failed "}, kDeadline);
        if (!line || line->starts_with("failed ")) {
            throw std::runtime_error("the chaos peer could not corrupt: " +
                                     line.value_or("(no answer)") + " " + c.describe());
        }
        damage = *line;
    };
    try {
        if (k.trigger == Trigger::connect) {
            corrupt();
            (void)victim->connect("chaos", kDeadline);
            ADD_FAILURE() << "connected to a peer whose arena is corrupt";
        } else {
            Portal to_c = victim->connect("chaos", kDeadline);
            (void)to_c.open_context(
                "chaos", Payload::value(std::int64_t{k.mode}), [&](Context& ctx, const Payload&) {
                    auto stream = ctx.open_stream();
                    if (k.mode == 0) stream.send(Payload::value(std::int64_t{-1}));
                    if (!c.expect_line("armed", kDeadline)) {
                        throw std::runtime_error("the chaos peer never armed: " + c.describe());
                    }
                    if (k.trigger == Trigger::receive_after_one) (void)stream.receive();
                    corrupt();
                    switch (k.trigger) {
                        case Trigger::receive:
                        case Trigger::receive_after_one:
                            // Bounded: an undetected corruption fails the case, never hangs.
                            for (int i = 0; i < 64; ++i) {
                                if (!stream.receive_for(kDeadline)) break;
                            }
                            break;
                        case Trigger::send_small:
                            for (std::int64_t i = 0; i < 256; ++i) stream.send(Payload::value(i));
                            break;
                        case Trigger::send_large: {
                            const std::vector<std::byte> big(48 * 1024, std::byte{7});
                            for (int i = 0; i < 64; ++i) stream.send(PayloadView(big));
                            break;
                        }
                        case Trigger::control_send: {
                            // A Start C reads while its threads still watch for work (50 us
                            // after activity) needs no wake, and so never meets the bad slot.
                            // After each ping, wait until C's control loop has gone to sleep
                            // again (its control_loop_sleeps counter, read from its actor
                            // segment): the next Start is then owed a wake. Any one suffices.
                            const auto seg = shm::ActorSegment::try_open(names(), "chaos");
                            if (!seg) throw std::runtime_error("the chaos peer has no segment");
                            const auto sleeps = [&] {
                                std::string problem;
                                const auto s = shm::read_actor_counters(seg->counters(), problem);
                                return s ? (*s)[shm::ActorCounter::control_loop_sleeps] : 0;
                            };
                            for (int i = 0; i < 200; ++i) {
                                const std::uint64_t before = sleeps();
                                (void)to_c.run("ping", Payload::value(std::int64_t{i}), kDeadline);
                                if (!wait_until([&] { return sleeps() > before; }, kDeadline)) {
                                    throw std::runtime_error("C's control loop never slept");
                                }
                            }
                            break;
                        }
                        case Trigger::connect:
                            break;
                    }
                    throw std::runtime_error("V did not notice: " + damage);
                });
            ADD_FAILURE() << "the context with C ended normally after: " << damage;
        }
    } catch (...) {
        seen = std::current_exception();
    }
    // V logs a failing link before it drops it: once the link is gone the line is written.
    EXPECT_TRUE(wait_until([&] { return victim->links() == 1; }, kDeadline))
        << "V's link with C is still there (" << victim->links() << " links)";
    const std::string log = ::testing::internal::GetCapturedStderr();

    std::string what;
    try {
        if (seen) std::rethrow_exception(seen);
    } catch (const LayoutError& e) {
        what = std::string("LayoutError: ") + e.what();
        EXPECT_EQ(k.expect, Expect::layout) << what;
    } catch (const ProtocolError& e) {
        what = std::string("ProtocolError: ") + e.what();
        EXPECT_EQ(k.expect, Expect::protocol) << what;
    } catch (const std::exception& e) {
        what = std::string("other: ") + e.what();
        ADD_FAILURE() << "V's context with C ended with the wrong error: " << what;
    }
    // The helpers' stderr is ours: a sanitizer report of any process lands in the capture.
    EXPECT_THAT(log, Not(HasSubstr("Sanitizer"))) << log;
    EXPECT_THAT(log, Not(HasSubstr("runtime error"))) << log;
    std::cout << "[chaos] " << k.name << " (" << damage << "): V saw " << what << "\n";
    ::testing::Test::RecordProperty("seen", what);
    EXPECT_THAT(what, HasSubstr("chaos")) << "the error does not name C";
    EXPECT_THAT(log, HasSubstr("chaos")) << "V's log does not name C: " << log;
    finish(victim, w, count, n, c);
}

INSTANTIATE_TEST_SUITE_P(Chaos, ChaosTargeted, ::testing::ValuesIn(kCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

/// Random mode: C streams counted ints to V while it flips random bytes at random offsets of
/// everything V reads, until V fails the link. The seed is printed; SHMCTX_CHAOS_SEED replays.
TEST_F(Chaos, RandomCorruptionFailsTheLinkAlone) {
    std::uint64_t seed = std::random_device{}();
    if (const char* s = std::getenv("SHMCTX_CHAOS_SEED")) seed = std::strtoull(s, nullptr, 10);
    std::cout << "[chaos] random mode seed " << seed << " (SHMCTX_CHAOS_SEED=" << seed
              << " replays it)\n";
    ::testing::Test::RecordProperty("seed", std::to_string(seed));
    const auto count = static_cast<std::int64_t>(test::scaled(200000));
    std::optional<Actor> victim(std::in_place, "victim", options());
    test::Child n = spawn_ready("actor_node", {names().ns(), "normal", "server"});
    test::Child c = spawn_ready("chaos_peer", {names().ns(), "chaos", "victim"});
    ASSERT_TRUE(n.running() && c.running());
    Workload w;
    start_workload(*victim, w, count);
    ASSERT_TRUE(wait_until([&] { return w.linked.load(); }, kDeadline)) << "V never linked with N";

    ::testing::internal::CaptureStderr();
    std::exception_ptr seen;
    std::int64_t received = 0;
    try {
        Portal to_c = victim->connect("chaos", kDeadline);
        (void)to_c.open_context(
            "chaos", Payload::value(std::int64_t{2}), [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                (void)stream.receive();
                ++received;
                c.write("random " + std::to_string(seed) + " 100000\n");
                const auto until = Clock::now() + kDeadline;
                while (Clock::now() < until) {
                    (void)stream.receive();  // the payload may be garbage: it is not decoded
                    if (++received % 8 == 0) {
                        (void)stream.try_send(Payload::value(received));
                    }
                }
                throw std::runtime_error("V never noticed the corruption");
            });
        ADD_FAILURE() << "the context with C ended normally";
    } catch (...) {
        seen = std::current_exception();
    }
    EXPECT_TRUE(wait_until([&] { return victim->links() == 1; }, kDeadline))
        << "V's link with C is still there (" << victim->links() << " links)";
    const std::string log = ::testing::internal::GetCapturedStderr();
    const auto flipped = line_with(c, {"flipped "}, kDeadline);
    std::string what;
    try {
        if (seen) std::rethrow_exception(seen);
    } catch (const ProtocolError& e) {
        what = std::string("ProtocolError: ") + e.what();
    } catch (const std::exception& e) {
        what = std::string("other: ") + e.what();
        ADD_FAILURE() << "V's context with C ended with the wrong error: " << what;
    }
    std::cout << "[chaos] random seed " << seed << ", " << flipped.value_or("(no count)")
              << ", V received " << received << " messages, then saw " << what << "\n";
    EXPECT_THAT(what, HasSubstr("chaos"));
    EXPECT_THAT(log, HasSubstr("chaos")) << "V's log does not name C: " << log;
    EXPECT_THAT(log, Not(HasSubstr("Sanitizer"))) << log;
    EXPECT_THAT(log, Not(HasSubstr("runtime error"))) << log;
    finish(victim, w, count, n, c);
}

}  // namespace
}  // namespace shmctx
