// A Unix domain socket (socketpair, SOCK_SEQPACKET) as a harness transport (a baseline of
// DESIGN.md §8). One full-duplex socketpair serves both directions; the parent keeps one end
// and the peer inherits the other at a fixed fd (ChannelSpec::fd). SEQPACKET keeps message
// boundaries, so the received length is checked against the run's size. Blocking mode uses
// blocking send/recv with SO_SNDTIMEO/SO_RCVTIMEO set to the run's deadline (a dead peer
// closes its end: recv sees EOF, send EPIPE); spin mode loops on MSG_DONTWAIT.
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "transport.hpp"

namespace shmctx::bench {

struct UnixSocket {
    static constexpr std::string_view kName = "uds";

    [[noreturn]] static void fail(const char* call) {
        throw SystemError(std::string("uds: ") + call + ": " + std::strerror(errno));
    }

    class Sender {
    public:
        Sender(int fd, const ChannelSpec& spec)
            : fd_(fd), mode_(spec.mode), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n) {
            const int flags = MSG_NOSIGNAL | (mode_ == Mode::spin ? MSG_DONTWAIT : 0);
            std::uint32_t rounds = 0;
            for (;;) {
                const ssize_t rc = ::send(fd_, p, n, flags);
                if (rc == static_cast<ssize_t>(n)) return;
                if (rc >= 0) throw CheckFailed("uds: short send on a SEQPACKET socket");
                if (errno == EINTR) continue;
                if (errno == EPIPE) throw PeerStalled("uds: peer closed the socket");
                if (errno != EAGAIN) fail("send");
                // Blocking mode: EAGAIN means SO_SNDTIMEO (the run deadline) passed.
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "uds: consumer stalled (socket full)");
                if (mode_ == Mode::block) throw PeerStalled("uds: consumer stalled (socket full)");
                shm::cpu_relax();
            }
        }
        void flush() {}

    private:
        int fd_;
        Mode mode_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(int fd, const ChannelSpec& spec)
            : fd_(fd), mode_(spec.mode), guard_(RunGuard::of(spec)), buffer_(spec.msg_bytes + 8) {}
        template <class F>
        void receive(F&& on_message) {
            // The buffer is 8 bytes longer than a message and MSG_TRUNC reports the real length,
            // so an oversized message fails the size check instead of being cut silently.
            const int flags = MSG_TRUNC | (mode_ == Mode::spin ? MSG_DONTWAIT : 0);
            std::uint32_t rounds = 0;
            for (;;) {
                const ssize_t rc = ::recv(fd_, buffer_.data(), buffer_.size(), flags);
                if (rc > 0) {
                    on_message(buffer_.data(), static_cast<std::size_t>(rc));
                    return;
                }
                if (rc == 0) throw PeerStalled("uds: peer closed the socket");
                if (errno == EINTR) continue;
                if (errno != EAGAIN) fail("recv");
                if (mode_ == Mode::block || (++rounds & 1023U) == 0)
                    check_peer(guard_, "uds: producer stalled (socket empty)");
                if (mode_ == Mode::block) throw PeerStalled("uds: producer stalled (socket empty)");
                shm::cpu_relax();
            }
        }

    private:
        int fd_;
        Mode mode_;
        RunGuard guard_;
        std::vector<std::byte> buffer_;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            int fds[2];
            if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
                fail("socketpair");
            Link link(spec, fds[0], fds[1]);
            link.configure(fds[0]);
            link.configure(fds[1]);
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            if (spec.fd < 0) throw SystemError("uds: the peer was started without a socket fd");
            Link link(spec, spec.fd, -1);
            link.configure(spec.fd);
            return link;
        }
        Link(Link&& o) noexcept
            : spec_(o.spec_),
              fd_(std::exchange(o.fd_, -1)),
              peer_fd_(std::exchange(o.peer_fd_, -1)) {}
        Link& operator=(Link&&) = delete;
        ~Link() {
            if (fd_ >= 0) ::close(fd_);
            if (peer_fd_ >= 0) ::close(peer_fd_);
        }
        /// The end the peer inherits; the parent closes its copy after spawning (close_peer_fd).
        int peer_fd() const noexcept { return peer_fd_; }
        void close_peer_fd() noexcept {
            if (peer_fd_ >= 0) ::close(std::exchange(peer_fd_, -1));
        }
        Sender sender(Dir) { return Sender(fd_, spec_); }
        Receiver receiver(Dir) { return Receiver(fd_, spec_); }

    private:
        Link(const ChannelSpec& spec, int fd, int peer_fd)
            : spec_(spec), fd_(fd), peer_fd_(peer_fd) {}
        void configure(int fd) const {
            // Socket buffers sized like the rings (the kernel doubles and caps the value), and the
            // run's deadline as the blocking timeout.
            const int buf = static_cast<int>(std::min<std::size_t>(spec_.ring_bytes, 1 << 22));
            (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
            (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
            const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
                std::min<Duration>(spec_.deadline.remaining(), std::chrono::hours(1)));
            timeval tv{static_cast<time_t>(left.count() / 1'000'000),
                       static_cast<suseconds_t>(left.count() % 1'000'000)};
            if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // zero would mean "forever"
            if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
                ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
                fail("setsockopt");
            }
        }
        ChannelSpec spec_;
        int fd_;
        int peer_fd_;
    };
};

}  // namespace shmctx::bench
