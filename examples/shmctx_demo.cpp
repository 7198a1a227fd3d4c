// shmctx_demo: the flagship demo (`./dev demo`). A market-data feed actor streams FlatBuffers
// ticks to a fast and a slow consumer, each actor its own process, under a supervisor that
// narrates what happens and shows the rings' shared-memory counters live.
//
//   root (this process): narrator and supervisor; open_nursery, then
//     ├─ start_actor  ──► feed  "ticks": paced FlatBuffers ticks on the context's stream,
//     │                         on_full = raise (the default)
//     ├─ start_actor  ──► fast  "session": opens "ticks" on feed, checks every tick's seq and
//     ├─ start_actor  ──► slow  streams its Report (ticks, its inbound ring's RingCounters) to root
//     └─ run_in_actor ──► ops   "cancel_actor": Portal::cancel_actor(feed), in step 4
//
//   feed ══ ticks ══► fast ── reports ──► root     each arrow is a context's stream, with a
//   feed ══ ticks ══► slow ── reports ──► root     ring of its own in shared memory
//
//   1. default policy: slow falls behind, the feed's send() raises StreamOverrun, which reaches
//      slow boxed (sender, receiver, limit); fast, on its own context, is unaffected;
//   2. slow reopens declaring allow_overruns: the feed spills and drains; slow checks every seq;
//   3. root cancels its context with fast: the cancel cascades to fast's context with the feed,
//      and root absorbs the ContextCancelled it asked for (is_absorbed_cancel, cancel_acked);
//   4. ops (a third actor) cancels the feed actor: both consumers get ContextCancelled naming
//      ops; the nursery reports that feed ended without being asked to.
//
// Every figure printed is measured in this run; the process exits non-zero if any check fails.
//
// Usage: shmctx_demo [--ns NAMESPACE] [--quick] [--no-color]
//        (internal: --role feed|consumer|ops, the nursery's children)
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/example_tick_generated.h"  // flatc output of examples/example_tick.fbs
#include "shmctx/nursery.hpp"
#include "shmctx/run_actor.hpp"
#include "shmctx/shm/names.hpp"

// Payload::as<Tick>() / Message::as<Tick>() check the file identifier the schema declares.
SHMCTX_ROOT_TYPE(shmctx::examples::Tick, "TICK");

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using shmctx::Context;
using shmctx::Message;
using shmctx::MsgStream;
using shmctx::Payload;
using shmctx::examples::Tick;

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count());
}

// ---- records between our own processes ----
// Start arguments and reports are plain structs sent as bytes: every process is this same
// executable. A record of the wrong size is rejected (it comes from another process).

template <class T>
Payload pod_payload(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Payload::copy(shmctx::PayloadView(std::as_bytes(std::span(&value, 1))));
}

template <class T>
T pod_from(std::span<const std::byte> bytes) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (bytes.size() != sizeof(T)) throw std::runtime_error("record of an unexpected size");
    T value{};
    std::memcpy(&value, bytes.data(), sizeof(T));
    return value;
}

/// The feed's "ticks" arguments.
struct FeedArgs {
    std::uint64_t count;  ///< ticks to send, then close the stream; 0: until cancelled
    std::uint64_t rate;   ///< ticks per second
};

/// Root's arguments to a consumer's "session".
struct SessionArgs {
    std::uint64_t count;           ///< FeedArgs::count
    std::uint64_t rate;            ///< FeedArgs::rate
    std::uint64_t slow_rate;       ///< 0: read as fast as possible; else ticks/s we process...
    std::uint64_t slow_after_ns;   ///< ...from this long after the first tick on
    std::uint32_t ring;            ///< our inbound ring, in messages (OpenOptions)
    std::uint32_t allow_overruns;  ///< declare allow_overruns (OpenOptions)
};

/// How a consumer's context with the feed ended.
enum class End : std::uint32_t { running, completed, overrun, cancelled, failed };

/// A consumer's report to root: what it checked, and its inbound ring's shared counters.
struct Report {
    std::uint64_t t_ns = 0;          ///< steady clock (CLOCK_MONOTONIC: one clock per machine)
    std::uint64_t start_ns = 0;      ///< when the feed's stream opened
    std::uint64_t received = 0;      ///< ticks received
    std::uint64_t out_of_order = 0;  ///< ticks whose seq was not the previous one + 1
    std::uint64_t ring = 0;          ///< ring capacity, messages
    std::uint64_t in_ring = 0;       ///< published by the feed, not yet read (ring fill)
    std::uint64_t sent = 0;          ///< RingCounters of the feed -> us ring
    std::uint64_t full_events = 0;
    std::uint64_t overruns = 0;
    std::uint64_t spilled = 0;
    std::uint64_t spill_drained = 0;
    std::uint64_t spill_discarded = 0;
    std::uint64_t spill_high_water = 0;
    End end = End::running;
    std::uint32_t reserved = 0;
    std::uint64_t spill_depth() const {
        const std::uint64_t out = spill_drained + spill_discarded;
        return spilled > out ? spilled - out : 0;
    }
};

// ---------------------------------------------------------------------------------------------
// The child actors (run_actor is their main)

// feed."ticks": `count` ticks at `rate`/s on this context's stream. Each context is its own
// stream with its own ring: a slow consumer cannot slow down or break another one.
Payload feed_ticks(Context& ctx, const Payload& args) {
    const auto a = pod_from<FeedArgs>(args.bytes());
    if (a.rate == 0) throw std::invalid_argument("rate 0");
    ctx.started();
    MsgStream stream = ctx.open_stream();  // on_full = raise: the default policy
    flatbuffers::FlatBufferBuilder fbb(128);
    // Paced: `rate` ticks a second, sent in the batch due at each wake-up. A feed descheduled
    // for a while does not catch up in one burst larger than 10 ms of ticks.
    const std::uint64_t max_burst = std::max<std::uint64_t>(a.rate / 100, 1);
    std::uint64_t seq = 0;
    std::uint64_t base_seq = 0;
    auto base_t = Clock::now();
    while (a.count == 0 || seq < a.count) {
        const auto now = Clock::now();
        const double elapsed = std::chrono::duration<double>(now - base_t).count();
        std::uint64_t due = base_seq + static_cast<std::uint64_t>(elapsed * double(a.rate));
        if (due > seq + max_burst) {
            due = seq + max_burst;
            base_seq = due;
            base_t = now;
        }
        if (a.count != 0) due = std::min(due, a.count);
        const std::uint64_t t = now_ns();
        for (; seq < due; ++seq) {
            fbb.Clear();
            const double mid = 100.0 + static_cast<double>(seq % 1000) * 0.01;
            fbb.Finish(shmctx::examples::CreateTick(fbb, seq, 7, mid - 0.005, mid + 0.005,
                                                    static_cast<std::uint32_t>(100 + seq % 7),
                                                    static_cast<std::uint32_t>(200 + seq % 5), t),
                       "TICK");
            stream.send(fbb);  // StreamOverrun if the consumer's ring is full (and it did not
                               // declare allow_overruns); spilled if it did
        }
        if (a.count == 0 || seq < a.count) ctx.sleep_for(1ms);  // a cancellation point
    }
    stream.close();  // flushes the spill into the ring, then the Stop
    return Payload::value(seq);
}

// Copies the counters of our inbound ring into `r`; false once the ring is gone (the context
// finished: the counters read as zeros then, and `r` keeps the last snapshot).
bool fill_counters(Report& r, const MsgStream& ticks) {
    const shmctx::shm::RingCounters c = ticks.inbound_counters();
    if (c.sent == 0 && r.sent != 0) return false;
    r.t_ns = now_ns();
    r.sent = c.sent;
    r.in_ring = c.sent > c.received ? c.sent - c.received : 0;
    r.full_events = c.full_events;
    r.overruns = c.overruns;
    r.spilled = c.spilled;
    r.spill_drained = c.spill_drained;
    r.spill_discarded = c.spill_discarded;
    r.spill_high_water = c.spill_high_water;
    return true;
}

// The feed bumps spill_drained/spill_discarded just after it moved the messages: as a stream
// ends, give its counters a moment to settle before the final report.
void settle(Report& r, const MsgStream& ticks) {
    const shmctx::Deadline limit(1s);
    while (fill_counters(r, ticks) && r.spill_depth() != 0 && !limit.expired()) {
        std::this_thread::sleep_for(1ms);  // polls a shared counter, bounded by `limit`
    }
}

// consumer."session": opens "ticks" on the feed, checks every tick, reports to root.
Payload consumer_session(shmctx::Actor& self, Context& ctx, const Payload& args) {
    const auto a = pod_from<SessionArgs>(args.bytes());
    ctx.started();
    MsgStream up = ctx.open_stream();  // our reports to root
    Report r;
    r.ring = a.ring;
    std::string event;  // what ended the feed's context, in words, for root
    shmctx::OpenOptions open;
    open.msg_buffer_size = a.ring;
    open.allow_overruns = a.allow_overruns != 0;  // the receiver's declaration
    shmctx::Portal feed = self.connect("feed");
    try {
        feed.open_context(
            "ticks", pod_payload(FeedArgs{a.count, a.rate}),
            [&](Context& fctx, const Payload&) {
                MsgStream ticks = fctx.open_stream();
                r.start_ns = now_ns();
                std::uint64_t next_seq = 0;
                std::uint64_t slow_since = 0;  // when we became slow (0: not yet)
                std::uint64_t received_then = 0;
                auto next_report = Clock::now();
                try {
                    for (;;) {
                        bool may_read = true;
                        if (a.slow_rate != 0) {  // at most slow_rate ticks/s once slow
                            const std::uint64_t t = now_ns();
                            if (slow_since == 0 && t - r.start_ns >= a.slow_after_ns) {
                                slow_since = t;
                                received_then = r.received;
                            }
                            if (slow_since != 0) {
                                const double budget =
                                    double(t - slow_since) * 1e-9 * double(a.slow_rate);
                                may_read = double(r.received - received_then) < budget;
                            }
                        }
                        if (may_read) {
                            const std::optional<Message> m = ticks.receive_for(20ms);
                            if (m) {
                                const Tick* tick = m->as<Tick>();  // verified FlatBuffer
                                if (tick->seq() != next_seq) ++r.out_of_order;
                                next_seq = tick->seq() + 1;
                                ++r.received;
                            }
                        } else {
                            fctx.sleep_for(1ms);  // "processing": the feed keeps sending
                        }
                        if (Clock::now() >= next_report) {
                            (void)fill_counters(r, ticks);
                            up.send(pod_payload(r));
                            next_report = Clock::now() + 50ms;
                        }
                    }
                } catch (const shmctx::EndOfChannel&) {  // the feed's Stop, after all its ticks
                    settle(r, ticks);
                    r.end = End::completed;
                } catch (...) {
                    // The feed's error (or our scope's cancel, which a remote error or root's
                    // cancel raises here as shmctx::Cancelled): the counters as it ends.
                    settle(r, ticks);
                    throw;
                }
            },
            open);
    } catch (const shmctx::ContextCancelled& e) {
        r.end = End::cancelled;
        event = e.canceller().to_string();
    } catch (const shmctx::RemoteActorError& e) {
        r.end = e.boxed_is<shmctx::StreamOverrun>() ? End::overrun : End::failed;
        event = e.message();  // the feed's own what(): who overran whom, and the limit
    }
    r.t_ns = now_ns();
    up.send(pod_payload(r));
    return Payload::value(event);
}

// ops."cancel_actor": cancels the named actor of our namespace, with us as the canceller.
// Returns the microseconds until its ack, or -1 without one.
Payload ops_cancel_actor(shmctx::Actor& self, Context&, const Payload& args) {
    shmctx::Portal target = self.connect(args.value<std::string>());
    const auto t0 = Clock::now();
    const bool acked = target.cancel_actor(5s);
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    return Payload::value(acked ? static_cast<std::int64_t>(us) : std::int64_t{-1});
}

int run_child(std::string_view role) {
    shmctx::RunActorOptions options;
    // Rings of 2 MiB: room for the fast consumer's 8192 ticks (a tick record is ~100 bytes).
    options.actor.data_ring_bytes = std::size_t{2} << 20;
    const std::string name(role);  // the nursery's name for us replaces it
    return shmctx::run_actor(
        name,
        [role](shmctx::Actor& actor) {
            if (role == "feed") {
                actor.expose("ticks", feed_ticks);
            } else if (role == "consumer") {
                actor.expose("session", [&actor](Context& ctx, const Payload& args) {
                    return consumer_session(actor, ctx, args);
                });
            } else if (role == "ops") {
                actor.expose("cancel_actor", [&actor](Context& ctx, const Payload& args) {
                    return ops_cancel_actor(actor, ctx, args);
                });
            } else {
                throw std::invalid_argument("unknown role " + std::string(role));
            }
        },
        options);
}

// ---------------------------------------------------------------------------------------------
// The root: narration and the live progress line

[[gnu::format(printf, 1, 2)]] std::string fmt(const char* format, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, format);
    std::vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    return text;
}

/// 1234567 -> "1,234,567".
std::string count(std::uint64_t n) {
    const std::string digits = std::to_string(n);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

/// Messages per second, short: "99.8k/s".
std::string rate(double per_second) {
    if (per_second >= 1e6) return fmt("%.2fM/s", per_second / 1e6);
    if (per_second >= 1e3) return fmt("%.1fk/s", per_second / 1e3);
    return fmt("%.0f/s", per_second);
}

/// The terminal: narrated lines, stamped with the time since the start, and one progress line
/// under them, redrawn in place on a terminal and printed every `plain_period` otherwise (a
/// log or a pipe). Thread-safety: call from one thread (root's main thread).
class Screen {
public:
    Screen(bool tty, bool color, Clock::duration plain_period)
        : tty_(tty), color_(color), plain_period_(plain_period), start_(Clock::now()) {}

    std::string bold(const std::string& s) const { return paint("1", s); }
    std::string dim(const std::string& s) const { return paint("2", s); }
    std::string green(const std::string& s) const { return paint("32", s); }
    std::string red(const std::string& s) const { return paint("31", s); }
    std::string yellow(const std::string& s) const { return paint("33", s); }
    std::string cyan(const std::string& s) const { return paint("36", s); }

    double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

    /// One narrated line.
    void say(const std::string& text) {
        clear_progress();
        std::printf("%s %s\n", dim(fmt("[%6.2fs]", elapsed())).c_str(), text.c_str());
        std::fflush(stdout);
    }
    /// A line without the time stamp (headings, the table).
    void raw(const std::string& text) {
        clear_progress();
        std::printf("%s\n", text.c_str());
        std::fflush(stdout);
    }
    /// The live line (plain ASCII, no colour: its length is its width).
    void progress(const std::string& text) {
        if (text.empty()) return;
        if (tty_) {
            winsize ws{};
            std::size_t width = 100;
            if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) width = ws.ws_col;
            const std::string shown = text.substr(0, width - 1);
            std::printf("\r\033[K%s", shown.c_str());
            std::fflush(stdout);
            progress_shown_ = true;
        } else if (Clock::now() - last_plain_ >= plain_period_) {
            last_plain_ = Clock::now();
            std::printf("%s %s\n", fmt("[%6.2fs]", elapsed()).c_str(), text.c_str());
            std::fflush(stdout);
        }
    }
    void clear_progress() {
        if (!progress_shown_) return;
        std::printf("\r\033[K");
        progress_shown_ = false;
    }

private:
    std::string paint(const char* code, const std::string& s) const {
        return color_ ? "\033[" + std::string(code) + "m" + s + "\033[0m" : s;
    }
    bool tty_;
    bool color_;
    Clock::duration plain_period_;
    Clock::time_point start_;
    Clock::time_point last_plain_{};
    bool progress_shown_ = false;
};

/// The sizes of a run.
struct Plan {
    std::uint64_t rate;       ///< feed ticks/s on each stream
    std::uint64_t slow_rate;  ///< what the slow consumer processes once slow
    double step1_s;           ///< feed duration of step 1 (fixed count)
    double step2_s;           ///< ... of step 2
    double step3_s;           ///< fast streams this long before root cancels
    double step4_s;           ///< both stream this long before ops cancels the feed
    double slow_after1_s;     ///< slow keeps up this long in step 1, then slows down
    double slow_after2_s;     ///< ... in step 2
    std::uint32_t fast_ring;  ///< fast's inbound ring, messages
    std::uint32_t slow_ring;  ///< slow's (holds the feed's largest burst: 10 ms of ticks)
    Clock::duration plain_period;
};

Plan full_plan() { return {100'000, 50'000, 3.0, 4.0, 2.0, 3.0, 1.0, 0.5, 8192, 1024, 1s}; }
Plan quick_plan() { return {20'000, 5'000, 0.6, 0.6, 0.3, 0.3, 0.2, 0.1, 8192, 1024, 250ms}; }

/// Root's view of one consumer's session. Guarded by Demo::mu_.
struct Live {
    std::string name;
    bool active = false;    // a session was started in this step
    bool finished = false;  // its open_context returned (or failed)
    bool have_report = false;
    Report last;
    std::deque<std::pair<std::uint64_t, std::uint64_t>> window;  // (t_ns, received), ~1 s
    std::optional<Context> ctx;                                  // root's side, to cancel
    shmctx::Outcome outcome;
    std::string event;  // the session's return value
    std::string error;  // an error out of open_context
    std::thread thread;

    void reset() {
        active = finished = have_report = false;
        last = Report{};
        window.clear();
        ctx.reset();
        outcome = shmctx::Outcome{};
        event.clear();
        error.clear();
    }
    void update(const Report& r) {
        last = r;
        have_report = true;
        window.emplace_back(r.t_ns, r.received);
        while (window.size() > 2 && window.front().first + 1'000'000'000 < r.t_ns) {
            window.pop_front();
        }
    }
    /// Over the last second of reports.
    double current_rate() const {
        if (window.size() < 2) return 0;
        const double dt = double(window.back().first - window.front().first) * 1e-9;
        return dt > 0 ? double(window.back().second - window.front().second) / dt : 0;
    }
    /// Over the whole stream.
    double average_rate() const {
        const double dt = double(last.t_ns - last.start_ns) * 1e-9;
        return have_report && last.start_ns != 0 && dt > 0 ? double(last.received) / dt : 0;
    }
};

/// One row of the summary table.
struct Row {
    std::string step;
    std::string what;
    std::optional<Report> fast;
    double fast_rate = 0;
    std::optional<Report> slow;
    double slow_rate = 0;
    std::string cancelled_by = "-";
};

class Demo {
public:
    Demo(std::string ns, Plan plan, Screen& screen)
        : ns_(std::move(ns)), plan_(plan), screen_(screen) {
        fast_.name = "fast";
        slow_.name = "slow";
    }

    /// Runs everything; true if every check passed.
    bool run();

private:
    void body(shmctx::ActorNursery& an, shmctx::Actor& root);
    void step1(shmctx::Portal& fast, shmctx::Portal& slow);
    void step2(shmctx::Portal& fast, shmctx::Portal& slow);
    void step3(shmctx::Portal& fast, const shmctx::Actor& root);
    void step4(shmctx::ActorNursery& an, shmctx::Portal& fast, shmctx::Portal& slow);

    bool check(bool ok, const std::string& text) {
        ++checks_;
        if (!ok) ++failed_;
        screen_.say((ok ? screen_.green("  ✓ ") : screen_.red("  ✗ ")) + text);
        return ok;
    }
    std::string name_of(const shmctx::Uid& uid) const { return screen_.cyan(uid.to_string()); }

    /// Heads a step; the consumers are idle until start_session.
    void new_step(const std::string& title);
    void start_session(Live& live, shmctx::Portal portal, SessionArgs args);
    void run_session(Live& live, shmctx::Portal portal, SessionArgs args);
    /// Draws the progress line until `until()` holds (false at `limit`). `until` runs under mu_.
    bool watch(const std::function<bool()>& until, shmctx::Deadline limit);
    /// Waits for the step's sessions; cancels those still running after `limit` (a failed
    /// check), then joins their threads.
    void end_sessions(shmctx::Deadline limit);
    std::string progress_text() const;  // caller holds mu_
    std::string live_text(const Live& l) const;
    shmctx::Deadline step_limit(double seconds) const {
        return shmctx::Deadline(std::chrono::duration_cast<shmctx::Duration>(
            std::chrono::duration<double>(seconds * 4 + 30)));
    }
    std::uint64_t ticks_for(double seconds) const {
        return static_cast<std::uint64_t>(seconds * double(plan_.rate));
    }
    Report snapshot(const Live& l) {
        const std::lock_guard lock(mu_);
        return l.last;
    }

    std::string ns_;
    Plan plan_;
    Screen& screen_;
    std::mutex mu_;
    std::condition_variable cv_;  // a session ended
    Live fast_;
    Live slow_;
    std::vector<Row> rows_;
    int checks_ = 0;
    int failed_ = 0;
    bool feed_cancelled_ = false;  // step 4 ran: the nursery is to report feed's exit
    std::string feed_uid_;
    pid_t feed_pid_ = 0;
};

void Demo::new_step(const std::string& title) {
    {
        const std::lock_guard lock(mu_);
        fast_.reset();
        slow_.reset();
    }
    screen_.raw("");
    screen_.raw(screen_.bold(title));
}

void Demo::start_session(Live& live, shmctx::Portal portal, SessionArgs args) {
    {
        const std::lock_guard lock(mu_);
        live.active = true;
    }
    live.thread = std::thread(
        [this, &live, portal, args]() mutable { run_session(live, std::move(portal), args); });
}

void Demo::run_session(Live& live, shmctx::Portal portal, SessionArgs args) {
    shmctx::Outcome outcome;
    std::string event;
    std::string error;
    try {
        auto r =
            portal.open_context("session", pod_payload(args), [&](Context& ctx, const Payload&) {
                {
                    const std::lock_guard lock(mu_);
                    live.ctx = ctx.handle();
                }
                MsgStream up = ctx.open_stream();
                for (const Message& m : up) {  // ends at the consumer's Stop
                    const auto report = pod_from<Report>(m.bytes());
                    const std::lock_guard lock(mu_);
                    live.update(report);
                }
            });
        outcome = r.outcome;
        if (outcome.has_value()) event = outcome.value().value<std::string>();
    } catch (const std::exception& e) {
        error = e.what();
    } catch (const shmctx::Cancelled&) {  // root's actor shut down under us (an error path)
        error = "cancelled: root is shutting down";
    }
    const std::lock_guard lock(mu_);
    live.outcome = std::move(outcome);
    live.event = std::move(event);
    live.error = std::move(error);
    live.finished = true;
    cv_.notify_all();
}

bool Demo::watch(const std::function<bool()>& until, shmctx::Deadline limit) {
    std::unique_lock lock(mu_);
    for (;;) {
        if (until()) return true;
        if (limit.expired()) return false;
        const std::string line = progress_text();
        lock.unlock();
        screen_.progress(line);
        lock.lock();
        // The refresh period of the progress line; a session's end wakes us at once.
        cv_.wait_for(lock, 100ms);
    }
}

void Demo::end_sessions(shmctx::Deadline limit) {
    const auto all_done = [&] {
        return (!fast_.active || fast_.finished) && (!slow_.active || slow_.finished);
    };
    if (!watch(all_done, limit)) {
        check(false, "the step's sessions ended in time");
        std::vector<Context> running;
        {
            const std::lock_guard lock(mu_);
            for (Live* l : {&fast_, &slow_}) {
                if (l->active && !l->finished && l->ctx) running.push_back(*l->ctx);
            }
        }
        for (Context& c : running) c.cancel();
    }
    for (Live* l : {&fast_, &slow_}) {
        if (l->thread.joinable()) l->thread.join();
        const std::lock_guard lock(mu_);
        l->ctx.reset();  // a context handle keeps our actor's state alive
    }
    screen_.clear_progress();
}

std::string Demo::live_text(const Live& l) const {
    if (!l.active) return "";
    std::string s = l.name + " ";
    if (!l.have_report) return s + "connecting";
    const Report& r = l.last;
    if (l.finished) return s + "ended (" + count(r.received) + " ticks)";
    // Ring fill in percent of its message capacity (the exact figures are in the narration).
    const double fill = r.ring != 0 ? 100.0 * double(r.in_ring) / double(r.ring) : 0;
    s += fmt("%8s %9s  ring %3.0f%%", rate(l.current_rate()).c_str(), count(r.received).c_str(),
             fill);
    if (r.spilled != 0 || r.spill_high_water != 0) {
        s += fmt("  spill %s (hw %s)", count(r.spill_depth()).c_str(),
                 count(r.spill_high_water).c_str());
    }
    return s;
}

std::string Demo::progress_text() const {
    if (!fast_.have_report && !slow_.have_report) return "";
    std::string s = "  ";
    for (const Live* l : {&fast_, &slow_}) {
        const std::string t = live_text(*l);
        if (t.empty()) continue;
        if (s.size() > 2) s += "  |  ";
        s += t;
    }
    return s;
}

void Demo::step1(shmctx::Portal& fast, shmctx::Portal& slow) {
    new_step("1. The default policy: the slow consumer falls behind");
    const std::uint64_t n = ticks_for(plan_.step1_s);
    screen_.say(
        fmt("fast and slow each open a context on feed: %s ticks at %s; rings of %s "
            "(fast) and %s (slow) messages",
            count(n).c_str(), rate(double(plan_.rate)).c_str(), count(plan_.fast_ring).c_str(),
            count(plan_.slow_ring).c_str()));
    screen_.say(
        fmt("slow keeps up for %.1f s, then handles only %s: nothing declared, so a "
            "full ring is the feed's error",
            plan_.slow_after1_s, rate(double(plan_.slow_rate)).c_str()));
    start_session(fast_, fast, {n, plan_.rate, 0, 0, plan_.fast_ring, 0});
    start_session(slow_, slow,
                  {n, plan_.rate, plan_.slow_rate,
                   static_cast<std::uint64_t>(plan_.slow_after1_s * 1e9), plan_.slow_ring, 0});
    const auto limit = step_limit(plan_.step1_s);
    if (watch([&] { return slow_.finished; }, limit)) {
        const Report r = snapshot(slow_);
        const bool overran = r.end == End::overrun;
        screen_.say(fmt("slow: %s after %s ticks (its ring %s/%s as the error arrived):",
                        overran ? screen_.yellow("StreamOverrun").c_str() : "no overrun",
                        count(r.received).c_str(), count(r.in_ring).c_str(),
                        count(r.ring).c_str()));
        screen_.say("      " + screen_.yellow(slow_.event.empty() ? slow_.error : slow_.event));
        check(overran,
              "the feed's send() raised StreamOverrun; slow received it boxed "
              "(RemoteActorError, boxed_is<StreamOverrun>)");
        check(r.overruns == 1 && r.spilled == 0,
              fmt("ring counters: %s overrun, %s spilled", count(r.overruns).c_str(),
                  count(r.spilled).c_str()));
        check(r.out_of_order == 0 && r.received > 0,
              fmt("slow's %s ticks before it were in order", count(r.received).c_str()));
    }
    if (watch([&] { return fast_.finished; }, limit)) {
        const Report r = snapshot(fast_);
        check(r.end == End::completed && r.received == n && r.out_of_order == 0 && r.overruns == 0,
              fmt("fast, on its own context, was unaffected: all %s ticks in order at %s, "
                  "%s overruns",
                  count(r.received).c_str(), rate(fast_.average_rate()).c_str(),
                  count(r.overruns).c_str()));
    }
    end_sessions(limit);
    rows_.push_back({"1", "StreamOverrun (default)", snapshot(fast_), fast_.average_rate(),
                     snapshot(slow_), slow_.average_rate(), "-"});
}

void Demo::step2(shmctx::Portal& fast, shmctx::Portal& slow) {
    new_step("2. slow reopens declaring allow_overruns: the feed spills");
    const std::uint64_t n = ticks_for(plan_.step2_s);
    screen_.say(
        fmt("both open again: %s ticks at %s; slow (OpenOptions::allow_overruns) slows "
            "down to %s after %.1f s",
            count(n).c_str(), rate(double(plan_.rate)).c_str(),
            rate(double(plan_.slow_rate)).c_str(), plan_.slow_after2_s));
    start_session(fast_, fast, {n, plan_.rate, 0, 0, plan_.fast_ring, 0});
    start_session(slow_, slow,
                  {n, plan_.rate, plan_.slow_rate,
                   static_cast<std::uint64_t>(plan_.slow_after2_s * 1e9), plan_.slow_ring, 1});
    const auto limit = step_limit(plan_.step2_s * 2);
    if (watch([&] { return slow_.last.spilled != 0 || slow_.finished; }, limit)) {
        const Report r = snapshot(slow_);
        screen_.say(
            fmt("the feed found slow's ring full (%s times so far): its send() queued %s ticks "
                "in its spill instead of failing; its drainer moves them on as slow reads",
                count(r.full_events).c_str(), count(r.spilled).c_str()));
    }
    if (watch([&] { return fast_.finished; }, limit)) {
        const Report r = snapshot(fast_);
        check(r.end == End::completed && r.received == n && r.out_of_order == 0,
              fmt("fast: all %s ticks in order at %s", count(r.received).c_str(),
                  rate(fast_.average_rate()).c_str()));
        const Report s = snapshot(slow_);
        screen_.say(
            fmt("slow has read %s so far; %s wait in the feed's spill (high water so far "
                "%s)",
                count(s.received).c_str(), count(s.spill_depth()).c_str(),
                count(s.spill_high_water).c_str()));
    }
    if (watch([&] { return slow_.finished; }, limit)) {
        const Report r = snapshot(slow_);
        check(r.end == End::completed && r.received == n && r.out_of_order == 0,
              fmt("slow: all %s ticks, every seq checked, in order: zero loss at %s",
                  count(r.received).c_str(), rate(slow_.average_rate()).c_str()));
        check(r.spilled > 0 && r.spill_drained == r.spilled && r.spill_discarded == 0 &&
                  r.overruns == 0,
              fmt("spilled %s, drained %s, discarded %s, spill high water %s, overruns %s",
                  count(r.spilled).c_str(), count(r.spill_drained).c_str(),
                  count(r.spill_discarded).c_str(), count(r.spill_high_water).c_str(),
                  count(r.overruns).c_str()));
    }
    end_sessions(limit);
    rows_.push_back({"2", "spill & drain, 0 lost", snapshot(fast_), fast_.average_rate(),
                     snapshot(slow_), slow_.average_rate(), "-"});
}

void Demo::step3(shmctx::Portal& fast, const shmctx::Actor& root) {
    new_step("3. root cancels one context");
    screen_.say("fast streams from feed until root cancels root's context with fast");
    start_session(fast_, fast, {0, plan_.rate, 0, 0, plan_.fast_ring, 0});
    const auto limit = step_limit(plan_.step3_s);
    const std::uint64_t target = ticks_for(plan_.step3_s);
    std::optional<Context> ctx;
    if (watch([&] { return fast_.finished || (fast_.ctx && fast_.last.received >= target); },
              limit)) {
        {
            const std::lock_guard lock(mu_);
            ctx = fast_.ctx;
        }
        if (ctx) {
            const Report before = snapshot(fast_);
            screen_.say(
                fmt("root: ctx.cancel() (fast has %s ticks)", count(before.received).c_str()));
            const auto t0 = Clock::now();
            ctx->cancel(shmctx::Deadline(5s));
            const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            screen_.say(
                fmt("root: ctx.cancel() returned after %.2f ms (fast's endpoint is "
                    "cancelled; it cancels its own context with feed on its way out)",
                    ms));
        }
    }
    end_sessions(limit);
    const Report r = snapshot(fast_);
    const std::optional<shmctx::Uid> by = ctx ? ctx->canceller() : std::nullopt;
    check(fast_.error.empty() && fast_.outcome.is_absorbed_cancel() && ctx && ctx->cancel_acked(),
          fmt("ContextCancelled returned in the outcome, not raised: is_absorbed_cancel() = %s, "
              "cancel_acked() = %s",
              fast_.outcome.is_absorbed_cancel() ? "true" : "false",
              ctx && ctx->cancel_acked() ? "true" : "false"));
    check(by && *by == root.uid(),
          "its canceller is root itself: " + (by ? name_of(*by) : std::string("none")));
    check(r.received > 0 && r.out_of_order == 0,
          fmt("fast's %s ticks up to the cancel were in order (its last report)",
              count(r.received).c_str()));
    if (!fast_.error.empty()) screen_.say(screen_.red("error: " + fast_.error));
    rows_.push_back({"3", "ctx.cancel() absorbed", r, fast_.average_rate(), std::nullopt, 0,
                     by ? by->to_string() : "?"});
}

void Demo::step4(shmctx::ActorNursery& an, shmctx::Portal& fast, shmctx::Portal& slow) {
    new_step("4. A third actor, ops, cancels the feed actor");
    screen_.say(fmt("fast and slow stream from feed (slow at %s, spilling)",
                    rate(double(plan_.slow_rate)).c_str()));
    start_session(fast_, fast, {0, plan_.rate, 0, 0, plan_.fast_ring, 0});
    start_session(slow_, slow, {0, plan_.rate, plan_.slow_rate, 0, plan_.slow_ring, 1});
    const auto limit = step_limit(plan_.step4_s);
    const std::uint64_t target = ticks_for(plan_.step4_s);
    std::string ops_uid;
    if (watch([&] { return fast_.finished || slow_.finished || fast_.last.received >= target; },
              limit)) {
        screen_.say(R"(root: run_in_actor("ops", ..., "cancel_actor", "feed"))");
        const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
        feed_cancelled_ = true;
        shmctx::ChildResult ops = an.run_in_actor("ops", exe, "cancel_actor",
                                                  Payload::value("feed").view(), {"--role", "ops"});
        ops_uid = ops.portal().peer().to_string();
        const auto us = ops.get(shmctx::Deadline(15s)).value<std::int64_t>();
        check(us >= 0, fmt("ops (pid %d): Portal::cancel_actor(feed) acknowledged in %.2f ms",
                           static_cast<int>(ops.pid()), double(us) / 1e3));
    }
    end_sessions(limit);
    for (Live* l : {&fast_, &slow_}) {
        const Report r = snapshot(*l);
        check(
            l->error.empty() && r.end == End::cancelled && l->event == ops_uid,
            fmt("%s: ContextCancelled, canceller() = %s, after %s ticks in order", l->name.c_str(),
                l->event.empty() ? (l->error.empty() ? "none" : l->error.c_str())
                                 : screen_.cyan(l->event).c_str(),
                count(r.received).c_str()));
        if (r.out_of_order != 0) check(false, l->name + ": ticks out of order");
    }
    const Report s = snapshot(slow_);
    screen_.say(fmt(
        "the feed's spill for slow as the context ended: spilled %s, drained %s, "
        "discarded %s%s%s",
        count(s.spilled).c_str(), count(s.spill_drained).c_str(), count(s.spill_discarded).c_str(),
        s.spill_discarded == 0 ? "" : " (the feed's stderr line)",
        s.spill_depth() == 0
            ? ""
            : fmt(", %s still queued at slow's last look (discarded with the context)",
                  count(s.spill_depth()).c_str())
                  .c_str()));
    // The cancelled feed's run_actor returns and its process exits; the nursery reaps it.
    const bool reaped = watch(
        [&] {
            const std::vector<pid_t> pids = an.child_pids();
            return std::find(pids.begin(), pids.end(), feed_pid_) == pids.end();
        },
        shmctx::Deadline(10s));
    check(reaped, fmt("feed (pid %d) exited: its run_actor returned on the cancel, and the "
                      "nursery reaped it",
                      static_cast<int>(feed_pid_)));
    rows_.push_back({"4", "feed cancelled by ops", snapshot(fast_), fast_.average_rate(), s,
                     slow_.average_rate(), ops_uid.empty() ? "?" : ops_uid});
}

void Demo::body(shmctx::ActorNursery& an, shmctx::Actor& root) {
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
    const auto t0 = Clock::now();
    shmctx::Portal feed = an.start_actor("feed", exe, {"--role", "feed"});
    feed_pid_ = an.child_pids().at(0);
    shmctx::Portal fast = an.start_actor("fast", exe, {"--role", "consumer"});
    shmctx::Portal slow = an.start_actor("slow", exe, {"--role", "consumer"});
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    feed_uid_ = feed.peer().to_string();
    std::string pids;
    for (pid_t p : an.child_pids()) pids += " " + std::to_string(p);
    screen_.say(fmt("nursery: %s, %s, %s started and linked in %.0f ms (pids%s)",
                    name_of(feed.peer()).c_str(), name_of(fast.peer()).c_str(),
                    name_of(slow.peer()).c_str(), ms, pids.c_str()));
    step1(fast, slow);
    step2(fast, slow);
    step3(fast, root);
    step4(an, fast, slow);
    screen_.raw("");
    screen_.say("root leaves the nursery: it cancels fast and slow and reaps every child");
}

void print_table(Screen& screen, const std::vector<Row>& rows) {
    screen.raw("");
    screen.raw(screen.bold(fmt("%-4s %-24s %22s %22s %9s %9s %9s %9s  %s", "step", "what happened",
                               "fast: ticks @ rate", "slow: ticks @ rate", "spilled", "drained",
                               "discarded", "spill hw", "cancelled by")));
    const auto side = [](const std::optional<Report>& r, double per_s) {
        return r ? count(r->received) + " @ " + rate(per_s) : std::string("-");
    };
    for (const Row& row : rows) {
        const std::optional<Report>& s = row.slow;
        screen.raw(fmt("%-4s %-24s %22s %22s %9s %9s %9s %9s  %s", row.step.c_str(),
                       row.what.c_str(), side(row.fast, row.fast_rate).c_str(),
                       side(s, row.slow_rate).c_str(), s ? count(s->spilled).c_str() : "-",
                       s ? count(s->spill_drained).c_str() : "-",
                       s ? count(s->spill_discarded).c_str() : "-",
                       s ? count(s->spill_high_water).c_str() : "-", row.cancelled_by.c_str()));
    }
}

/// Objects of namespace `ns` in /dev/shm.
std::vector<std::string> shm_left(const std::string& ns) {
    const std::string prefix = shmctx::shm::Names(ns).prefix();
    std::vector<std::string> left;
    for (const auto& entry : std::filesystem::directory_iterator(shmctx::shm::kShmDir)) {
        const std::string name = entry.path().filename().string();
        if (name.starts_with(prefix)) left.push_back(name);
    }
    return left;
}

bool Demo::run() {
    const auto start = Clock::now();
    screen_.raw(screen_.bold("shmctx demo") +
                fmt(": a market-data feed, a fast and a slow consumer, each its own process, "
                    "under a supervisor (namespace %s, %u CPUs)",
                    ns_.c_str(), std::thread::hardware_concurrency()));
    screen_.raw(fmt("  watch it from another terminal: shmctx ls --ns %s  (or shmctx stat --ns %s)",
                    ns_.c_str(), ns_.c_str()));
    {
        shmctx::ActorOptions options;
        options.ns = ns_;
        shmctx::Actor root("root", options);
        // If a step throws, its session threads are still running: they end once the nursery
        // has torn the consumers down, and are joined here, before root goes.
        class Joiner {
        public:
            explicit Joiner(Demo& demo) : demo_(demo) {}
            Joiner(const Joiner&) = delete;
            Joiner& operator=(const Joiner&) = delete;
            ~Joiner() {
                for (Live* l : {&demo_.fast_, &demo_.slow_}) {
                    if (l->thread.joinable()) l->thread.join();
                    l->ctx.reset();  // a context handle keeps root's actor state alive
                }
            }

        private:
            Demo& demo_;
        } joiner(*this);
        screen_.say(fmt("root %s (pid %d) opens a nursery", name_of(root.uid()).c_str(),
                        static_cast<int>(::getpid())));
        try {
            shmctx::open_nursery(root, [&](shmctx::ActorNursery& an) { body(an, root); });
            // feed's process ended when ops cancelled it, before the nursery asked: an orderly
            // exit (run_actor returned 0) is no failure; a crash would be an ActorFailed here.
            check(true, feed_cancelled_
                            ? "the nursery closed, every child reaped; feed's own orderly exit "
                              "(exit code 0) was no failure"
                            : "the nursery closed, every child reaped");
        } catch (const shmctx::Error& e) {
            check(false, std::string("the nursery raised ") + e.what());
        }
    }
    const std::vector<std::string> left = shm_left(ns_);
    check(left.empty(), fmt("root closed: %zu objects of namespace %s left in /dev/shm",
                            left.size(), ns_.c_str()));
    for (const std::string& name : left) screen_.say("      left: " + name);
    print_table(screen_, rows_);
    const double total = std::chrono::duration<double>(Clock::now() - start).count();
    screen_.raw("");
    if (failed_ != 0) {
        screen_.raw(screen_.red(
            fmt("shmctx_demo FAILED: %d of %d checks failed (%.1f s)", failed_, checks_, total)));
        return false;
    }
    screen_.raw(
        screen_.green(fmt("shmctx_demo OK: all %d checks passed in %.1f s", checks_, total)));
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 2 && std::string_view(argv[1]) == "--role") return run_child(argv[2]);
    std::string ns = "demo-" + std::to_string(::getpid());
    bool quick = false;
    bool color = ::isatty(STDOUT_FILENO) != 0 && std::getenv("NO_COLOR") == nullptr;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--ns" && i + 1 < argc) {
            ns = argv[++i];
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--no-color") {
            color = false;
        } else {
            std::fprintf(stderr, "usage: %s [--ns NAMESPACE] [--quick] [--no-color]\n", argv[0]);
            return 2;
        }
    }
    const Plan plan = quick ? quick_plan() : full_plan();
    Screen screen(::isatty(STDOUT_FILENO) != 0, color, plan.plain_period);
    try {
        Demo demo(ns, plan, screen);
        return demo.run() ? 0 : 1;
    } catch (const std::exception& e) {
        screen.raw(screen.red(std::string("shmctx_demo FAILED: ") + e.what()));
        return 1;
    }
}
