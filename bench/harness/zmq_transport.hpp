// ZeroMQ `ipc://` as harness transports (peers of DESIGN.md §8 / issue #11; built only when
// libzmq is found, SHMCTX_BENCH_HAVE_ZMQ):
//   zmq         PUSH/PULL, one socket pair per direction (throughput, round trip, idle);
//   zmq-reqrep  REQ/REP, one socket pair for both directions (round trip and idle only: a REQ
//               socket must receive a reply before it may send again).
// The parent binds, the peer connects. The endpoint files live in /dev/shm under the run's base
// name, so the parent's OwnedShmName removes them like any other object of the run.
//
// Both sides set the high-water marks to the run's ring capacity in messages, linger 0, and in
// block mode send/receive timeouts of 100 ms: a timeout only happens while idle, and then the
// run guard (deadline, peer exit) is checked before waiting again. Spin mode uses ZMQ_DONTWAIT
// and retries with sched_yield between tries, not a pause instruction: ZeroMQ moves the bytes on
// its own I/O thread, which shares the pinned CPU with the spinning thread and would otherwise
// wait for the end of its time slice (milliseconds per message).
//
// Thread-safety: one Sender and one Receiver per direction, each single thread (a ZeroMQ socket
// is used by one thread at a time).
#pragma once

#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shmctx/shm/names.hpp"
#include "transport.hpp"

namespace shmctx::bench {

enum class ZmqPattern : std::uint8_t { push_pull, req_rep };

template <ZmqPattern P>
struct ZmqTransport {
    static constexpr std::string_view kName = P == ZmqPattern::push_pull ? "zmq" : "zmq-reqrep";
    static constexpr int kIdleTimeoutMs = 100;

    [[noreturn]] static void fail(const char* call, const std::string& what = {}) {
        throw SystemError(std::string(kName) + ": " + call + (what.empty() ? "" : " " + what) +
                          ": " + zmq_strerror(zmq_errno()));
    }

    struct ContextDeleter {
        void operator()(void* c) const noexcept { (void)zmq_ctx_term(c); }
    };
    struct SocketDeleter {
        void operator()(void* s) const noexcept { (void)zmq_close(s); }
    };
    using Context = std::unique_ptr<void, ContextDeleter>;
    using Socket = std::unique_ptr<void, SocketDeleter>;

    class Sender {
    public:
        Sender(void* socket, const ChannelSpec& spec)
            : socket_(socket), mode_(spec.mode), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n) {
            const int flags = mode_ == Mode::spin ? ZMQ_DONTWAIT : 0;
            std::uint32_t rounds = 0;
            for (;;) {
                if (zmq_send(socket_, p, n, flags) == static_cast<int>(n)) return;
                if (zmq_errno() == EINTR) continue;
                if (zmq_errno() != EAGAIN) fail("zmq_send");
                // Block mode: the 100 ms timeout passed; spin mode: check now and then.
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "zmq: consumer stalled (high-water mark)");
                if (mode_ == Mode::spin) std::this_thread::yield();  // see the file comment
            }
        }
        void flush() {}

    private:
        void* socket_;
        Mode mode_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(void* socket, const ChannelSpec& spec)
            : socket_(socket),
              mode_(spec.mode),
              guard_(RunGuard::of(spec)),
              buffer_(spec.msg_bytes + 8) {}
        template <class F>
        void receive(F&& on_message) {
            const int flags = mode_ == Mode::spin ? ZMQ_DONTWAIT : 0;
            std::uint32_t rounds = 0;
            for (;;) {
                const int rc = zmq_recv(socket_, buffer_.data(), buffer_.size(), flags);
                if (rc >= 0) {
                    // zmq_recv returns the message's real size and truncates to the buffer.
                    if (static_cast<std::size_t>(rc) > buffer_.size())
                        throw CheckFailed(std::string(kName) + ": a message of " +
                                          std::to_string(rc) + " bytes");
                    on_message(buffer_.data(), static_cast<std::size_t>(rc));
                    return;
                }
                if (zmq_errno() == EINTR) continue;
                if (zmq_errno() != EAGAIN) fail("zmq_recv");
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "zmq: producer stalled (nothing to receive)");
                if (mode_ == Mode::spin) std::this_thread::yield();  // see the file comment
            }
        }

    private:
        void* socket_;
        Mode mode_;
        RunGuard guard_;
        std::vector<std::byte> buffer_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            Link link(spec);
            if constexpr (P == ZmqPattern::push_pull) {
                link.out_ = link.socket(ZMQ_PUSH, ".a2b", true);
                link.in_ = link.socket(ZMQ_PULL, ".b2a", true);
            } else {
                link.out_ = link.socket(ZMQ_REQ, ".rr", true);
            }
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            Link link(spec);
            if constexpr (P == ZmqPattern::push_pull) {
                link.in_ = link.socket(ZMQ_PULL, ".a2b", false);
                link.out_ = link.socket(ZMQ_PUSH, ".b2a", false);
            } else {
                link.out_ = link.socket(ZMQ_REP, ".rr", false);
            }
            return link;
        }
        Link(Link&&) noexcept = default;
        Link& operator=(Link&&) = delete;
        ~Link() = default;  // sockets close before the context terminates (member order)
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir) { return Sender(out_.get(), spec_); }
        Receiver receiver(Dir) { return Receiver(in_ ? in_.get() : out_.get(), spec_); }

    private:
        explicit Link(const ChannelSpec& spec) : spec_(spec), context_(zmq_ctx_new()) {
            if (!context_) fail("zmq_ctx_new");
        }
        Socket socket(int type, const char* dir, bool bind) {
            Socket s(zmq_socket(context_.get(), type));
            if (!s) fail("zmq_socket");
            const int hwm = static_cast<int>(std::clamp<std::size_t>(
                spec_.ring_bytes / std::max<std::size_t>(spec_.msg_bytes, 1), 1, 1 << 20));
            const int linger = 0;
            const int timeout = spec_.mode == Mode::block ? kIdleTimeoutMs : -1;
            for (const auto& [opt, value] :
                 {std::pair{ZMQ_SNDHWM, hwm}, std::pair{ZMQ_RCVHWM, hwm},
                  std::pair{ZMQ_LINGER, linger}, std::pair{ZMQ_SNDTIMEO, timeout},
                  std::pair{ZMQ_RCVTIMEO, timeout}}) {
                if (zmq_setsockopt(s.get(), opt, &value, sizeof value) != 0) fail("zmq_setsockopt");
            }
            const std::string name = spec_.name + ".zmq" + dir;
            const std::string endpoint = "ipc://" + std::string(shm::kShmDir) + "/" + name;
            if (bind) {
                if (zmq_bind(s.get(), endpoint.c_str()) != 0) fail("zmq_bind", endpoint);
                owned_.emplace_back(name);
            } else if (zmq_connect(s.get(), endpoint.c_str()) != 0) {
                fail("zmq_connect", endpoint);
            }
            return s;
        }

        ChannelSpec spec_;
        std::vector<OwnedShmName> owned_;  // endpoint files; removed after the sockets closed
        Context context_;
        Socket out_;
        Socket in_;  // push_pull only
    };
};

using ZmqPushPull = ZmqTransport<ZmqPattern::push_pull>;
using ZmqReqRep = ZmqTransport<ZmqPattern::req_rep>;

}  // namespace shmctx::bench
