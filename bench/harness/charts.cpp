// The harness's SVG report (harness.hpp write_svg): the fixed-rate latency percentile curves
// and the spill depth over time, drawn with the SVG writer (svg.hpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "harness.hpp"
#include "svg.hpp"

namespace shmctx::bench {
namespace {

using svg::Anchor;
using svg::Point;
using svg::Stroke;
using svg::TextStyle;

constexpr double kWidth = 960;
/// The spill chart: title, plot (300), axis labels and its notes.
constexpr double kSpillHeight = 460;
/// Colour-blind-safe palette (Okabe-Ito), then a few more.
constexpr std::string_view kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                        "#56B4E9", "#000000", "#999933", "#882255", "#44AA99"};
constexpr std::string_view kDashes[] = {"", "7 4", "2 3", "10 3 2 3"};
constexpr std::string_view kGrid = "#dddddd";
constexpr std::string_view kAxis = "#333333";

/// A plot area in document coordinates.
struct Frame {
    double left, top, width, height;
    double right() const { return left + width; }
    double bottom() const { return top + height; }
};

/// "10ns", "1us", "100us", "1ms", "10s" for a decade.
std::string decade_label(int exponent) {
    static const char* const units[] = {"ns", "us", "ms", "s"};
    const int unit = std::clamp(exponent / 3, 0, 3);
    const int rest = exponent - 3 * unit;
    std::string digits = "1";
    for (int i = 0; i < rest; ++i) digits += '0';
    return digits + units[unit];
}

/// The percentile with k nines: "90%", "99%", "99.9%", "99.99%" (1/(1-p) = 10^k).
std::string percentile_label(int nines) {
    if (nines <= 1) return "90%";
    std::string s = "99";
    if (nines > 2) s += "." + std::string(static_cast<std::size_t>(nines - 2), '9');
    return s + "%";
}

/// 1, 2, 5 x 10^k step giving about `ticks` intervals over [0, max].
double nice_step(double max, int ticks) {
    if (max <= 0) return 1;
    const double raw = max / ticks;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (raw <= m * mag) return m * mag;
    return 10 * mag;
}

std::string plain_number(double v) {
    char buf[32];
    if (std::fabs(v - std::round(v)) < 1e-9)
        std::snprintf(buf, sizeof buf, "%.0f", v);
    else
        std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

void frame_box(svg::Document& d, const Frame& f) {
    d.rect(f.left, f.top, f.width, f.height, "none", kAxis);
}

void no_data(svg::Document& d, const Frame& f, std::string_view why) {
    frame_box(d, f);
    d.text({f.left + f.width / 2, f.top + f.height / 2}, why,
           TextStyle{14, Anchor::middle, false, "#777777"});
}

struct Series {
    std::string label;
    std::vector<CurvePoint> curve;
    std::string_view color;
    std::string_view dash;
};

/// The fixed-rate batches of the report, in run order: one latency panel each.
std::vector<const Batch*> fixed_rate_batches(const Report& r) {
    std::vector<const Batch*> out;
    for (const Batch& b : r.batches)
        if (b.test == Test::fixed_rate) out.push_back(&b);
    return out;
}

constexpr double kPanelHeight = 520;  // a latency panel: title, plot (400), axis labels

/// One panel: the latency percentile curves of every transport of fixed-rate batch `b` (a
/// colour and dash per transport, the same in every panel: `transports` is the report's
/// order); or, for a report without fixed-rate batches (`b` null), a note saying so.
void latency_chart(svg::Document& d, const Batch* b, const std::vector<std::string>& transports,
                   double top, bool first) {
    const Frame f{80, top + 40, 600, 400};
    // The first panel's group carries the chart's id; the others are named by mode and rate.
    const std::string what =
        b == nullptr ? std::string() : std::string(to_string(b->mode)) + " " + format_rate(b->rate);
    // Ids are XML names: "latency-curve-spin-10000".
    const std::string id = first ? std::string("latency-curve")
                                 : "latency-curve-" + std::string(to_string(b->mode)) + "-" +
                                       std::to_string(static_cast<long long>(b->rate));
    d.begin_group(id,
                  "Latency percentile curve (fixed rate" + (what.empty() ? "" : ", " + what) + ")");
    d.text({f.left, top + 20},
           "Latency percentile curve, fixed rate " + (what.empty() ? "" : what + ", ") +
               "coordinated-omission corrected",
           TextStyle{16, Anchor::start, true});
    std::vector<Series> series;
    if (b != nullptr) {
        for (const Cell& c : b->cells) {
            if (c.curve.size() < 2) continue;
            const auto ti = static_cast<std::size_t>(
                std::find(transports.begin(), transports.end(), c.transport) - transports.begin());
            series.push_back({c.transport, c.curve, kColors[ti % std::size(kColors)],
                              kDashes[(ti / std::size(kColors)) % std::size(kDashes)]});
        }
    }
    if (series.empty()) {
        no_data(d, f, "no fixed-rate data (run with --tests fixed-rate)");
        d.end_group();
        return;
    }
    // Axes: x = log10(1/(1-p)), 0 .. the largest whole number of nines reached (at least 2);
    // y = log10(ns), whole decades around the data.
    double x_max = 2;
    double lo = 1e300, hi = 0;
    for (const Series& s : series) {
        for (const CurvePoint& p : s.curve) {
            x_max = std::max(x_max, std::log10(1.0 / (1.0 - p.percentile)));
            lo = std::min(lo, std::max(p.ns, 1.0));
            hi = std::max(hi, std::max(p.ns, 1.0));
        }
    }
    const int nines = static_cast<int>(std::ceil(x_max - 1e-9));
    const int y0 = static_cast<int>(std::floor(std::log10(lo)));
    const int y1 = std::max(y0 + 1, static_cast<int>(std::ceil(std::log10(hi))));
    auto px = [&](double p) { return f.left + std::log10(1.0 / (1.0 - p)) / nines * f.width; };
    auto py = [&](double ns) {
        return f.bottom() -
               (std::log10(std::max(ns, 1.0)) - y0) / static_cast<double>(y1 - y0) * f.height;
    };
    for (int e = y0; e <= y1; ++e) {
        for (int m = 1; m <= 9 && (e < y1 || m == 1); ++m) {
            const double y = py(m * std::pow(10.0, e));
            d.line({f.left, y}, {f.right(), y}, Stroke{kGrid, m == 1 ? 1.0 : 0.5});
        }
        d.text({f.left - 6, py(std::pow(10.0, e)) + 4}, decade_label(e),
               TextStyle{11, Anchor::end});
    }
    std::vector<std::pair<double, std::string>> xticks{{0.0, "0%"}, {0.5, "50%"}};
    for (int k = 1; k <= nines; ++k)
        xticks.emplace_back(1.0 - std::pow(10.0, -k), percentile_label(k));
    for (const auto& [p, label] : xticks) {
        const double x = px(p);
        d.line({x, f.top}, {x, f.bottom()}, Stroke{kGrid, 1});
        d.line({x, f.bottom()}, {x, f.bottom() + 5}, Stroke{kAxis, 1});
        d.text({x, f.bottom() + 18}, label, TextStyle{11, Anchor::middle});
    }
    frame_box(d, f);
    d.text({f.left + f.width / 2, f.bottom() + 38}, "percentile (log scale of 1/(1-p))",
           TextStyle{12, Anchor::middle});
    d.text({f.left - 58, f.top + f.height / 2}, "latency from intended send time (log)",
           TextStyle{12, Anchor::middle, false, "#000", -90});
    for (const Series& s : series) {
        std::vector<Point> pts;
        pts.reserve(s.curve.size());
        for (const CurvePoint& p : s.curve) pts.push_back({px(p.percentile), py(p.ns)});
        d.polyline(pts, Stroke{s.color, 1.8, s.dash});
    }
    // Legend, right of the plot.
    double ly = f.top + 6;
    d.text({f.right() + 20, ly}, "transport", TextStyle{11, Anchor::start, true});
    for (const Series& s : series) {
        ly += 16;
        d.line({f.right() + 20, ly - 4}, {f.right() + 48, ly - 4}, Stroke{s.color, 2, s.dash});
        d.text({f.right() + 54, ly}, s.label, TextStyle{11});
    }
    d.end_group();
}

void spill_chart(svg::Document& d, const Report& r, double top) {
    const Frame f{80, top + 40, 600, 300};
    d.begin_group("spill-depth", "Spill depth over time");
    d.text({f.left, top + 20}, "Spill depth over time (slow consumer, allow_overruns)",
           TextStyle{16, Anchor::start, true});
    if (!r.spill || r.spill->depth.size() < 2) {
        no_data(d, f, "no spill data (run with --tests spill)");
        d.end_group();
        return;
    }
    const SpillResult& s = *r.spill;
    double t_max = 0;
    double depth_max = 0;
    for (const SpillSample& p : s.depth) {
        t_max = std::max(t_max, p.t_ms);
        depth_max = std::max(depth_max, static_cast<double>(p.depth));
    }
    const double xs = nice_step(t_max, 8);
    const double ys = nice_step(std::max(depth_max, 1.0), 5);
    const double x_end = std::ceil(t_max / xs) * xs;
    const double y_end = std::max(ys, std::ceil(std::max(depth_max, 1.0) / ys) * ys);
    auto px = [&](double t) { return f.left + t / x_end * f.width; };
    auto py = [&](double v) { return f.bottom() - v / y_end * f.height; };
    for (double t = 0; t <= x_end + xs / 2; t += xs) {
        d.line({px(t), f.top}, {px(t), f.bottom()}, Stroke{kGrid, 1});
        d.text({px(t), f.bottom() + 18}, plain_number(t), TextStyle{11, Anchor::middle});
    }
    for (double v = 0; v <= y_end + ys / 2; v += ys) {
        d.line({f.left, py(v)}, {f.right(), py(v)}, Stroke{kGrid, 1});
        d.text({f.left - 6, py(v) + 4}, plain_number(v), TextStyle{11, Anchor::end});
    }
    frame_box(d, f);
    d.text({f.left + f.width / 2, f.bottom() + 38}, "time since the first send (ms)",
           TextStyle{12, Anchor::middle});
    d.text({f.left - 58, f.top + f.height / 2}, "messages in the sender's spill",
           TextStyle{12, Anchor::middle, false, "#000", -90});
    const double stop = static_cast<double>(s.options.duration.count());
    if (stop <= x_end) {
        d.line({px(stop), f.top}, {px(stop), f.bottom()}, Stroke{"#D55E00", 1.2, "6 4"});
        d.text({px(stop) + 4, f.top + 14}, "producer stops",
               TextStyle{11, Anchor::start, false, "#D55E00"});
    }
    std::vector<Point> pts;
    pts.reserve(s.depth.size());
    for (const SpillSample& p : s.depth)
        pts.push_back({px(p.t_ms), py(static_cast<double>(p.depth))});
    d.polyline(pts, Stroke{kColors[0], 1.8});
    const SpillOptions& o = s.options;
    double ly = f.top + 6;
    for (const std::string& line :
         {"producer " + format_rate(o.producer_rate) + ", consumer " + format_rate(o.slow_rate()),
          "for " + std::to_string(o.duration.count()) + " ms, " + std::to_string(o.msg_bytes) +
              " B messages",
          "high water " + std::to_string(s.high_water) + " messages",
          "sent " + std::to_string(s.sent) + ", received " + std::to_string(s.received) +
              ", lost " + std::to_string(s.lost),
          "send p99.9 while spilling " + format_ns(s.send_spilling.p999),
          "drain rate " + format_rate(std::round(s.drain_rate)),
          "default policy: StreamOverrun after " + std::to_string(s.overrun_after) + " msgs"}) {
        d.text({f.right() + 20, ly + 10}, line, TextStyle{11});
        ly += 16;
    }
    d.end_group();
}

}  // namespace

std::string render_svg(const Report& r) {
    // A panel per fixed-rate batch (mode and rate: one curve per transport stays readable with
    // every peer in), then the spill chart.
    const std::vector<const Batch*> panels = fixed_rate_batches(r);
    std::vector<std::string> transports;
    for (const Batch* b : panels)
        for (const Cell& c : b->cells)
            if (std::find(transports.begin(), transports.end(), c.transport) == transports.end())
                transports.push_back(c.transport);
    const std::size_t n = std::max<std::size_t>(panels.size(), 1);
    const double height = 80 + static_cast<double>(n) * kPanelHeight + kSpillHeight;
    svg::Document d(kWidth, height);
    d.rect(0, 0, kWidth, height, "#ffffff");
    d.text({20, 28}, "shmctx perf", TextStyle{20, Anchor::start, true});
    d.text({20, 48},
           "commit " + r.commit.substr(0, 12) + "   " + r.date + "   build " + r.build_type,
           TextStyle{12});
    d.text({20, 64}, "cpu " + r.cpu + "   placement: " + r.placement.text, TextStyle{12});
    if (panels.empty()) latency_chart(d, nullptr, transports, 80, true);
    for (std::size_t i = 0; i < panels.size(); ++i)
        latency_chart(d, panels[i], transports, 80 + static_cast<double>(i) * kPanelHeight, i == 0);
    spill_chart(d, r, 80 + static_cast<double>(n) * kPanelHeight);
    return d.str();
}

void write_svg(const Report& r, const std::string& path) { write_file(path, render_svg(r)); }

}  // namespace shmctx::bench
