// Pipes as a harness transport (a peer of DESIGN.md §8 / issue #11): one kernel pipe per
// direction, made as a FIFO in /dev/shm under the run's base name so that the peer opens it by
// name (no descriptor passing) and the parent's OwnedShmName removes it like any other object.
//
// Every message of a run has the same size, so the byte stream is cut into messages by that
// size; the check words of every message catch a lost or torn one. The pipe's capacity is set
// to the run's ring_bytes (F_SETPIPE_SZ, capped by /proc/sys/fs/pipe-max-size).
//
// Open order (a FIFO's write end opens only once it has a reader):
//   1. parent create(): mkfifo a2b and b2a; opens its read end of b2a.
//   2. peer open(): opens its read end of a2b, then its write end of b2a (parent reads it).
//   3. parent sender(a2b), called after the peer said "ready": opens its write end of a2b.
// Each side then holds only its own ends, so a peer's death shows as EOF (read) or EPIPE
// (write). Spin mode uses O_NONBLOCK and retries; block mode uses plain blocking read/write (a
// peer that stops without dying is bounded only by the test's timeout, unlike the other
// transports' waits: a poll per read would charge pipes a second syscall per message).
//
// Thread-safety: one Sender and one Receiver per direction, each single thread.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shmctx/shm/names.hpp"
#include "transport.hpp"

namespace shmctx::bench {

struct PipeTransport {
    static constexpr std::string_view kName = "pipe";

    [[noreturn]] static void fail(const char* call, const std::string& what = {}) {
        throw SystemError(std::string("pipe: ") + call + (what.empty() ? "" : " " + what) + ": " +
                          std::strerror(errno));
    }

    /// An owned descriptor.
    class Fd {
    public:
        Fd() = default;
        explicit Fd(int fd) : fd_(fd) {}
        Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
        Fd& operator=(Fd&& o) noexcept {
            if (this != &o) {
                reset();
                fd_ = std::exchange(o.fd_, -1);
            }
            return *this;
        }
        Fd(const Fd&) = delete;
        Fd& operator=(const Fd&) = delete;
        ~Fd() { reset(); }
        int get() const noexcept { return fd_; }
        void reset() noexcept {
            if (fd_ >= 0) ::close(std::exchange(fd_, -1));
        }

    private:
        int fd_ = -1;
    };

    class Sender {
    public:
        Sender(int fd, const ChannelSpec& spec) : fd_(fd), guard_(RunGuard::of(spec)) {}
        void send(const std::byte* p, std::size_t n) {
            std::uint32_t rounds = 0;
            while (n > 0) {
                const ssize_t rc = ::write(fd_, p, n);
                if (rc > 0) {
                    p += rc;
                    n -= static_cast<std::size_t>(rc);
                    continue;
                }
                if (rc < 0 && errno == EINTR) continue;
                if (rc < 0 && errno == EPIPE) throw PeerStalled("pipe: the reader is gone");
                if (rc < 0 && errno != EAGAIN) fail("write");
                if ((++rounds & 1023U) == 0) check_peer(guard_, "pipe: consumer stalled (full)");
                shm::cpu_relax();  // spin mode only: block mode never sees EAGAIN
            }
        }
        void flush() {}

    private:
        int fd_;
        RunGuard guard_;
    };

    class Receiver {
    public:
        Receiver(int fd, const ChannelSpec& spec)
            : fd_(fd),
              guard_(RunGuard::of(spec)),
              msg_bytes_(spec.msg_bytes),
              // Room for a batch of small messages, or one large one.
              buffer_(std::max<std::size_t>(
                  spec.msg_bytes * std::max<std::uint32_t>(spec.read_batch, 1),
                  std::max<std::size_t>(spec.msg_bytes, 4096))) {}
        template <class F>
        void receive(F&& on_message) {
            std::uint32_t rounds = 0;
            for (;;) {
                const ssize_t rc = ::read(fd_, buffer_.data() + have_, buffer_.size() - have_);
                if (rc > 0) {
                    have_ += static_cast<std::size_t>(rc);
                    if (have_ < msg_bytes_) continue;  // a message arrives in pieces
                    std::size_t at = 0;
                    for (; have_ - at >= msg_bytes_; at += msg_bytes_)
                        on_message(buffer_.data() + at, msg_bytes_);
                    std::memmove(buffer_.data(), buffer_.data() + at, have_ - at);
                    have_ -= at;
                    return;
                }
                if (rc == 0) throw PeerStalled("pipe: the writer is gone");
                if (errno == EINTR) continue;
                if (errno != EAGAIN) fail("read");
                if ((++rounds & 1023U) == 0) check_peer(guard_, "pipe: producer stalled (empty)");
                shm::cpu_relax();  // spin mode only
            }
        }

    private:
        int fd_;
        RunGuard guard_;
        std::size_t msg_bytes_;
        std::vector<std::byte> buffer_;
        std::size_t have_ = 0;
    };

    class Link {
    public:
        static Link create(const ChannelSpec& spec) {
            ignore_sigpipe();
            Link link(spec);
            for (const char* dir : {".a2b", ".b2a"}) {
                const std::string name = spec.name + dir;
                if (::mkfifo(path(name).c_str(), 0600) != 0) fail("mkfifo", path(name));
                link.owned_.emplace_back(name);
            }
            link.read_ = link.open_end(".b2a", O_RDONLY);
            return link;
        }
        static Link open(const ChannelSpec& spec) {
            ignore_sigpipe();
            Link link(spec);
            link.read_ = link.open_end(".a2b", O_RDONLY);
            link.write_ = link.open_end(".b2a", O_WRONLY);
            return link;
        }
        Link(Link&&) noexcept = default;
        Link& operator=(Link&&) = delete;
        ~Link() = default;
        int peer_fd() const noexcept { return -1; }
        Sender sender(Dir) {
            // The parent's write end opens now, after the peer opened its read end (step 3).
            if (write_.get() < 0) write_ = open_end(".a2b", O_WRONLY);
            return Sender(write_.get(), spec_);
        }
        Receiver receiver(Dir) { return Receiver(read_.get(), spec_); }

    private:
        explicit Link(const ChannelSpec& spec) : spec_(spec) {}
        static std::string path(const std::string& name) {
            return std::string(shm::kShmDir) + "/" + name;
        }
        /// A FIFO opened without blocking at open, then switched to the run's mode.
        Fd open_end(const char* dir, int access) const {
            const std::string p = path(spec_.name + dir);
            Fd fd(::open(p.c_str(), access | O_NONBLOCK | O_CLOEXEC));
            if (fd.get() < 0) fail("open", p);
            if (spec_.mode == Mode::block && ::fcntl(fd.get(), F_SETFL, access) != 0)
                fail("fcntl(F_SETFL)", p);
            if (access == O_WRONLY) {
                // The pipe's capacity, like a ring's (the kernel rounds up to pages and refuses
                // more than pipe-max-size: then the default 64 KiB stays).
                const int want = static_cast<int>(std::min<std::size_t>(spec_.ring_bytes, 1 << 20));
                (void)::fcntl(fd.get(), F_SETPIPE_SZ, want);
            }
            return fd;
        }
        /// A dead reader must be EPIPE, not a signal that kills the benchmark.
        static void ignore_sigpipe() { (void)::signal(SIGPIPE, SIG_IGN); }

        ChannelSpec spec_;
        std::vector<OwnedShmName> owned_;  // the parent's FIFOs, removed with the link
        Fd read_;
        Fd write_;
    };
};

}  // namespace shmctx::bench
