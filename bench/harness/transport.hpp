// The transport interface of the benchmark harness (bench/README.md).
//
// A transport is a class T with (checked by the Transport concept below):
//
//   T::Link    created by the harness parent (owns the shared resources: segments, queues,
//              sockets, and removes them in its destructor) or opened by the spawned peer:
//                static Link create(const ChannelSpec&);   // parent
//                static Link open(const ChannelSpec&);     // peer process
//                int peer_fd() const;                      // fd the peer inherits, or -1
//                Sender sender(Dir);  Receiver receiver(Dir);
//   T::Sender  void send(const std::byte*, std::size_t)  waits (spin or block) until accepted;
//              void flush()                                publishes anything batched
//   T::Receiver  template <class F> void receive(F&& f)    waits for at least one message and
//              calls f(const std::byte*, std::size_t) for each message it takes (a batch at most)
//
// The run loops are templates over T (runner.cpp), so no virtual call or std::function sits on
// the per-message path; the registry maps a transport name to the instantiated loops.
// A link has two directions: a_to_b (parent -> peer) and b_to_a (peer -> parent, ping-pong).
//
// Thread-safety: a Link, its Sender and its Receiver are single thread each; the sender and the
// receiver of one direction live in different processes.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

#include "message.hpp"
#include "shmctx/deadline.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::bench {

/// How a blocked sender or receiver waits.
enum class Mode : std::uint8_t {
    spin,   ///< busy-spin (pause instruction), never sleeps
    block,  ///< sleeps in the kernel (futex, condition variable or socket) until woken
};

std::string_view to_string(Mode m) noexcept;

enum class Dir : std::uint8_t { a_to_b, b_to_a };

/// What both sides of a run agree on; passed to the peer on its command line.
struct ChannelSpec {
    std::string name;                  ///< base name of the run's shared objects (unique per run)
    std::size_t msg_bytes = 64;        ///< every message of the run has exactly this size
    std::size_t ring_bytes = 1 << 20;  ///< capacity of one direction, in bytes
    std::uint32_t batch = 1;           ///< producer: publish once per this many (1 = every message)
    std::uint32_t read_batch = 1;      ///< consumer: take up to this many per head publish
    Mode mode = Mode::spin;
    int fd = -1;           ///< peer side: the inherited socket (uds transport)
    Deadline deadline;     ///< a stalled peer makes waits fail (loudly) after this
    std::stop_token stop;  ///< requested when the peer process exited: waits fail now
};

/// What bounds every wait of a run: the deadline and the peer's exit.
struct RunGuard {
    Deadline deadline;
    std::stop_token stop;
    static RunGuard of(const ChannelSpec& spec) { return {spec.deadline, spec.stop}; }
};

/// A wait exceeded the run's deadline: the peer stalled or died.
class PeerStalled : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Throws PeerStalled if the peer exited or the deadline passed; for the slow path of waits.
inline void check_peer(const RunGuard& guard, const char* what) {
    if (guard.stop.stop_requested()) throw PeerStalled(std::string(what) + ": the peer exited");
    if (guard.deadline.expired()) throw PeerStalled(std::string(what) + ": deadline passed");
}

/// Throws the PeerStalled that explains why a wait ended without its condition.
[[noreturn]] inline void wait_failed(const RunGuard& guard, const char* what) {
    check_peer(guard, what);
    throw PeerStalled(std::string(what) + ": wait interrupted");
}

/// Spins on `ready()` with a pause instruction, checking deadline and peer every 1024 rounds.
template <class Ready>
void spin_until(Ready&& ready, const RunGuard& guard, const char* what) {
    std::uint32_t rounds = 0;
    while (!ready()) {
        if ((++rounds & 1023U) == 0) check_peer(guard, what);
        shm::cpu_relax();
    }
}

/// Removes a named shared-memory object when destroyed (the parent owns every object of a run,
/// so they are gone after the run, also when it fails). Move-only.
class OwnedShmName {
public:
    OwnedShmName() = default;
    explicit OwnedShmName(std::string name) : name_(std::move(name)) {}
    OwnedShmName(OwnedShmName&& o) noexcept : name_(std::exchange(o.name_, {})) {}
    OwnedShmName& operator=(OwnedShmName&& o) noexcept {
        if (this != &o) {
            reset();
            name_ = std::exchange(o.name_, {});
        }
        return *this;
    }
    OwnedShmName(const OwnedShmName&) = delete;
    OwnedShmName& operator=(const OwnedShmName&) = delete;
    ~OwnedShmName() { reset(); }
    void reset() noexcept {
        if (!name_.empty()) (void)shm::Segment::remove(std::exchange(name_, {}));
    }

private:
    std::string name_;
};

template <class T>
concept Transport = requires(const ChannelSpec& spec, typename T::Link& link,
                             typename T::Sender& tx, const std::byte* p, std::size_t n) {
    { T::kName } -> std::convertible_to<std::string_view>;
    { T::Link::create(spec) } -> std::same_as<typename T::Link>;
    { T::Link::open(spec) } -> std::same_as<typename T::Link>;
    { link.peer_fd() } -> std::same_as<int>;
    { link.sender(Dir::a_to_b) } -> std::same_as<typename T::Sender>;
    { link.receiver(Dir::a_to_b) } -> std::same_as<typename T::Receiver>;
    tx.send(p, n);
    tx.flush();
}
&&requires(typename T::Receiver& rx) {
    rx.receive([](const std::byte*, std::size_t) {});
};

}  // namespace shmctx::bench
