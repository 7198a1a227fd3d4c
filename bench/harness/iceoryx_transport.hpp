// iceoryx 2.0 publish/subscribe as a harness transport (a peer of DESIGN.md §8 / issue #11;
// built only when iceoryx_posh is found, SHMCTX_BENCH_HAVE_ICEORYX).
//
// One UntypedPublisher/UntypedSubscriber pair per direction, services ("shmctx-bench", <run
// name>, "a2b"/"b2a"). Lossless like every harness transport: the publisher waits for a slow
// consumer (ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER) and the subscriber's queue blocks the
// producer when full (QueueFullPolicy::BLOCK_PRODUCER); the queue holds the run's ring capacity
// in messages, at most iceoryx's 256. A message is loaned, the caller's bytes copied in (the
// harness hands the transport ready bytes; for 64 B the copy is a few ns), published; the
// receiver takes the chunk, checks it in place and releases it.
//
// iceoryx needs its daemon RouDi. The first Link::create of a process starts one (iox-roudi with
// a mempool configuration written for the harness's message sizes, see IceoryxRoudi) and stops
// it at exit; each process registers its runtime once. Subscriptions are made by RouDi's
// discovery loop, so Link::open (the peer) waits until its subscriber is subscribed and its
// publisher has a subscriber before the peer says "ready": nothing is published into the void.
//
// Spin mode polls take(); block mode waits in a WaitSet (100 ms timeouts while idle, then the
// run guard is checked). A full subscriber queue makes publish() wait inside iceoryx (it yields
// in a loop) in both modes.
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "transport.hpp"

namespace shmctx::bench {

/// The RouDi daemon of this harness process (started on first use, stopped at exit).
class IceoryxRoudi {
public:
    /// Starts RouDi unless this process already did, and registers this process's runtime
    /// (`role` names it). Throws SystemError when iox-roudi is missing or does not come up (for
    /// example because another RouDi already runs on this machine: the message says so).
    static void ensure_runtime(std::string_view role, bool start_daemon);
};

struct IceoryxTransport {
    static constexpr std::string_view kName = "iceoryx";

    struct Impl;  // the iceoryx objects of one run (iceoryx_transport.cpp)

    class Sender {
    public:
        Sender(Impl* impl, const ChannelSpec& spec) : impl_(impl), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n);
        void flush() {}

    private:
        Impl* impl_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(Impl* impl, const ChannelSpec& spec)
            : impl_(impl), mode_(spec.mode), batch_(spec.read_batch), guard_(RunGuard::of(spec)) {}
        template <class F>
        void receive(F&& on_message) {
            std::uint32_t rounds = 0;
            for (;;) {
                std::uint32_t taken = 0;
                while (taken < batch_) {
                    std::size_t n = 0;
                    const std::byte* p = take(n);
                    if (p == nullptr) break;
                    ++taken;
                    try {
                        on_message(p, n);
                    } catch (...) {
                        release(p);
                        throw;
                    }
                    release(p);
                }
                if (taken > 0) return;
                if (mode_ == Mode::block) {
                    if (!wait_for_data()) check_peer(guard_, "iceoryx: producer stalled (empty)");
                } else {
                    if ((++rounds & 1023U) == 0)
                        check_peer(guard_, "iceoryx: producer stalled (empty)");
                    shm::cpu_relax();
                }
            }
        }

    private:
        /// The next chunk's payload and size, or nullptr when the queue is empty.
        const std::byte* take(std::size_t& n);
        void release(const std::byte* p);
        /// Block mode: waits up to 100 ms for data; false on a timeout.
        bool wait_for_data();

        Impl* impl_;
        Mode mode_;
        std::uint32_t batch_;
        RunGuard guard_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec);
        static Link open(const ChannelSpec& spec);
        Link(Link&&) noexcept;
        Link& operator=(Link&&) = delete;
        ~Link();
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir d);
        Receiver receiver(Dir d);

    private:
        explicit Link(const ChannelSpec& spec);
        ChannelSpec spec_;
        std::unique_ptr<Impl> impl_;
    };
};

}  // namespace shmctx::bench
