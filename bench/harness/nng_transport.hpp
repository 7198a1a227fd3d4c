// nng `ipc://` PUSH/PULL as a harness transport (a peer of DESIGN.md §8 / issue #11; built only
// when nng is found, SHMCTX_BENCH_HAVE_NNG): one socket pair per direction, the parent listens
// and the peer dials. Endpoint files live in /dev/shm under the run's base name (removed by the
// parent's OwnedShmName).
//
// Buffers are set to the run's ring capacity in messages (nng caps them at 8192); block mode
// uses send/receive timeouts of 100 ms, after which the run guard is checked; spin mode uses
// NNG_FLAG_NONBLOCK and retries with sched_yield between tries (nng's own threads move the
// bytes and share the pinned CPU with the spinning thread; see zmq_transport.hpp).
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shmctx/shm/names.hpp"
#include "transport.hpp"

namespace shmctx::bench {

struct NngPushPull {
    static constexpr std::string_view kName = "nng";
    static constexpr nng_duration kIdleTimeoutMs = 100;

    [[noreturn]] static void fail(const char* call, int rv, const std::string& what = {}) {
        throw SystemError(std::string("nng: ") + call + (what.empty() ? "" : " " + what) + ": " +
                          nng_strerror(rv));
    }

    /// An open nng socket, closed when destroyed. Move-only.
    class Socket {
    public:
        Socket() = default;
        explicit Socket(nng_socket s) : s_(s), open_(true) {}
        Socket(Socket&& o) noexcept : s_(o.s_), open_(std::exchange(o.open_, false)) {}
        Socket& operator=(Socket&& o) noexcept {
            if (this != &o) {
                reset();
                s_ = o.s_;
                open_ = std::exchange(o.open_, false);
            }
            return *this;
        }
        Socket(const Socket&) = delete;
        Socket& operator=(const Socket&) = delete;
        ~Socket() { reset(); }
        nng_socket get() const noexcept { return s_; }
        void reset() noexcept {
            if (std::exchange(open_, false)) (void)nng_close(s_);
        }

    private:
        nng_socket s_ = NNG_SOCKET_INITIALIZER;
        bool open_ = false;
    };

    class Sender {
    public:
        Sender(nng_socket s, const ChannelSpec& spec)
            : s_(s), mode_(spec.mode), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n) {
            const int flags = mode_ == Mode::spin ? NNG_FLAG_NONBLOCK : 0;
            std::uint32_t rounds = 0;
            for (;;) {
                // nng_send copies the bytes (without NNG_FLAG_ALLOC) and never writes them.
                const int rv = nng_send(s_, const_cast<std::byte*>(p), n, flags);
                if (rv == 0) return;
                if (rv != NNG_EAGAIN && rv != NNG_ETIMEDOUT) fail("nng_send", rv);
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "nng: consumer stalled (buffer full)");
                if (mode_ == Mode::spin) std::this_thread::yield();  // see the file comment
            }
        }
        void flush() {}

    private:
        nng_socket s_;
        Mode mode_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(nng_socket s, const ChannelSpec& spec)
            : s_(s), mode_(spec.mode), guard_(RunGuard::of(spec)), buffer_(spec.msg_bytes + 8) {}
        template <class F>
        void receive(F&& on_message) {
            const int flags = mode_ == Mode::spin ? NNG_FLAG_NONBLOCK : 0;
            std::uint32_t rounds = 0;
            for (;;) {
                std::size_t n = buffer_.size();
                const int rv = nng_recv(s_, buffer_.data(), &n, flags);
                if (rv == 0) {
                    if (n > buffer_.size())
                        throw CheckFailed("nng: a message of " + std::to_string(n) + " bytes");
                    on_message(buffer_.data(), n);
                    return;
                }
                if (rv != NNG_EAGAIN && rv != NNG_ETIMEDOUT) fail("nng_recv", rv);
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "nng: producer stalled (nothing to receive)");
                if (mode_ == Mode::spin) std::this_thread::yield();  // see the file comment
            }
        }

    private:
        nng_socket s_;
        Mode mode_;
        RunGuard guard_;
        std::vector<std::byte> buffer_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            Link link(spec);
            link.out_ = link.socket(true, ".a2b", true);
            link.in_ = link.socket(false, ".b2a", true);
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            Link link(spec);
            link.in_ = link.socket(false, ".a2b", false);
            link.out_ = link.socket(true, ".b2a", false);
            return link;
        }
        Link(Link&&) noexcept = default;
        Link& operator=(Link&&) = delete;
        ~Link() = default;  // sockets close before their files are removed (member order)
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir) { return Sender(out_.get(), spec_); }
        Receiver receiver(Dir) { return Receiver(in_.get(), spec_); }

    private:
        explicit Link(const ChannelSpec& spec) : spec_(spec) {}
        Socket socket(bool push, const char* dir, bool listen) {
            nng_socket raw = NNG_SOCKET_INITIALIZER;
            int rv = push ? nng_push0_open(&raw) : nng_pull0_open(&raw);
            if (rv != 0) fail(push ? "nng_push0_open" : "nng_pull0_open", rv);
            Socket s(raw);
            const int depth = static_cast<int>(std::clamp<std::size_t>(
                spec_.ring_bytes / std::max<std::size_t>(spec_.msg_bytes, 1), 1, 8192));
            const nng_duration timeout = spec_.mode == Mode::block ? kIdleTimeoutMs : -1;
            if ((rv = nng_socket_set_int(raw, push ? NNG_OPT_SENDBUF : NNG_OPT_RECVBUF, depth)) ||
                (rv = nng_socket_set_ms(raw, NNG_OPT_SENDTIMEO, timeout)) ||
                (rv = nng_socket_set_ms(raw, NNG_OPT_RECVTIMEO, timeout))) {
                fail("nng_socket_set", rv);
            }
            const std::string name = spec_.name + ".nng" + dir;
            const std::string url = "ipc://" + std::string(shm::kShmDir) + "/" + name;
            if (listen) {
                if ((rv = nng_listen(raw, url.c_str(), nullptr, 0)) != 0)
                    fail("nng_listen", rv, url);
                owned_.emplace_back(name);
            } else if ((rv = nng_dial(raw, url.c_str(), nullptr, 0)) != 0) {
                fail("nng_dial", rv, url);
            }
            return s;
        }

        ChannelSpec spec_;
        std::vector<OwnedShmName> owned_;  // endpoint files; removed after the sockets closed
        Socket out_;
        Socket in_;
    };
};

}  // namespace shmctx::bench
