// The soak's shared parts (issue 7 item 4; docs/protocol.d/soak.md): the message format and its
// checker, the plan of one context, the counters, the hang watchdog, and the client loop and the
// "stream" endpoints that both soak_worker and shmctx_soak (the driver) run.
//
// One soak context streams `count` messages in one direction under one overrun policy:
//
//   down  parent -> child: the parent's body sends, the child's endpoint receives and returns
//         how many it received;
//   up    child -> parent: the endpoint sends and returns how many it sent, the body receives
//         and returns how many it received.
//
// Every message carries (context tag, sequence number, length, checksum) and a body derived from
// them; the receiver checks each one is exactly the previous + 1 and intact. On a context that
// completed normally the parent compares the two counts: a lost message is a failure there,
// a reordered or corrupt one a failure at the receiver (DESIGN.md §4.2, §4.3).
//
// Thread-safety: Counters, OpTracker and Env are thread-safe; a Plan is a value; client_loop runs
// on its own thread.
#pragma once

#include <dirent.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "error_as.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"

namespace shmctx::soak {

using namespace std::chrono_literals;

/// CLOCK_MONOTONIC in ns: comparable across the soak's processes (the driver matches a worker's
/// PeerDied time against its own kill time).
inline std::int64_t mono_ns() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Short pause between polls of a condition that has no wake-up (a full ring under the paced
/// raise policy, a paused client): pacing, never synchronisation.
inline void pause_for(std::chrono::microseconds d) {
    struct timespec ts {
        0, static_cast<long>(d.count()) * 1000
    };
    ::nanosleep(&ts, nullptr);
}

/// Entries of a /proc directory (minus the fd opendir uses, for /proc/self/fd).
inline std::size_t count_dir(const char* path, bool minus_own_fd) {
    DIR* d = ::opendir(path);
    if (d == nullptr) return 0;
    std::size_t n = 0;
    while (const dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
    }
    ::closedir(d);
    return minus_own_fd && n > 0 ? n - 1 : n;
}
inline std::size_t count_fds() { return count_dir("/proc/self/fd", true); }
inline std::size_t count_threads() { return count_dir("/proc/self/task", false); }

/// Creates and joins one thread before the start-up counts are taken: ThreadSanitizer starts its
/// own background thread at the process's first pthread_create, which would otherwise show up as
/// a leaked thread at the end.
inline void settle_runtime_threads() {
    std::thread([] {}).join();
}

// --- random numbers ---

inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/// Single thread.
class Rng {
public:
    explicit Rng(std::uint64_t seed) : s_(seed) {}
    std::uint64_t next() {
        s_ += 0x9E3779B97F4A7C15ULL;
        return splitmix64(s_);
    }
    /// Uniform in [0, n) (n > 0; the modulo bias is irrelevant here).
    std::uint64_t below(std::uint64_t n) { return next() % n; }
    /// Uniform in [lo, hi].
    std::uint64_t range(std::uint64_t lo, std::uint64_t hi) { return lo + below(hi - lo + 1); }
    bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

private:
    std::uint64_t s_;
};

inline std::uint64_t fnv1a(std::span<const std::byte> bytes,
                           std::uint64_t h = 0xCBF29CE484222325ULL) {
    for (const std::byte b : bytes) {
        h ^= static_cast<std::uint64_t>(b);
        h *= 0x100000001B3ULL;
    }
    return h;
}
inline std::uint64_t fnv1a(std::string_view s) { return fnv1a(std::as_bytes(std::span(s))); }

// --- messages ---

/// The first 32 bytes of every soak message (native byte order: both ends run on this host).
struct MsgHeader {
    std::uint64_t tag;  ///< fnv1a of the context's Cid text: a message of another context is caught
    std::uint64_t seq;  ///< 0, 1, 2, ... per context and direction
    std::uint32_t len;  ///< body bytes after the header (body_len(tag, seq))
    std::uint32_t reserved;
    std::uint64_t sum;  ///< checksum of tag, seq, len and the body
};
static_assert(sizeof(MsgHeader) == 32);

inline std::uint64_t context_tag(const Context& ctx) { return fnv1a(ctx.cid().to_string()); }

/// The body length of message `seq`: mostly small, sometimes up to 1 KiB, rarely 8 KiB; derived
/// from (tag, seq) so the receiver checks it too.
inline std::uint32_t body_len(std::uint64_t tag, std::uint64_t seq) {
    const std::uint64_t h = splitmix64(tag ^ (seq * 0xD6E8FEB86659FD93ULL));
    const std::uint64_t pick = h % 100;
    if (pick < 80) return static_cast<std::uint32_t>((h >> 8) % 65);
    if (pick < 98) return static_cast<std::uint32_t>((h >> 8) % 1025);
    return static_cast<std::uint32_t>((h >> 8) % 8193);
}

inline std::size_t message_bytes(std::uint64_t tag, std::uint64_t seq) {
    return sizeof(MsgHeader) + body_len(tag, seq);
}

/// The body of message `seq`, 8 bytes at a time from a generator seeded by (tag, seq).
inline void fill_body(std::span<std::byte> body, std::uint64_t tag, std::uint64_t seq) {
    Rng g(tag ^ splitmix64(seq));
    std::size_t i = 0;
    while (i < body.size()) {
        const std::uint64_t w = g.next();
        const std::size_t n = std::min<std::size_t>(8, body.size() - i);
        std::memcpy(body.data() + i, &w, n);
        i += n;
    }
}

inline std::uint64_t message_sum(const MsgHeader& h, std::span<const std::byte> body) {
    std::uint64_t s = fnv1a(std::as_bytes(std::span(&h.tag, 1)));
    s = fnv1a(std::as_bytes(std::span(&h.seq, 1)), s);
    s = fnv1a(std::as_bytes(std::span(&h.len, 1)), s);
    return fnv1a(body, s);
}

/// Writes message `seq` into `buf` (at least message_bytes(tag, seq)); returns its size.
inline std::size_t encode_message(std::span<std::byte> buf, std::uint64_t tag, std::uint64_t seq) {
    MsgHeader h{tag, seq, body_len(tag, seq), 0, 0};
    const std::span<std::byte> body = buf.subspan(sizeof h, h.len);
    fill_body(body, tag, seq);
    h.sum = message_sum(h, body);
    std::memcpy(buf.data(), &h, sizeof h);
    return sizeof h + h.len;
}

/// Checks the messages of one stream arrive as 0, 1, 2, ... and intact. Single thread.
class SeqChecker {
public:
    explicit SeqChecker(std::uint64_t tag) : tag_(tag) {}
    /// Empty if `bytes` is message next(); else what is wrong.
    std::string check(std::span<const std::byte> bytes) {
        MsgHeader h{};
        if (bytes.size() < sizeof h) {
            return "message " + std::to_string(next_) + " has " + std::to_string(bytes.size()) +
                   " bytes, less than a header";
        }
        std::memcpy(&h, bytes.data(), sizeof h);
        if (h.tag != tag_) return "message " + std::to_string(next_) + " carries another tag";
        if (h.seq != next_) {
            return "expected message " + std::to_string(next_) + ", got " + std::to_string(h.seq) +
                   (h.seq > next_ ? " (lost)" : " (reordered or duplicated)");
        }
        if (h.len != body_len(tag_, h.seq) || bytes.size() != sizeof h + h.len) {
            return "message " + std::to_string(h.seq) + " has the wrong length";
        }
        const std::span<const std::byte> body = bytes.subspan(sizeof h);
        if (message_sum(h, body) != h.sum) {
            return "message " + std::to_string(h.seq) + " fails its checksum";
        }
        expect_.resize(body.size());
        fill_body(expect_, tag_, h.seq);
        if (!std::equal(body.begin(), body.end(), expect_.begin())) {
            return "message " + std::to_string(h.seq) + " has a corrupt body";
        }
        ++next_;
        return {};
    }
    std::uint64_t received() const noexcept { return next_; }

private:
    std::uint64_t tag_;
    std::uint64_t next_ = 0;
    std::vector<std::byte> expect_;
};

// --- errors of the soak itself ---

/// Thrown deliberately by a body or an endpoint (the soak's "throw from the body"); registered
/// under a wire name so the parent recognises it boxed.
class DeliberateError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
/// A failure that was already recorded where it was detected (a lost or reordered message, a
/// wait past the hang limit): whoever catches it does not count it again.
class ReportedFailure : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
inline void register_soak_errors() {
    register_error_type<DeliberateError>("soak::DeliberateError");
    register_error_type<ReportedFailure>("soak::ReportedFailure");
}

// --- plans ---

enum class Dir : std::uint8_t { down, up };
enum class Policy : std::uint8_t { raise, spill, block };
inline constexpr std::array<const char*, 3> kPolicyNames{"raise", "spill", "block"};

/// How the receiver reads: receive_for (with the hang limit), drain (batches) or range-for.
enum class RxMode : std::uint8_t { receive_for, drain, range_for };

/// One soak context, chosen by the parent; the part the child needs travels as its args.
struct Plan {
    Dir dir = Dir::down;
    Policy policy = Policy::raise;
    /// raise only: the sender uses try_send and retries on `full` (paced), instead of send()
    /// (which raises StreamOverrun at the first full ring).
    bool paced = false;
    /// The sender builds in place (send_with) instead of copying a buffer (send).
    bool in_place = true;
    RxMode rx_mode = RxMode::receive_for;
    /// The receiver's open_stream msg_buffer_size (0: the default 64).
    std::uint32_t rx_buf = 0;
    std::uint64_t count = 1;
    std::int64_t cancel_at = -1;       ///< the parent calls ctx.cancel() after this many messages
    std::int64_t body_throw_at = -1;   ///< the parent's body throws after this many
    std::int64_t child_throw_at = -1;  ///< the endpoint throws after this many

    std::string args() const {
        std::ostringstream o;
        o << (dir == Dir::down ? "down" : "up") << ' ' << count << ' '
          << kPolicyNames[static_cast<std::size_t>(policy)] << ' ' << paced << ' ' << in_place
          << ' ' << static_cast<int>(rx_mode) << ' ' << rx_buf << ' ' << child_throw_at;
        return o.str();
    }
    /// std::invalid_argument on malformed args (a soak bug, reported as a failure).
    static Plan parse(const std::string& text) {
        std::istringstream in(text);
        Plan p;
        std::string dir;
        std::string policy;
        int rx = 0;
        in >> dir >> p.count >> policy >> p.paced >> p.in_place >> rx >> p.rx_buf >>
            p.child_throw_at;
        if (!in || (dir != "down" && dir != "up") || rx < 0 || rx > 2) {
            throw std::invalid_argument("malformed soak args '" + text + "'");
        }
        p.dir = dir == "down" ? Dir::down : Dir::up;
        const auto it = std::find(kPolicyNames.begin(), kPolicyNames.end(), policy);
        if (it == kPolicyNames.end()) throw std::invalid_argument("unknown policy " + policy);
        p.policy = static_cast<Policy>(it - kPolicyNames.begin());
        p.rx_mode = static_cast<RxMode>(rx);
        return p;
    }
    std::string describe() const {
        return args() + " cancel_at=" + std::to_string(cancel_at) +
               " body_throw_at=" + std::to_string(body_throw_at);
    }
    /// The endpoint to open: a receiving child that allows overruns is declared at expose
    /// time, so the sender spills from its very first message (DESIGN.md §4.9).
    std::string_view endpoint() const {
        return dir == Dir::down && policy == Policy::spill ? "stream_spill" : "stream";
    }
};

// --- counters ---

// clang-format off
#define SOAK_COUNTERS(X)                                                                  \
    X(ctx_opened) X(ctx_ok) X(ctx_cancel_absorbed) X(ctx_cancel_late) X(ctx_body_throw)   \
    X(ctx_child_throw) X(ctx_overrun_local) X(ctx_overrun_remote) X(ctx_peer_died)        \
    X(ctx_transport_closed) X(ctx_not_found) X(ctx_not_exposed_yet) X(ctx_ctxc_other)     \
    X(ctx_ctxc_by_our_cancel_actor) X(ctx_own_actor_cancelled) X(ctx_reported_remote)     \
    X(ctx_unexpected) X(ctx_raise) X(ctx_spill) X(ctx_block) X(ctx_down) X(ctx_up)        \
    X(actor_cancels_sent) X(actor_cancels_acked) X(recycles) X(msgs_sent_raise)           \
    X(msgs_sent_spill) X(msgs_sent_block) X(msgs_verified) X(msgs_spilled)                \
    X(paced_retries) X(ep_started) X(ep_ok) X(ep_cancelled) X(ep_transport) X(ep_eoc)     \
    X(ep_deliberate) X(ep_overrun) X(ep_unexpected) X(ep_ok_after_cancel)
// clang-format on

enum class Ctr : std::size_t {
#define SOAK_ENUM(n) n,
    SOAK_COUNTERS(SOAK_ENUM)
#undef SOAK_ENUM
        kCount
};
inline constexpr std::size_t kCounters = static_cast<std::size_t>(Ctr::kCount);
inline constexpr std::array<const char*, kCounters> kCounterNames{
#define SOAK_NAME(n) #n,
    SOAK_COUNTERS(SOAK_NAME)
#undef SOAK_NAME
};

/// Event counts of one process. Thread-safe.
class Counters {
public:
    // relaxed: statistics; nothing is ordered by a count (the final read follows the joins).
    void add(Ctr c, std::uint64_t n = 1) noexcept {
        v_[static_cast<std::size_t>(c)].fetch_add(n, std::memory_order::relaxed);
    }
    std::uint64_t get(Ctr c) const noexcept {
        return v_[static_cast<std::size_t>(c)].load(std::memory_order::relaxed);  // statistics
    }
    /// "k=v k=v ..." of the nonzero counters.
    std::string line() const {
        std::string out;
        for (std::size_t i = 0; i < kCounters; ++i) {
            const std::uint64_t n = v_[i].load(std::memory_order::relaxed);  // statistics
            if (n == 0) continue;
            if (!out.empty()) out += ' ';
            out += std::string(kCounterNames[i]) + "=" + std::to_string(n);
        }
        return out;
    }
    std::map<std::string, std::uint64_t> snapshot() const {
        std::map<std::string, std::uint64_t> out;
        for (std::size_t i = 0; i < kCounters; ++i) {
            out[kCounterNames[i]] = v_[i].load(std::memory_order::relaxed);  // statistics
        }
        return out;
    }

private:
    std::array<std::atomic<std::uint64_t>, kCounters> v_{};
};

// --- hang watchdog ---

/// The waits in flight (client contexts, endpoints) with their start times; the owner's
/// periodic check() reports each one older than the hang limit once. Thread-safe.
class OpTracker {
public:
    /// RAII registration of one operation.
    class Scope {
    public:
        Scope(OpTracker& t, std::string desc) : t_(t), id_(t.begin(std::move(desc))) {}
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;
        ~Scope() { t_.end(id_); }
        void describe(std::string desc) { t_.set(id_, std::move(desc)); }
        std::int64_t start_ns() const { return t_.start_of(id_); }

    private:
        OpTracker& t_;
        std::uint64_t id_;
    };

    /// The operations older than `limit_ns` not reported before (each is returned once).
    std::vector<std::string> overdue(std::int64_t limit_ns) {
        const std::int64_t now = mono_ns();
        std::vector<std::string> out;
        const std::lock_guard lock(m_);
        for (auto& [id, op] : ops_) {
            if (!op.reported && now - op.start > limit_ns) {
                op.reported = true;
                out.push_back(op.desc + " running for " +
                              std::to_string((now - op.start) / 1'000'000) + " ms");
            }
        }
        return out;
    }
    std::size_t in_flight() const {
        const std::lock_guard lock(m_);
        return ops_.size();
    }

private:
    struct Op {
        std::int64_t start;
        std::string desc;
        bool reported;
    };
    std::uint64_t begin(std::string desc) {
        const std::lock_guard lock(m_);
        const std::uint64_t id = next_++;
        ops_.emplace(id, Op{mono_ns(), std::move(desc), false});
        return id;
    }
    void end(std::uint64_t id) {
        const std::lock_guard lock(m_);
        ops_.erase(id);
    }
    void set(std::uint64_t id, std::string desc) {
        const std::lock_guard lock(m_);
        if (auto it = ops_.find(id); it != ops_.end()) it->second.desc = std::move(desc);
    }
    std::int64_t start_of(std::uint64_t id) const {
        const std::lock_guard lock(m_);
        const auto it = ops_.find(id);
        return it == ops_.end() ? 0 : it->second.start;
    }
    mutable std::mutex m_;
    std::map<std::uint64_t, Op> ops_;  // guarded by m_
    std::uint64_t next_ = 0;           // guarded by m_
};

// --- the environment of one soak process ---

/// What a soak process records and where its events go. Thread-safe.
struct Env {
    std::string self_name;
    Counters counters;
    OpTracker tracker;
    /// A soak failure (an unexpected error, a lost or reordered message, a hang).
    std::function<void(const std::string&)> fail;
    /// A PeerDied surfaced for a context with `peer` that was opened at `op_start_ns`.
    std::function<void(const std::string& peer, std::int64_t op_start_ns, std::int64_t seen_ns)>
        peer_died;
    /// Longest wait of any one operation before it counts as hung.
    std::chrono::milliseconds hang_limit{30'000};
    /// Probabilities of the disruptions, per client iteration.
    double p_cancel = 0.10;
    double p_body_throw = 0.05;
    double p_child_throw = 0.05;
    double p_cancel_actor = 0.003;
    /// Scales all four disruption probabilities (0: every context runs to its end).
    void scale_disruptions(double f) {
        p_cancel *= f;
        p_body_throw *= f;
        p_child_throw *= f;
        p_cancel_actor *= f;
    }
    /// The policies make_plan picks from (bit i: Policy i); all three by default.
    unsigned policy_mask = 0b111;

    Deadline hang_deadline() const { return Deadline(hang_limit); }
};

inline std::string what_of(const std::exception_ptr& e) { return test::describe_error(e); }

// --- sending and receiving ---

/// Sends message `seq` of stream `s` under `plan`'s policy. Raises what send() raises;
/// ReportedFailure when a paced send finds the ring full past the hang limit.
inline void send_message(Env& env, MsgStream& s, const Plan& plan, std::uint64_t tag,
                         std::uint64_t seq, std::vector<std::byte>& scratch) {
    const std::size_t size = message_bytes(tag, seq);
    const auto fill = [&](std::span<std::byte> buf) { return encode_message(buf, tag, seq); };
    if (plan.policy == Policy::raise && plan.paced) {
        const Deadline limit = env.hang_deadline();
        for (;;) {
            const SendStatus st = s.try_send_with(size, fill);
            if (st == SendStatus::ok || st == SendStatus::spilled) break;
            if (st != SendStatus::full) {
                s.send_with(size, fill);  // raises the reason (peer's error, end, cancel)
                break;
            }
            env.counters.add(Ctr::paced_retries);
            if (limit.expired()) {
                const std::string what = "paced send of message " + std::to_string(seq) +
                                         " found the ring full for the whole hang limit";
                env.fail(what);
                throw ReportedFailure(what);
            }
            pause_for(20us);
        }
    } else if (plan.in_place) {
        s.send_with(size, fill);
    } else {
        scratch.resize(size);
        (void)encode_message(scratch, tag, seq);
        s.send(PayloadView(std::span<const std::byte>(scratch)));
    }
    env.counters.add(plan.policy == Policy::raise   ? Ctr::msgs_sent_raise
                     : plan.policy == Policy::spill ? Ctr::msgs_sent_spill
                                                    : Ctr::msgs_sent_block);
}

inline StreamOptions sender_options(const Plan& plan) {
    StreamOptions o;
    o.on_full = plan.policy == Policy::block ? OnFull::block : OnFull::raise;
    // A receiver that keeps reading never makes a blocked send wait this long: past it, the
    // send raises StreamOverrun(block_timeout), which the soak counts as a failure (a hang).
    o.block_timeout = std::chrono::seconds(30);
    return o;
}

/// Receives until the stream ends, checking every message; `at(n)` runs after the n-th
/// (1-based) and may throw or return false to stop early. Returns the verified count.
/// ReportedFailure on a bad message or no message within the hang limit (receive_for mode).
template <class At>
std::uint64_t receive_all(Env& env, MsgStream& s, const Plan& plan, std::uint64_t tag,
                          const std::string& where, At&& at) {
    SeqChecker checker(tag);
    bool go_on = true;
    const auto take = [&](const Message& m) {
        if (!go_on) return;  // drain() batch after an early stop: left unread
        if (std::string err = checker.check(m.bytes()); !err.empty()) {
            const std::string what = "SOAK-VIOLATION " + where + ": " + err;
            env.fail(what);
            throw ReportedFailure(what);
        }
        env.counters.add(Ctr::msgs_verified);
        go_on = at(checker.received());
    };
    switch (plan.rx_mode) {
        case RxMode::receive_for:
            while (go_on) {
                std::optional<Message> m;
                try {
                    m = s.receive_for(env.hang_limit);
                } catch (const EndOfChannel&) {
                    break;
                }
                if (!m) {
                    const std::string what = "hang: " + where + " received nothing for " +
                                             std::to_string(env.hang_limit.count()) +
                                             " ms after message " +
                                             std::to_string(checker.received());
                    env.fail(what);
                    throw ReportedFailure(what);
                }
                take(*m);
            }
            break;
        case RxMode::drain:
            try {
                // std::ref: drain(F&&) does not accept an lvalue callable (F deduces to a
                // reference and the header forms F*); reported with the soak.
                while (go_on) (void)s.drain(std::ref(take), 64);
            } catch (const EndOfChannel&) {
            }
            break;
        case RxMode::range_for:
            for (const Message& m : s) {
                take(m);
                if (!go_on) break;
            }
            break;
    }
    return checker.received();
}

// --- the child side ---

/// The soak endpoints: "stream" and "stream_spill" (its inbound ring allows overruns).
inline void expose_endpoints(Actor& actor, Env& env) {
    const auto endpoint = [&env](Context& ctx, const Payload& args) -> Payload {
        Plan plan;
        try {
            plan = Plan::parse(args.value<std::string>());
        } catch (const std::exception& e) {
            env.fail(std::string("endpoint args: ") + e.what());
            throw;
        }
        const std::uint64_t tag = context_tag(ctx);
        const std::string where =
            env.self_name + " endpoint " + ctx.cid().to_string() + " (" + plan.args() + ")";
        OpTracker::Scope op(env.tracker, where);
        env.counters.add(Ctr::ep_started);
        const auto maybe_throw = [&](std::uint64_t n) {
            if (plan.child_throw_at >= 0 && n == static_cast<std::uint64_t>(plan.child_throw_at)) {
                throw DeliberateError("deliberate child throw after " + std::to_string(n));
            }
        };
        try {
            ctx.started();
            std::uint64_t n = 0;
            if (plan.dir == Dir::down) {
                StreamOptions o;
                o.msg_buffer_size = plan.rx_buf;
                MsgStream s = ctx.open_stream(o);
                maybe_throw(0);
                n = receive_all(env, s, plan, tag, where, [&](std::uint64_t k) {
                    maybe_throw(k);
                    return true;
                });
            } else {
                MsgStream s = ctx.open_stream(sender_options(plan));
                std::vector<std::byte> scratch;
                for (; n < plan.count; ++n) {
                    maybe_throw(n);
                    send_message(env, s, plan, tag, n, scratch);
                }
                if (plan.policy == Policy::spill) {
                    env.counters.add(Ctr::msgs_spilled, s.outbound_counters().spilled);
                }
            }
            env.counters.add(Ctr::ep_ok);
            // "<count> <1 if our scope was cancelled by then>": a task cancelled after its last
            // send still returns normally; the parent says so if the counts then disagree.
            const bool cancelled = ctx.cancelled();
            if (cancelled) env.counters.add(Ctr::ep_ok_after_cancel);
            return Payload::value(std::to_string(n) + (cancelled ? " 1" : " 0"));
        } catch (const Cancelled&) {
            env.counters.add(Ctr::ep_cancelled);  // the parent cancelled, errored or died
            throw;
        } catch (const TransportClosed&) {
            env.counters.add(Ctr::ep_transport);
            throw;
        } catch (const EndOfChannel&) {
            env.counters.add(Ctr::ep_eoc);  // the parent closed its side early (its cancel)
            throw;
        } catch (const DeliberateError&) {
            env.counters.add(Ctr::ep_deliberate);
            throw;
        } catch (const ReportedFailure&) {
            throw;
        } catch (const StreamOverrun& e) {
            if (plan.dir == Dir::up && plan.policy == Policy::raise && !plan.paced) {
                env.counters.add(Ctr::ep_overrun);
            } else {
                env.counters.add(Ctr::ep_unexpected);
                env.fail(where + ": unexpected StreamOverrun: " + e.what());
            }
            throw;
        } catch (const RemoteActorError& e) {
            // The parent's error (its deliberate throw) or cancel, raised in our send/receive.
            if (e.boxed_is<ContextCancelled>() || dynamic_cast<const ContextCancelled*>(&e)) {
                env.counters.add(Ctr::ep_cancelled);
            } else {
                env.counters.add(Ctr::ep_unexpected);
                env.fail(where + ": unexpected RemoteActorError: " + e.what());
            }
            throw;
        } catch (const std::exception& e) {
            env.counters.add(Ctr::ep_unexpected);
            env.fail(where + ": unexpected " + error_type_name(e) + ": " + e.what());
            throw;
        }
    };
    actor.expose("stream", endpoint);
    ExposeOptions spill;
    spill.allow_overruns = true;
    actor.expose("stream_spill", endpoint, spill);
}

// --- the parent side ---

inline Plan make_plan(Rng& rng, const Env& env) {
    Plan p;
    p.dir = rng.chance(0.5) ? Dir::down : Dir::up;
    do {
        p.policy = static_cast<Policy>(rng.below(3));
    } while ((env.policy_mask & (1U << static_cast<unsigned>(p.policy))) == 0);
    p.paced = p.policy == Policy::raise && rng.chance(0.5);
    p.in_place = rng.chance(0.7);
    p.rx_mode = static_cast<RxMode>(rng.below(3));
    constexpr std::array<std::uint32_t, 4> kBufs{0, 4, 16, 256};
    p.rx_buf = kBufs[rng.below(kBufs.size())];
    const std::uint64_t size_class = rng.below(100);
    p.count = size_class < 60   ? rng.range(1, 256)
              : size_class < 90 ? rng.range(257, 4096)
                                : rng.range(4097, 32768);
    const double r = static_cast<double>(rng.below(1'000'000)) / 1e6;
    if (r < env.p_cancel) {
        p.cancel_at = static_cast<std::int64_t>(rng.below(p.count));
    } else if (r < env.p_cancel + env.p_body_throw) {
        p.body_throw_at = static_cast<std::int64_t>(rng.below(p.count));
    } else if (r < env.p_cancel + env.p_body_throw + env.p_child_throw) {
        p.child_throw_at = static_cast<std::int64_t>(rng.below(p.count));
    }
    return p;
}

/// Outcome of one parent-side context, for classification.
struct Progress {
    bool cancelled = false;   ///< our body called ctx.cancel()
    bool body_threw = false;  ///< our body threw DeliberateError
    std::uint64_t done = 0;   ///< messages our body sent or verified
};

/// Runs one soak context with `portal` under `plan` and checks a normal completion.
/// `actor_cancelled()`: our own actor's cancel_called(), for the failure text.
template <class ActorCancelled>
void run_context(Env& env, Portal& portal, const Plan& plan, Progress& progress,
                 ActorCancelled&& actor_cancelled) {
    OpenOptions oo;
    if (plan.dir == Dir::up && plan.policy == Policy::spill) oo.allow_overruns = true;
    const std::string args = plan.args();
    env.counters.add(Ctr::ctx_opened);
    env.counters.add(plan.dir == Dir::down ? Ctr::ctx_down : Ctr::ctx_up);
    env.counters.add(plan.policy == Policy::raise   ? Ctr::ctx_raise
                     : plan.policy == Policy::spill ? Ctr::ctx_spill
                                                    : Ctr::ctx_block);
    const auto disrupt = [&](Context& ctx, std::uint64_t n) {
        if (plan.cancel_at >= 0 && n == static_cast<std::uint64_t>(plan.cancel_at)) {
            progress.cancelled = true;
            ctx.cancel();
            return true;
        }
        if (plan.body_throw_at >= 0 && n == static_cast<std::uint64_t>(plan.body_throw_at)) {
            progress.body_threw = true;
            throw DeliberateError("deliberate body throw after " + std::to_string(n));
        }
        return false;
    };
    auto result = portal.open_context(
        plan.endpoint(), Payload::value(args),
        [&](Context& ctx, const Payload&) -> std::uint64_t {
            const std::uint64_t tag = context_tag(ctx);
            if (plan.dir == Dir::down) {
                MsgStream s = ctx.open_stream(sender_options(plan));
                std::vector<std::byte> scratch;
                for (; progress.done < plan.count; ++progress.done) {
                    if (disrupt(ctx, progress.done)) return progress.done;
                    send_message(env, s, plan, tag, progress.done, scratch);
                }
                if (plan.policy == Policy::spill) {
                    env.counters.add(Ctr::msgs_spilled, s.outbound_counters().spilled);
                }
                s.close();
                return progress.done;
            }
            StreamOptions o;
            o.msg_buffer_size = plan.rx_buf;
            MsgStream s = ctx.open_stream(o);
            if (disrupt(ctx, 0)) return 0;
            const std::string where =
                env.self_name + " body " + ctx.cid().to_string() + " (" + plan.args() + ")";
            progress.done = receive_all(env, s, plan, tag, where,
                                        [&](std::uint64_t n) { return !disrupt(ctx, n); });
            return progress.done;
        },
        oo);
    if (result.outcome.is_absorbed_cancel()) {
        env.counters.add(Ctr::ctx_cancel_absorbed);
        return;
    }
    if (progress.cancelled) {
        env.counters.add(Ctr::ctx_cancel_late);  // the child returned before our cancel landed
        return;
    }
    std::istringstream reply(result.outcome.value().template value<std::string>());
    std::uint64_t child = 0;
    int child_cancelled = 0;
    reply >> child >> child_cancelled;
    const std::uint64_t ours = result.value.value_or(0);
    if (!reply || child != ours || ours != plan.count) {
        // Whose actor was cancelled meanwhile (a third party's cancel_actor()) is worth saying:
        // the task then ended normally although its scope was cancelled.
        std::string note;
        if (actor_cancelled()) note += " [our actor was cancelled meanwhile]";
        if (child_cancelled != 0) note += " [the child's scope was cancelled when it returned]";
        env.fail("SOAK-VIOLATION " + env.self_name + " -> " + portal.peer().to_string() + " (" +
                 plan.describe() + "): completed normally with " + std::to_string(ours) +
                 (plan.dir == Dir::down ? " sent, " : " received, ") + std::to_string(child) +
                 (plan.dir == Dir::down ? " received" : " sent") + " of " +
                 std::to_string(plan.count) + note);
        return;
    }
    env.counters.add(Ctr::ctx_ok);
}

/// Sorts the error that ended one client iteration into an expected kind, or records a failure.
/// `we_cancelled_peer`: cancel_actor() was called on the link to the peer (by any of our threads):
/// its tasks end with a ContextCancelled naming us, raised in our contexts (we did not call
/// their cancel(); docs/protocol.d/cancel_tests.md #15-22).
inline void classify(Env& env, const Actor& actor, const std::string& peer, const Plan* plan,
                     const Progress& progress, bool we_cancelled_peer, std::int64_t op_start,
                     std::exception_ptr error) {
    const std::string where =
        env.self_name + " -> " + peer + (plan != nullptr ? " (" + plan->describe() + ")" : "");
    const auto unexpected = [&](const std::string& what) {
        env.counters.add(Ctr::ctx_unexpected);
        env.fail(where + ": unexpected " + what);
    };
    try {
        std::rethrow_exception(error);
    } catch (const Cancelled&) {
        if (actor.cancel_called()) {
            env.counters.add(Ctr::ctx_own_actor_cancelled);
        } else {
            unexpected("shmctx::Cancelled");
        }
    } catch (const PeerDied&) {
        env.counters.add(Ctr::ctx_peer_died);
        if (env.peer_died) env.peer_died(peer, op_start, mono_ns());
    } catch (const TransportClosed&) {
        env.counters.add(Ctr::ctx_transport_closed);
    } catch (const ActorNotFound&) {
        env.counters.add(Ctr::ctx_not_found);
    } catch (const DeliberateError& e) {
        if (progress.body_threw) {
            env.counters.add(Ctr::ctx_body_throw);
        } else {
            unexpected(std::string("DeliberateError: ") + e.what());
        }
    } catch (const ReportedFailure&) {
        // Counted where it was detected.
    } catch (const StreamOverrun& e) {
        if (plan != nullptr && plan->dir == Dir::down && plan->policy == Policy::raise &&
            !plan->paced) {
            env.counters.add(Ctr::ctx_overrun_local);
        } else {
            unexpected(std::string("StreamOverrun: ") + e.what());
        }
    } catch (const ContextCancelled& e) {
        // A cancel we did not ask for: the peer actor was cancelled by a third soak process
        // (cancel_actor) and refuses or ends its tasks, or our own actor was cancelled.
        if (actor.cancel_called()) {
            env.counters.add(Ctr::ctx_own_actor_cancelled);
        } else if (e.canceller() == actor.uid()) {
            if (we_cancelled_peer) {
                env.counters.add(Ctr::ctx_ctxc_by_our_cancel_actor);
            } else {
                unexpected(std::string("ContextCancelled naming us as canceller: ") + e.what());
            }
        } else {
            env.counters.add(Ctr::ctx_ctxc_other);
        }
    } catch (const RemoteActorError& e) {
        if (e.boxed_is<StreamOverrun>() && plan != nullptr && plan->dir == Dir::up &&
            plan->policy == Policy::raise && !plan->paced) {
            env.counters.add(Ctr::ctx_overrun_remote);
        } else if (e.boxed_is<DeliberateError>() && plan != nullptr && plan->child_throw_at >= 0) {
            env.counters.add(Ctr::ctx_child_throw);
        } else if (e.boxed_is<ReportedFailure>()) {
            env.counters.add(Ctr::ctx_reported_remote);  // the child counted it
        } else if (e.boxed_is<NotExposed>()) {
            // A worker is connectable as soon as its Actor is constructed, before it exposes its
            // endpoints: a peer that has just (re)started refuses the Start for a moment.
            env.counters.add(Ctr::ctx_not_exposed_yet);
        } else if (e.boxed_is<TransportClosed>() || e.boxed_is<PeerDied>()) {
            env.counters.add(Ctr::ctx_transport_closed);
        } else {
            unexpected("RemoteActorError (" + e.boxed_type_name() + "): " + e.what());
        }
    } catch (const std::exception& e) {
        unexpected(error_type_name(e) + ": " + e.what());
    } catch (...) {
        unexpected("non-std exception");
    }
}

/// One client thread: until `stop`, pick a live peer, a plan, and run a context (or, rarely,
/// cancel the peer actor). `cancel_targets` are the peers cancel_actor() may hit.
inline void client_loop(Env& env, Actor& actor, const std::vector<std::string>& peers,
                        const std::vector<std::string>& cancel_targets, std::uint64_t seed,
                        const std::atomic<bool>& stop) {
    Rng rng(seed);
    // acquire: pairs with the owner's release store of stop ([soak.stop]); nothing else is
    // published through it, so this only bounds the loop.
    while (!stop.load(std::memory_order::acquire)) {
        if (actor.cancel_called()) {  // our actor was cancelled: the owner recycles it
            pause_for(5ms);
            continue;
        }
        const std::string& peer = peers[rng.below(peers.size())];
        OpTracker::Scope op(env.tracker, env.self_name + " client -> " + peer + " connecting");
        const std::int64_t start = op.start_ns();
        std::optional<Plan> plan;
        Progress progress;
        std::optional<Portal> connected;
        try {
            Portal& portal = connected.emplace(actor.connect(peer, 300ms));
            const bool targetable = std::find(cancel_targets.begin(), cancel_targets.end(), peer) !=
                                    cancel_targets.end();
            if (targetable && rng.chance(env.p_cancel_actor)) {
                env.counters.add(Ctr::actor_cancels_sent);
                op.describe(env.self_name + " cancel_actor " + peer);
                if (portal.cancel_actor(5s)) env.counters.add(Ctr::actor_cancels_acked);
                continue;
            }
            plan = make_plan(rng, env);
            op.describe(env.self_name + " client -> " + peer + " (" + plan->describe() + ")");
            run_context(env, portal, *plan, progress, [&] { return actor.cancel_called(); });
        } catch (...) {
            classify(env, actor, peer, plan ? &*plan : nullptr, progress,
                     connected && connected->cancel_called(), start, std::current_exception());
        }
    }
}

/// Parses "word k=v k=v ..." (the word is skipped) into counts; non-numeric values are skipped.
/// "raise,spill" -> the policy mask of Env (0 if a name is unknown).
inline unsigned parse_policies(const std::string& list) {
    unsigned mask = 0;
    std::istringstream in(list);
    for (std::string w; std::getline(in, w, ',');) {
        const auto it = std::find(kPolicyNames.begin(), kPolicyNames.end(), w);
        if (it == kPolicyNames.end()) return 0;
        mask |= 1U << static_cast<unsigned>(it - kPolicyNames.begin());
    }
    return mask;
}

inline std::map<std::string, std::uint64_t> parse_kv(const std::string& line) {
    std::map<std::string, std::uint64_t> out;
    std::istringstream in(line);
    std::string w;
    in >> w;
    while (in >> w) {
        const auto eq = w.find('=');
        if (eq == std::string::npos) continue;
        try {
            out[w.substr(0, eq)] = std::stoull(w.substr(eq + 1));
        } catch (const std::exception&) {
        }
    }
    return out;
}

}  // namespace shmctx::soak
