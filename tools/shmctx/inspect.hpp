// Reading what shared memory exposes about actors, for `shmctx ls`, `stat` and `errors`: actor
// discovery in /dev/shm, liveness from the actor file and segment locks, the heartbeat, and the
// rings of every arena an actor owns (pread only). Read-only observer: it maps segments
// read-only, probes locks with F_OFD_GETLK (never takes one) and reads arenas with pread(2),
// so it never joins as an actor, never faults pages into a sparse arena and never writes a
// byte. Every value read from shared memory is copied once into a local and validated; a
// corrupt header or arena becomes a `problems` entry, never a crash (docs/protocol.d/cli.md).
// Thread-safety: free functions, thread-safe; the results are plain values.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"

namespace shmctx::cli {

/// One ring of an actor's outbound arena (the actor is its producer).
struct RingStats {
    bool control = false;  ///< the link's control ring (the arena's first carve)
    std::uint64_t generation = 0;
    std::uint64_t data_bytes = 0;
    std::uint32_t capacity_msgs = 0;
    std::optional<std::uint64_t> fill_bytes;  ///< tail - head, when consistent
    shm::RingCounters counters;
};

/// One arena `link.<owner>.<peer>` of the actor.
struct LinkStats {
    std::string arena;  ///< object name
    std::string peer;   ///< peer uuid (hex), from the arena name
    std::uint64_t carves = 0;
    std::vector<RingStats> rings;  ///< carves in use that hold an initialised ring
    std::optional<std::string> problem;
};

struct Row {
    std::string ns;
    std::string name;
    std::string state;  ///< live, unresponsive, starting, dead, unknown
    std::optional<shm::ActorSegment> segment;
    std::optional<std::uint64_t> beats;
    std::optional<std::uint64_t> beat_age_ns;
    std::optional<std::vector<LinkStats>> links;  ///< nullopt: owner uuid unknown
    std::vector<std::string> problems;
};

/// One actor per row for every actor name found in `namespaces` (actor file, segment or tmp
/// segment), sorted by namespace then name; names that are not valid actor names are noted in
/// `skipped`.
std::vector<Row> collect_rows(const std::vector<std::string>& namespaces, uid_t euid,
                              std::vector<std::string>& skipped);

/// CLOCK_MONOTONIC now (the heartbeat's clock), in ns.
std::uint64_t mono_now_ns();

struct Totals {
    std::size_t links = 0;
    std::size_t rings = 0;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t in_flight = 0;  ///< sum of sent - received (per ring, when consistent)
    std::uint64_t fill_bytes = 0;
    std::uint64_t full_events = 0;
    std::uint64_t overruns = 0;
    std::uint64_t spilled = 0;
    std::uint64_t spill_depth = 0;
    std::uint64_t spill_high_water = 0;  ///< max over rings
};

Totals totals_of(const std::vector<LinkStats>& links);

/// `v` as a JSON number, or null.
std::string json_u64(const std::optional<std::uint64_t>& v);
/// One ring as the JSON object of `ls --json` (docs/protocol.d/cli.md).
std::string json_ring(const RingStats& r);

}  // namespace shmctx::cli
