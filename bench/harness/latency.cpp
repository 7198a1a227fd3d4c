// Latency statistics of the harness: nearest-rank percentiles, the percentile curve, and the
// coordinated-omission correction of the fixed-rate test (bench/README.md §1.6).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "harness.hpp"

namespace shmctx::bench {
namespace {

/// A send later than its intended time by more than this counts as late.
constexpr std::int64_t kLateNs = 1000;

/// Nearest rank: the sample at floor(q * n), the last one for q near 1.
double at(std::span<const std::uint32_t> sorted, double q) {
    const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));
    return static_cast<double>(sorted[std::min(i, sorted.size() - 1)]);
}

}  // namespace

std::uint32_t saturated_ns(std::chrono::nanoseconds d) noexcept {
    return static_cast<std::uint32_t>(
        std::clamp<std::chrono::nanoseconds::rep>(d.count(), 0, UINT32_MAX));
}

RoundTripRun percentiles_of(std::vector<std::uint32_t>& samples) {
    RoundTripRun r;
    r.samples = samples.size();
    if (samples.empty()) return r;
    std::sort(samples.begin(), samples.end());
    r.p50 = at(samples, 0.50);
    r.p90 = at(samples, 0.90);
    r.p99 = at(samples, 0.99);
    r.p999 = at(samples, 0.999);
    r.p9999 = at(samples, 0.9999);
    r.max = static_cast<double>(samples.back());
    return r;
}

std::vector<CurvePoint> percentile_curve(std::span<const std::uint32_t> sorted) {
    std::vector<CurvePoint> out;
    if (sorted.empty()) return out;
    const auto n = static_cast<double>(sorted.size());
    // k in steps of 0.05 (20 points a decade of 1/(1-p)), computed from an integer step so
    // that the exact decades (p50 is k = log10(2) off-grid, p90 k = 1, p99 k = 2) are hit.
    for (int step = 0;; ++step) {
        const double k = step * 0.05;
        if (std::pow(10.0, k) > n) break;
        const double p = 1.0 - std::pow(10.0, -k);
        out.push_back({p, at(sorted, p)});
    }
    out.push_back({1.0 - 1.0 / n, static_cast<double>(sorted.back())});
    return out;
}

FixedRateRecorder::FixedRateRecorder(double period_ns, std::size_t expected)
    : period_ns_(period_ns) {
    corrected_.reserve(expected);
    uncorrected_.reserve(expected);
}

std::int64_t FixedRateRecorder::intended_ns(std::size_t i) const noexcept {
    return static_cast<std::int64_t>(std::llround(static_cast<double>(i) * period_ns_));
}

void FixedRateRecorder::record(std::int64_t sent_ns, std::int64_t received_ns) {
    const std::int64_t intended = intended_ns(corrected_.size());
    // The correction: the reply's time minus the time the message was due, not minus the time
    // it actually left. A message held back by a stall (or by the previous reply) is charged
    // the time it waited to be sent.
    corrected_.push_back(saturated_ns(std::chrono::nanoseconds(received_ns - intended)));
    uncorrected_.push_back(saturated_ns(std::chrono::nanoseconds(received_ns - sent_ns)));
    if (sent_ns - intended > kLateNs) ++late_;
    last_received_ns_ = std::max(last_received_ns_, received_ns);
}

void FixedRateRecorder::record_unsent(std::int64_t stop_ns) {
    // Still due, never sent: it had waited at least this long when the run stopped. Leaving it
    // out would be the omission the correction is about.
    corrected_.push_back(
        saturated_ns(std::chrono::nanoseconds(stop_ns - intended_ns(corrected_.size()))));
    ++unsent_;
}

FixedRateRun FixedRateRecorder::finish() {
    FixedRateRun r;
    r.late = late_;
    r.unsent = unsent_;
    if (last_received_ns_ > 0)
        r.achieved = static_cast<double>(corrected_.size() - unsent_) * 1e9 /
                     static_cast<double>(last_received_ns_);
    r.corrected = percentiles_of(corrected_);
    r.uncorrected = percentiles_of(uncorrected_);
    return r;
}

}  // namespace shmctx::bench
