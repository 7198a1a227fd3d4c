// The actor counters table and the distinct-error log (include/shmctx/shm/actor_counters.hpp,
// error_log.hpp; docs/protocol.d/counters.md): the layout at fixed offsets, validation of what
// an observer reads (uninitialised, foreign version, forged records), dedup by text with
// count/first/last, truncation, a full log, a reader racing the writer (TSan sees both
// threads), and the runtime's counts of contexts, links, refusals and cancels as an observer
// reads them through a read-only mapping of the actor segment.
#include "shmctx/shm/actor_counters.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <new>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/error_log.hpp"
#include "until_cancelled.hpp"

namespace shmctx {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using shm::ActorCounter;

/// Zeroed, page-aligned process memory standing in for a region of the segment.
struct Region {
    explicit Region(std::size_t n)
        : bytes(n), data(static_cast<std::byte*>(std::aligned_alloc(4096, n))) {
        if (data == nullptr) throw std::bad_alloc();
        std::memset(data, 0, n);
    }
    ~Region() { std::free(data); }
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    std::span<std::byte> span() const { return {data, bytes}; }
    std::size_t bytes;
    std::byte* data;
};

template <class T>
void poke(const Region& r, std::size_t offset, T value) {
    std::memcpy(r.data + offset, &value, sizeof value);
}

// ---- counters ----

TEST(ActorCounters, LayoutPutsCounterIAtOffset128Plus8I) {
    Region r(shm::kActorCountersBytes);
    shm::init_actor_counters(r.span());
    std::uint64_t magic = 0;
    std::uint32_t version = 0, slots = 0;
    std::memcpy(&magic, r.data, 8);
    std::memcpy(&version, r.data + 8, 4);
    std::memcpy(&slots, r.data + 12, 4);
    EXPECT_EQ(magic, shm::kActorCountersMagic);
    EXPECT_EQ(version, shm::kActorCountersVersion);
    EXPECT_EQ(slots, shm::kActorCounterSlots);

    shm::ActorCounters c(r.span());
    c.add(ActorCounter::contexts_opened, 3);
    c.add(ActorCounter::errors_reported);
    c.set(ActorCounter::outbox_depth, 7);
    c.raise(ActorCounter::outbox_high_water, 9);
    c.raise(ActorCounter::outbox_high_water, 4);  // never lowers
    const auto at = [&](ActorCounter k) {
        std::uint64_t v = 0;
        std::memcpy(&v, r.data + 128 + 8 * static_cast<std::size_t>(k), 8);
        return v;
    };
    EXPECT_EQ(at(ActorCounter::contexts_opened), 3U);
    EXPECT_EQ(at(ActorCounter::errors_reported), 1U);
    EXPECT_EQ(at(ActorCounter::outbox_depth), 7U);
    EXPECT_EQ(at(ActorCounter::outbox_high_water), 9U);
    // Slot numbers are the format: the first and the last must not move.
    EXPECT_EQ(static_cast<int>(ActorCounter::contexts_opened), 0);
    EXPECT_EQ(static_cast<int>(ActorCounter::errors_reported), 23);
}

TEST(ActorCounters, EveryCounterHasAUniqueName) {
    std::set<std::string> names;
    for (std::uint32_t i = 0; i < shm::kActorCounterSlots; ++i) {
        const std::string name(shm::actor_counter_name(i));
        EXPECT_FALSE(name.empty()) << i;
        names.insert(name);
    }
    EXPECT_EQ(names.size(), shm::kActorCounterSlots);
    EXPECT_EQ(shm::actor_counter_name(shm::kActorCounterSlots), "");
    EXPECT_EQ(shm::actor_counter_name(0), "contexts_opened");
}

TEST(ActorCounters, ReaderSeesWhatTheWriterCounted) {
    Region r(shm::kActorCountersBytes);
    shm::init_actor_counters(r.span());
    shm::ActorCounters c(r.span());
    c.add(ActorCounter::links_up, 2);
    std::string problem;
    const auto s = shm::read_actor_counters(r.span(), problem);
    ASSERT_TRUE(s) << problem;
    EXPECT_EQ(s->known, shm::kActorCounterSlots);
    EXPECT_EQ((*s)[ActorCounter::links_up], 2U);
    EXPECT_EQ((*s)[ActorCounter::links_failed], 0U);
}

TEST(ActorCounters, ReaderRejectsUninitialisedForeignAndOversizedRegions) {
    std::string problem;
    {
        Region r(shm::kActorCountersBytes);  // zero: a segment of a version without counters
        EXPECT_FALSE(shm::read_actor_counters(r.span(), problem));
        EXPECT_THAT(problem, HasSubstr("not initialised"));
    }
    {
        Region r(shm::kActorCountersBytes);
        shm::init_actor_counters(r.span());
        poke<std::uint64_t>(r, 0, 0x1234);
        EXPECT_FALSE(shm::read_actor_counters(r.span(), problem));
        EXPECT_THAT(problem, HasSubstr("bad magic"));
    }
    {
        Region r(shm::kActorCountersBytes);
        shm::init_actor_counters(r.span());
        poke<std::uint32_t>(r, 8, shm::kActorCountersVersion + 1);
        EXPECT_FALSE(shm::read_actor_counters(r.span(), problem));
        EXPECT_THAT(problem, HasSubstr("version"));
    }
    {
        Region r(shm::kActorCountersBytes);
        shm::init_actor_counters(r.span());
        poke<std::uint32_t>(r, 12, 0xFFFF'FFFF);  // more slots than the region holds
        EXPECT_FALSE(shm::read_actor_counters(r.span(), problem));
        EXPECT_THAT(problem, HasSubstr("slots"));
    }
    {
        // A newer writer with more slots than we know: we read those we know.
        Region r(shm::kActorCountersBytes);
        shm::init_actor_counters(r.span());
        poke<std::uint32_t>(r, 12, shm::kActorCounterSlots + 5);
        const auto s = shm::read_actor_counters(r.span(), problem);
        ASSERT_TRUE(s) << problem;
        EXPECT_EQ(s->known, shm::kActorCounterSlots);
        EXPECT_EQ(s->slots, shm::kActorCounterSlots + 5);
    }
    Region tiny(4096);
    EXPECT_FALSE(shm::read_actor_counters(tiny.span().first(64), problem));
}

// ---- error log ----

constexpr std::uint64_t kT0 = 1'700'000'000'000'000'000ULL;

TEST(ErrorLog, SameTextIsOneRecordWithCountFirstAndLast) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    w.report_at("link to b failed: bad record", kT0);
    w.report_at("cannot link to c: version", kT0 + 5);
    w.report_at("link to b failed: bad record", kT0 + 10);
    w.report_at("link to b failed: bad record", kT0 + 20);
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    ASSERT_TRUE(s.valid) << s.problem;
    EXPECT_EQ(s.capacity, shm::error_log_capacity(shm::kActorErrorLogBytes));
    EXPECT_EQ(s.used, 2U);
    EXPECT_EQ(s.reports, 4U);
    EXPECT_EQ(s.dropped, 0U);
    EXPECT_TRUE(s.skipped.empty()) << s.skipped.front();
    ASSERT_EQ(s.entries.size(), 2U);
    EXPECT_EQ(s.entries[0].text, "link to b failed: bad record");
    EXPECT_EQ(s.entries[0].count, 3U);
    EXPECT_EQ(s.entries[0].first_unix_ns, kT0);
    EXPECT_EQ(s.entries[0].last_unix_ns, kT0 + 20);
    EXPECT_EQ(s.entries[1].text, "cannot link to c: version");
    EXPECT_EQ(s.entries[1].count, 1U);
    EXPECT_EQ(s.entries[1].first_unix_ns, kT0 + 5);
    EXPECT_FALSE(s.entries[0].truncated);
}

TEST(ErrorLog, RealClockTimesAreWallClock) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    const auto before =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    w.report("x");
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    ASSERT_EQ(s.entries.size(), 1U);
    EXPECT_GE(s.entries[0].first_unix_ns, before);
    EXPECT_LT(s.entries[0].first_unix_ns, before + 60'000'000'000ULL);
}

TEST(ErrorLog, LongTextIsCutWithAMarkerAndStillDeduplicated) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    const std::string long_text(2000, 'e');
    w.report_at(long_text, kT0);
    w.report_at(long_text, kT0 + 1);
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    ASSERT_EQ(s.entries.size(), 1U);
    const shm::ErrorEntry& e = s.entries[0];
    EXPECT_TRUE(e.truncated);
    EXPECT_EQ(e.count, 2U);
    ASSERT_EQ(e.text.size(), shm::kErrorTextBytes);
    EXPECT_TRUE(e.text.ends_with(shm::kErrorTruncatedMarker));
    EXPECT_EQ(e.text.substr(0, 10), std::string(10, 'e'));
}

TEST(ErrorLog, BytesOutsidePrintableAsciiAreStoredAsPrintable) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    w.report_at(std::string("line1\nline2\tx\x1b[31m\xff", 19), kT0);
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    ASSERT_EQ(s.entries.size(), 1U);
    EXPECT_EQ(s.entries[0].text, "line1 line2 x?[31m?");
}

TEST(ErrorLog, FullLogCountsDroppedReportsAndKeepsItsRecords) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    const std::uint32_t cap = shm::error_log_capacity(shm::kActorErrorLogBytes);
    ASSERT_GT(cap, 10U);
    for (std::uint32_t i = 0; i < cap; ++i) w.report_at("error " + std::to_string(i), kT0 + i);
    w.report_at("one too many", kT0 + cap);
    w.report_at("two too many", kT0 + cap);
    w.report_at("error 0", kT0 + cap + 1);  // a known text still counts
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    ASSERT_TRUE(s.valid);
    EXPECT_EQ(s.used, cap);
    EXPECT_EQ(s.dropped, 2U);
    EXPECT_EQ(s.reports, cap + 3U);
    ASSERT_EQ(s.entries.size(), cap);
    EXPECT_EQ(s.entries[0].text, "error 0");
    EXPECT_EQ(s.entries[0].count, 2U);
    EXPECT_EQ(s.entries[0].last_unix_ns, kT0 + cap + 1);
    EXPECT_EQ(s.entries.back().text, "error " + std::to_string(cap - 1));
    for (const auto& e : s.entries) EXPECT_THAT(e.text, ::testing::Not(HasSubstr("too many")));
}

/// A log with three records, for forging one of them.
struct ForgedLog {
    Region r{shm::kActorErrorLogBytes};
    shm::ErrorLogWriter w{r.span()};
    ForgedLog() {
        shm::init_error_log(r.span());
        w.report_at("first", kT0);
        w.report_at("second", kT0);
        w.report_at("third", kT0);
    }
    std::size_t record(std::size_t i) const {
        return shm::kErrorLogHeaderBytes + i * shm::kErrorRecordBytes;
    }
    /// Reads, expecting records 0 and 2 and a skip of record 1 whose reason contains `why`.
    void expect_record1_skipped(const std::string& why) const {
        const shm::ErrorLogSample s = shm::read_error_log(r.span());
        ASSERT_TRUE(s.valid) << s.problem;
        ASSERT_EQ(s.entries.size(), 2U);
        EXPECT_EQ(s.entries[0].text, "first");
        EXPECT_EQ(s.entries[1].text, "third");
        ASSERT_EQ(s.skipped.size(), 1U);
        EXPECT_THAT(s.skipped[0], HasSubstr("record 1"));
        EXPECT_THAT(s.skipped[0], HasSubstr(why));
    }
};

TEST(ErrorLog, ReaderSkipsARecordWithALengthOverItsTextArea) {
    ForgedLog f;
    poke<std::uint64_t>(f.r, f.record(1) + 40, 100000);
    f.expect_record1_skipped("text length 100000");
}

TEST(ErrorLog, ReaderSkipsARecordWithANonPrintableByte) {
    ForgedLog f;
    poke<char>(f.r, f.record(1) + 48 + 2, '\x07');
    f.expect_record1_skipped("not printable");
}

TEST(ErrorLog, ReaderSkipsARecordWhoseTextDoesNotMatchItsHash) {
    ForgedLog f;
    poke<char>(f.r, f.record(1) + 48, 'S');  // "Second": printable, but not what was hashed
    f.expect_record1_skipped("hash");
}

TEST(ErrorLog, ReaderSkipsARecordWithInconsistentTimes) {
    ForgedLog f;
    poke<std::uint64_t>(f.r, f.record(1) + 32, kT0 - 1);  // last before first
    f.expect_record1_skipped("inconsistent");
}

TEST(ErrorLog, ReaderReportsARecordLeftMidWriteAsBusyAfterBoundedRetries) {
    ForgedLog f;
    poke<std::uint64_t>(f.r, f.record(1), 3);  // odd: a writer that died mid-write
    f.expect_record1_skipped("still being written");
}

TEST(ErrorLog, ReaderClampsAPublishedCountOverTheCapacity) {
    ForgedLog f;
    poke<std::uint32_t>(f.r, 64, 0xFFFF'FFFF);
    const shm::ErrorLogSample s = shm::read_error_log(f.r.span());
    ASSERT_TRUE(s.valid);
    EXPECT_EQ(s.used, s.capacity);
    EXPECT_EQ(s.entries.size(), 3U);  // the rest were never written: skipped, never a crash
    EXPECT_THAT(s.skipped.front(), HasSubstr("over the capacity"));
}

TEST(ErrorLog, ReaderRejectsABadHeader) {
    {
        Region r(shm::kActorErrorLogBytes);
        EXPECT_THAT(shm::read_error_log(r.span()).problem, HasSubstr("not initialised"));
    }
    {
        ForgedLog f;
        poke<std::uint32_t>(f.r, 16, 1'000'000);  // capacity past the region
        const shm::ErrorLogSample s = shm::read_error_log(f.r.span());
        EXPECT_FALSE(s.valid);
        EXPECT_THAT(s.problem, HasSubstr("inconsistent"));
    }
    {
        ForgedLog f;
        poke<std::uint32_t>(f.r, 8, 99);
        EXPECT_THAT(shm::read_error_log(f.r.span()).problem, HasSubstr("version 99"));
    }
}

TEST(ErrorLog, ReaderRacingTheWriterNeverSeesATornRecord) {
    Region r(shm::kActorErrorLogBytes);
    shm::init_error_log(r.span());
    shm::ErrorLogWriter w(r.span());
    // Texts of different lengths, so that a torn copy would mix them (and fail the hash).
    const std::vector<std::string> texts = {"a", std::string(300, 'b'), std::string(463, 'c'),
                                            "dddd"};
    std::atomic<bool> done{false};
    std::latch go(2);
    std::thread writer([&] {
        go.arrive_and_wait();
        const std::uint64_t n = test::scaled(20000);
        for (std::uint64_t i = 0; i < n; ++i) w.report_at(texts[i % texts.size()], kT0 + i);
        done.store(true, std::memory_order::release);
    });
    std::vector<std::uint64_t> last_count(texts.size(), 0);
    std::uint64_t reads = 0;
    go.arrive_and_wait();
    while (!done.load(std::memory_order::acquire) || reads == 0) {
        const shm::ErrorLogSample s = shm::read_error_log(r.span());
        ++reads;
        ASSERT_TRUE(s.valid);
        // A record still changing after the bounded retries is skipped as busy, never torn.
        for (const auto& why : s.skipped) ASSERT_THAT(why, HasSubstr("still being written"));
        for (const auto& e : s.entries) {
            ASSERT_LT(e.index, texts.size());
            ASSERT_EQ(e.text, texts[e.index]);
            ASSERT_GE(e.count, last_count[e.index]) << "count went backwards";
            ASSERT_LE(e.first_unix_ns, e.last_unix_ns);
            last_count[e.index] = e.count;
        }
    }
    writer.join();
    const shm::ErrorLogSample s = shm::read_error_log(r.span());
    std::uint64_t total = 0;
    for (const auto& e : s.entries) total += e.count;
    EXPECT_EQ(total, test::scaled(20000));
}

// ---- the runtime's counts, read as an observer does ----

ActorOptions in(const test::NamespaceGuard& ns) {
    ActorOptions o;
    o.ns = ns.names.ns();
    return o;
}

shm::ActorCountersSample observe(const test::NamespaceGuard& ns, const std::string& name) {
    auto seg = shm::ActorSegment::try_open(ns.names, name, shm::ActorSegmentOptions{0600, true});
    if (!seg) throw std::runtime_error("no segment of " + name);
    std::string problem;
    auto s = shm::read_actor_counters(seg->counters(), problem);
    if (!s) throw std::runtime_error(problem);
    return *s;
}

TEST(ActorCountersRuntime, CountsContextsRefusalsCancelsAndLinks) {
    test::NamespaceGuard ns("ctr-rt");
    {
        Actor a("a", in(ns));
        Actor b("b", in(ns));
        b.expose("echo", [](Context&, const Payload& args) { return Payload::copy(args); });
        b.expose("wait", [](Context& ctx, const Payload&) -> Payload {
            ctx.started({});
            test::until_cancelled(ctx, 30s);
            return {};
        });
        Portal p = a.connect("b", 5s);
        for (int i = 0; i < 3; ++i) {
            (void)p.open_context("echo", Payload::value(i), [](Context&, const Payload&) {});
        }
        EXPECT_THROW((void)p.open_context("nope", {}, [](Context&, const Payload&) {}),
                     RemoteActorError);
        (void)p.open_context("wait", {}, [](Context& ctx, const Payload&) { ctx.cancel(); });

        const auto sa = observe(ns, "a");
        EXPECT_EQ(sa[ActorCounter::contexts_opened], 5U);
        EXPECT_EQ(sa[ActorCounter::contexts_closed], 5U);
        EXPECT_EQ(sa[ActorCounter::cancels_requested], 1U);
        EXPECT_EQ(sa[ActorCounter::cancels_acked], 1U);
        EXPECT_EQ(sa[ActorCounter::cancels_timed_out], 0U);
        EXPECT_EQ(sa[ActorCounter::links_up], 1U);
        EXPECT_EQ(sa[ActorCounter::tasks_started], 0U);
        // The child side: counted by b's threads; the last task's end may trail a's return.
        ASSERT_TRUE(test::wait_until([&] {
            const auto sb = observe(ns, "b");
            return sb[ActorCounter::tasks_ended] == 4U;
        })) << observe(ns, "b")[ActorCounter::tasks_ended];
        const auto sb = observe(ns, "b");
        EXPECT_EQ(sb[ActorCounter::tasks_started], 4U);
        EXPECT_EQ(sb[ActorCounter::starts_refused], 1U);
        EXPECT_EQ(sb[ActorCounter::cancels_received], 1U);
        EXPECT_EQ(sb[ActorCounter::contexts_opened], 0U);
        EXPECT_EQ(sb[ActorCounter::links_failed], 0U);
    }
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

TEST(ActorCountersRuntime, ActorCancelIsCountedOnBothSides) {
    test::NamespaceGuard ns("ctr-ac");
    Actor a("a", in(ns));
    Actor b("b", in(ns));
    Portal p = a.connect("b", 5s);
    EXPECT_TRUE(p.cancel_actor(5s));
    EXPECT_EQ(observe(ns, "a")[ActorCounter::actor_cancel_requests], 1U);
    EXPECT_EQ(observe(ns, "b")[ActorCounter::actor_cancels], 1U);
}

}  // namespace
}  // namespace shmctx
