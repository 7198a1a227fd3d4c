// Boost.Interprocess message_queue as a harness transport (a baseline of DESIGN.md §8).
//
// One queue per direction (`<name>.mq.ab`, `<name>.mq.ba`), max_msg_size = the run's message
// size, max_num_msg = ring_bytes / size (at least 16, at most 4096). Blocking mode uses the
// queue's own blocking calls (a process-shared pthread mutex and condition variable inside the
// queue) in 50 ms slices, between which the run's deadline and the peer's exit are checked;
// spin mode loops on try_send/try_receive.
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <algorithm>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "transport.hpp"

namespace shmctx::bench {

struct BoostMessageQueue {
    static constexpr std::string_view kName = "mq";
    using Queue = boost::interprocess::message_queue;

    /// Blocking calls wait in slices of this length, so that a peer's exit (RunGuard::stop)
    /// is noticed; computing the slice's absolute time costs one clock read per blocked call.
    static constexpr auto kSlice = boost::posix_time::milliseconds(50);
    static boost::posix_time::ptime slice_end() {
        return boost::posix_time::microsec_clock::universal_time() + kSlice;
    }

    class Sender {
    public:
        Sender(Queue* q, const ChannelSpec& spec)
            : q_(q), mode_(spec.mode), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n) {
            constexpr const char* what = "message_queue: consumer stalled (queue full)";
            if (mode_ == Mode::spin) {
                spin_until([&] { return q_->try_send(p, n, 0); }, guard_, what);
                return;
            }
            while (!q_->timed_send(p, n, 0, slice_end())) check_peer(guard_, what);
        }
        void flush() {}

    private:
        Queue* q_;
        Mode mode_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(Queue* q, const ChannelSpec& spec)
            : q_(q), mode_(spec.mode), guard_(RunGuard::of(spec)), buffer_(spec.msg_bytes) {}
        template <class F>
        void receive(F&& on_message) {
            constexpr const char* what = "message_queue: producer stalled (queue empty)";
            Queue::size_type got = 0;
            unsigned int priority = 0;
            if (mode_ == Mode::spin) {
                spin_until(
                    [&] { return q_->try_receive(buffer_.data(), buffer_.size(), got, priority); },
                    guard_, what);
            } else {
                while (
                    !q_->timed_receive(buffer_.data(), buffer_.size(), got, priority, slice_end()))
                    check_peer(guard_, what);
            }
            on_message(buffer_.data(), static_cast<std::size_t>(got));
        }

    private:
        Queue* q_;
        Mode mode_;
        RunGuard guard_;
        std::vector<std::byte> buffer_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            Link link(spec);
            const auto count = static_cast<Queue::size_type>(
                std::clamp<std::size_t>(spec.ring_bytes / spec.msg_bytes, 16, 4096));
            for (int d = 0; d < 2; ++d) {
                const std::string name = queue_name(spec, d);
                Queue::remove(name.c_str());
                // Owner-only, like every shmctx object (Boost's default is 0644).
                link.queues_[d] =
                    std::make_unique<Queue>(boost::interprocess::create_only, name.c_str(), count,
                                            spec.msg_bytes, boost::interprocess::permissions(0600));
                link.owned_[d] = OwnedShmName(name);
            }
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            Link link(spec);
            for (int d = 0; d < 2; ++d) {
                link.queues_[d] = std::make_unique<Queue>(boost::interprocess::open_only,
                                                          queue_name(spec, d).c_str());
                if (link.queues_[d]->get_max_msg_size() != spec.msg_bytes)
                    throw LayoutError("message_queue: max_msg_size differs from the run's size");
            }
            return link;
        }
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir d) { return Sender(queues_[static_cast<int>(d)].get(), spec_); }
        Receiver receiver(Dir d) { return Receiver(queues_[static_cast<int>(d)].get(), spec_); }

    private:
        explicit Link(const ChannelSpec& spec) : spec_(spec) {}
        static std::string queue_name(const ChannelSpec& spec, int d) {
            return spec.name + (d == 0 ? ".mq.ab" : ".mq.ba");
        }
        ChannelSpec spec_;
        std::unique_ptr<Queue> queues_[2];
        OwnedShmName owned_[2];  // Boost's message_queue is a POSIX shm object of that name
    };
};

}  // namespace shmctx::bench
