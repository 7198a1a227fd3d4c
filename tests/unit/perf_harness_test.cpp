// Unit tests of the harness's pure parts: the coordinated-omission correction of the fixed-rate
// test, the percentile curve, the SVG writer's escaping and charts, the Markdown report and the
// names of a saved result set. No process, no timing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <sstream>
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
    EXPECT_NE(out.find("fixed rate spin 10k/s"), std::string::npos);  // the panel's title
    EXPECT_NE(out.find(">shmctx</text>"), std::string::npos);         // its legend
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

/// A fixed-rate run of `count` messages of which `unsent` were never sent, at `achieved` msg/s.
FixedRateRun fixed_run(std::size_t count, std::size_t unsent, double achieved) {
    FixedRateRun x;
    x.corrected.samples = count;
    x.corrected.p50 = 1000;
    x.unsent = unsent;
    x.achieved = achieved;
    return x;
}

/// The text between "### <title>" and the next heading (or the end).
std::string md_section(const std::string& md, const std::string& title) {
    const auto at = md.find("\n### " + title + "\n");
    if (at == std::string::npos) return {};
    const auto end = md.find("\n### ", at + 1);
    return md.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

TEST(MarkdownReport, HasAHeaderOneTablePerSectionAndTheTargets) {
    Report r;
    r.commit = "0123456789abcdef0123456789abcdef01234567";
    r.cpu = "Intel(R) Xeon(R) Processor";
    r.date = "2026-11-30T10:00:00Z";
    r.build_type = "Release";
    r.online_cpus = 2;
    r.virtual_cpus = true;
    r.placement.text = "parent cpu0, peer cpu1";
    r.options.tests = {bench::Test::throughput, bench::Test::fixed_rate};
    Batch tp;
    tp.size = 64;
    tp.c2c.median_ns = 131;
    tp.c2c.min_ns = 120;
    tp.cells.push_back({"shmctx-batch", {60e6, 62e6, 58e6}, {}, {}, {}});
    tp.cells.push_back({"minimal-batch", {90e6}, {}, {}, {}});
    tp.cells.push_back({"a|b", {30e6}, {}, {}, {}});
    r.batches.push_back(tp);
    Batch fr;
    fr.test = bench::Test::fixed_rate;
    fr.size = 64;
    fr.rate = 1e6;
    fr.cells.push_back({"shmctx", {}, {}, {fixed_run(1000, 0, 0.99e6)}, {}});
    fr.cells.push_back({"uds", {}, {}, {fixed_run(1000, 400, 0.3e6)}, {}});
    fr.cells.push_back({"mq", {}, {}, {fixed_run(1000, 0, 0.5e6)}, {}});
    r.batches.push_back(fr);

    const std::string md = render_markdown(r);
    EXPECT_EQ(md.rfind("# shmctx perf harness: 0123456789ab, 2026-11-30\n", 0), 0U) << md;
    EXPECT_NE(md.find("| cpu | Intel(R) Xeon(R) Processor (2 online vCPUs) |"), std::string::npos);
    EXPECT_NE(md.find("| throughput  64 B  spin | 131ns | 120ns |"), std::string::npos) << md;

    const std::string t = md_section(md, "throughput  64 B  spin");
    ASSERT_FALSE(t.empty()) << md;
    EXPECT_NE(t.find("| transport | msg/s | (min - max) | MB/s | ratio to shmctx-batch |\n"
                     "|:---|---:|---:|---:|---:|\n"),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("| shmctx-batch | 60.00M | (58.00M - 62.00M) | 3840 | 1.00x |"),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("| minimal-batch | 90.00M | (90.00M - 90.00M) | 5760 | 1.50x |"),
              std::string::npos)
        << t;
    // A '|' in a cell is escaped, so the row keeps its columns.
    EXPECT_NE(t.find("| a\\|b | 30.00M |"), std::string::npos) << t;

    // Fixed rate: unsent messages or an achieved rate below 90 % of the rate = not sustained.
    const std::string f = md_section(md, "fixed-rate  64 B  spin  1M/s");
    ASSERT_FALSE(f.empty()) << md;
    EXPECT_NE(f.find("coordinated-omission corrected"), std::string::npos);
    EXPECT_NE(f.find("| shmctx |"), std::string::npos);
    EXPECT_NE(f.find("990.0k/s | 0 | yes |"), std::string::npos) << f;
    EXPECT_NE(f.find("300.0k/s | 400 | NO (1 of 1 runs) |"), std::string::npos) << f;
    EXPECT_NE(f.find("500.0k/s | 0 | NO (1 of 1 runs) |"), std::string::npos) << f;
    EXPECT_NE(f.find("- uds: rate not sustained in 1 of 1 runs"), std::string::npos) << f;
    EXPECT_EQ(f.find("- mq:"), std::string::npos) << f;

    // Targets: throughput 64 B spin shmctx-batch / minimal-batch = 0.667 >= 0.5.
    const std::string g =
        md_section(md, "DESIGN.md §8 targets (ratios of medians within one batch)");
    ASSERT_FALSE(g.empty()) << md;
    EXPECT_NE(g.find("| target | measured | bar | result |"), std::string::npos) << g;
    EXPECT_NE(g.find("| throughput 64 B spin: shmctx-batch / minimal-batch | 0.667 | >= 0.5 | "
                     "met |"),
              std::string::npos)
        << g;
    // The text report shows the same rows.
    std::ostringstream text;
    print_table(r, text);
    EXPECT_NE(text.str().find("shmctx-batch / minimal-batch     0.667  >= 0.5     met"),
              std::string::npos)
        << text.str();
}

TEST(MarkdownReport, MarksInformationRowsAndDebugBuilds) {
    Report r;
    r.build_type = "Debug";
    r.cpu = "<script>x</script> | y";
    Batch tp;
    tp.size = 64;
    tp.cells.push_back({"shmctx-drain", {10e6}, {}, {}, {}});
    tp.cells.push_back({"minimal-batch", {100e6}, {}, {}, {}});
    r.batches.push_back(tp);
    const std::string md = render_markdown(r);
    EXPECT_NE(md.find("**Not an optimised build"), std::string::npos);
    EXPECT_EQ(md.find("<script"), std::string::npos) << md;
    EXPECT_NE(md.find("| cpu | &lt;script>x&lt;/script> \\| y (0 online CPUs) |"),
              std::string::npos)
        << md;
    EXPECT_NE(md.find("| throughput 64 B spin: shmctx-drain / minimal-batch (info: publish per "
                      "message) | 0.100 | >= 0.5 | info |"),
              std::string::npos)
        << md;
}

TEST(ResultNames, SlugIsShortAndFilesystemSafe) {
    EXPECT_EQ(cpu_slug("Intel(R) Xeon(R) Processor", 2, true), "xeon-2vcpu");
    EXPECT_EQ(cpu_slug("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8, false), "xeon-8cpu");
    EXPECT_EQ(cpu_slug("AMD EPYC 7B13 64-Core Processor", 64, true), "epyc-64vcpu");
    EXPECT_EQ(cpu_slug("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", 12, false),
              "core-i7-8700k-12cpu");
    EXPECT_EQ(cpu_slug("unknown", 4, false), "cpu-4cpu");
    EXPECT_EQ(cpu_slug("../../etc/passwd; rm -rf /", 1, false), "etc-1cpu");
    for (const std::string& s : {cpu_slug("A/B\\C:D*E?F\"G<H>I|J K", 2, false),
                                 cpu_slug(std::string(200, 'x'), 2, false)}) {
        EXPECT_LE(s.size(), 24U) << s;
        EXPECT_EQ(s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-"), std::string::npos)
            << s;
    }
}

TEST(ResultNames, StemHasDateShortCommitAndMachine) {
    Report r;
    r.date = "2026-11-30T09:51:57Z";
    r.commit = "797c220a3e8d0000000000000000000000000000";
    r.cpu = "Intel(R) Xeon(R) Processor";
    r.online_cpus = 2;
    r.virtual_cpus = true;
    EXPECT_EQ(result_stem(r), "2026-11-30_797c220_xeon-2vcpu");
    r.commit += "-dirty";
    EXPECT_EQ(result_stem(r), "2026-11-30_797c220-dirty_xeon-2vcpu");
    r.commit = "unknown";
    EXPECT_EQ(result_stem(r), "2026-11-30_unknown_xeon-2vcpu");
}

}  // namespace
}  // namespace shmctx::bench
