// Unit tests of the harness's pure parts: the coordinated-omission correction of the fixed-rate
// test, the percentile curve, and the SVG writer's escaping and charts. No process, no timing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "harness.hpp"
#include "svg.hpp"

namespace shmctx::bench {
namespace {

/// A one-in-flight sender at one message per `period` ns to a server answering in `service(i)`
/// ns: message i leaves at max(its intended time, the previous reply), as the harness's
/// fixed-rate loop sends.
template <class Service>
FixedRateRecorder simulate(double period, std::size_t count, Service service) {
    FixedRateRecorder rec(period, count);
    std::int64_t previous_reply = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const std::int64_t sent = std::max(rec.intended_ns(i), previous_reply);
        const std::int64_t reply = sent + service(i);
        rec.record(sent, reply);
        previous_reply = reply;
    }
    return rec;
}

TEST(FixedRateRecorder, ChargesTheMessagesDueDuringAStall) {
    // 1000 messages, one every 1000 ns, each answered in 100 ns, except message 500, which
    // stalls the server for 50 000 ns. By hand:
    //  - message 500 waits 50 000 ns;
    //  - message 500+j (j >= 1) was due at 500 000 + 1000 j but leaves at the previous reply,
    //    550 000 + 100 (j-1), and returns at 550 000 + 100 j: latency from its intended time
    //    50 000 - 900 j, for j = 1..55 (j = 56 is due after message 555's reply, 555 500, and
    //    leaves on time); j = 55 gives 500 ns;
    //  - so 56 messages are charged 500, 1400, ..., 50 000 ns (step 900) and 944 take 100 ns.
    // Nearest rank over 1000 sorted samples: p50 = [500] = 100, p90 = [900] = 100,
    // p99 = [990] = 500 + 900 * (990 - 944) = 41 900, p99.9 = [999] = 50 000.
    FixedRateRecorder rec =
        simulate(1000.0, 1000, [](std::size_t i) { return i == 500 ? 50'000 : 100; });
    const FixedRateRun r = rec.finish();
    EXPECT_EQ(r.corrected.samples, 1000U);
    EXPECT_EQ(r.corrected.p50, 100);
    EXPECT_EQ(r.corrected.p90, 100);
    EXPECT_EQ(r.corrected.p99, 41'900);
    EXPECT_EQ(r.corrected.p999, 50'000);
    EXPECT_EQ(r.corrected.max, 50'000);
    // Measured from the actual send, the stall is one slow message among 1000: invisible at
    // p99 (coordinated omission).
    EXPECT_EQ(r.uncorrected.p99, 100);
    EXPECT_EQ(r.uncorrected.max, 50'000);
    // Late (> 1 us after the intended time): j = 1..54 (sent 49 900 - 900 j after it).
    EXPECT_EQ(r.late, 54U);
    // The last reply at 999 100 ns.
    EXPECT_DOUBLE_EQ(r.achieved, 1000 * 1e9 / 999'100.0);
    // The corrected samples, sorted: the 56 charged values on top of the 944 at 100 ns.
    const auto& s = rec.corrected_samples();
    ASSERT_EQ(s.size(), 1000U);
    EXPECT_EQ(std::count(s.begin(), s.end(), 100U), 944);
    for (std::size_t m = 0; m < 56; ++m) EXPECT_EQ(s[944 + m], 500 + 900 * m) << m;
}

TEST(FixedRateRecorder, WithoutStallsEqualsTheUncorrectedLatency) {
    FixedRateRecorder rec =
        simulate(1000.0, 200, [](std::size_t i) { return static_cast<std::int64_t>(100 + i); });
    const FixedRateRun r = rec.finish();
    EXPECT_EQ(r.late, 0U);
    EXPECT_EQ(r.corrected.p50, r.uncorrected.p50);
    EXPECT_EQ(r.corrected.p50, 200);  // [100] of 100..299
    EXPECT_EQ(r.corrected.max, 299);
}

TEST(FixedRateRecorder, CountsMessagesNeverSentWithTheTimeTheyHadWaited) {
    // 10 messages due every 1000 ns; 5 answered in 100 ns, then the run stops at 20 000 ns:
    // messages 5..9 (due 5000..9000) had waited 15 000..11 000 ns and count as such.
    FixedRateRecorder rec(1000.0, 10);
    for (std::int64_t i = 0; i < 5; ++i) rec.record(i * 1000, i * 1000 + 100);
    for (int i = 5; i < 10; ++i) rec.record_unsent(20'000);
    const FixedRateRun r = rec.finish();
    EXPECT_EQ(r.unsent, 5U);
    EXPECT_EQ(r.corrected.samples, 10U);
    EXPECT_EQ(r.uncorrected.samples, 5U);
    EXPECT_EQ(r.corrected.p50, 11'000);  // [5] of 100 x5, 11 000 .. 15 000
    EXPECT_EQ(r.corrected.max, 15'000);
    EXPECT_EQ(r.uncorrected.max, 100);
    EXPECT_DOUBLE_EQ(r.achieved, 5 * 1e9 / 4100.0);  // sent ones over the last reply
}

TEST(PercentileCurve, HitsTheDecadesAndEndsAtTheMaximum) {
    std::vector<std::uint32_t> v(1000);
    std::iota(v.begin(), v.end(), 1U);  // 1..1000, sorted
    const std::vector<CurvePoint> c = percentile_curve(v);
    ASSERT_GE(c.size(), 3U);
    EXPECT_EQ(c.front().percentile, 0);
    EXPECT_EQ(c.front().ns, 1);
    auto at = [&](double p) {
        for (const CurvePoint& x : c)
            if (std::abs(x.percentile - p) < 1e-9) return x.ns;
        ADD_FAILURE() << "no point at " << p;
        return -1.0;
    };
    EXPECT_EQ(at(0.9), 901);
    EXPECT_EQ(at(0.99), 991);
    EXPECT_DOUBLE_EQ(c.back().percentile, 0.999);
    EXPECT_EQ(c.back().ns, 1000);
    for (std::size_t i = 1; i < c.size(); ++i) {
        EXPECT_GE(c[i].percentile, c[i - 1].percentile);
        EXPECT_GE(c[i].ns, c[i - 1].ns);
    }
    EXPECT_TRUE(percentile_curve({}).empty());
}

TEST(SvgWriter, EscapesMarkupQuotesAndBytesXmlCannotHold) {
    EXPECT_EQ(svg::escaped(R"(<a href="x">&'y</a>)"),
              "&lt;a href=&quot;x&quot;&gt;&amp;&apos;y&lt;/a&gt;");
    EXPECT_EQ(svg::escaped(std::string("a\x01") + "b\xff\tc\n"), "a?b? c ");
    EXPECT_EQ(svg::escaped("plain 1.5us"), "plain 1.5us");
}

TEST(SvgWriter, WritesEscapedTextAndPolylines) {
    svg::Document d(100, 50);
    d.text({1, 2}, "p99 < 5us & \"ok\"");
    d.polyline(std::vector<svg::Point>{{0, 0}, {10, 5.5}}, {});
    d.polyline(std::vector<svg::Point>{{0, 0}}, {});  // one point: nothing drawn
    const std::string out = d.str();
    EXPECT_NE(out.find(">p99 &lt; 5us &amp; &quot;ok&quot;</text>"), std::string::npos) << out;
    EXPECT_NE(out.find("points=\"0.00,0.00 10.00,5.50\""), std::string::npos) << out;
    EXPECT_EQ(out.find("<polyline", out.find("<polyline") + 1), std::string::npos);
    EXPECT_EQ(out.rfind("</svg>\n"), out.size() - 7);
}

TEST(SvgReport, DrawsBothChartsAndEscapesReportText) {
    Report r;
    r.commit = "abc<def";
    r.cpu = "<script>alert(1)</script>";
    r.date = "2026-11-30T00:00:00Z";
    Batch b;
    b.test = bench::Test::fixed_rate;
    b.rate = 10'000;
    std::vector<std::uint32_t> samples(1000);
    std::iota(samples.begin(), samples.end(), 500U);
    b.cells.push_back({"shmctx", {}, {}, {}, percentile_curve(samples)});
    r.batches.push_back(b);
    SpillResult s;
    s.options.duration = std::chrono::milliseconds(10);
    for (int t = 0; t <= 20; ++t)
        s.depth.push_back(
            {static_cast<double>(t), static_cast<std::uint64_t>(t <= 10 ? t * 100 : 0)});
    r.spill = s;
    const std::string out = render_svg(r);
    EXPECT_NE(out.find("<g id=\"latency-curve\">"), std::string::npos);
    EXPECT_NE(out.find("<g id=\"spill-depth\">"), std::string::npos);
    EXPECT_NE(out.find("shmctx spin 10k/s"), std::string::npos);
    EXPECT_EQ(out.find("<script"), std::string::npos);
    EXPECT_NE(out.find("&lt;script&gt;"), std::string::npos);
    EXPECT_NE(out.find("abc&lt;def"), std::string::npos);
    // One curve, one depth line.
    std::size_t lines = 0;
    for (std::size_t at = out.find("<polyline"); at != std::string::npos;
         at = out.find("<polyline", at + 1))
        ++lines;
    EXPECT_EQ(lines, 2U);
    // Without data each chart says so instead of drawing.
    const std::string empty = render_svg(Report{});
    EXPECT_NE(empty.find("no fixed-rate data"), std::string::npos);
    EXPECT_NE(empty.find("no spill data"), std::string::npos);
    EXPECT_EQ(empty.find("<polyline"), std::string::npos);
}

}  // namespace
}  // namespace shmctx::bench
