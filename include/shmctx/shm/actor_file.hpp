// Actor names, identity and liveness (DESIGN.md §2 "Actor file = identity and liveness",
// "Death is decided on kernel evidence only").
//
// The actor file `shmctx.<euid>.<ns>.actor.<name>` is an empty file in /dev/shm. Whoever holds
// an exclusive OFD lock (F_OFD_SETLK) on it owns the name; the kernel drops the lock when the
// last fd of that open file description closes, i.e. at the holder's death, whatever its pid.
// Only the holder unlinks the file. Claim protocol (state machine in docs/protocol.md §2):
//
//   1. open(O_CREAT|O_EXCL) or open() the existing file (fchmod if created)
//   2. F_OFD_SETLK F_WRLCK on the whole file; held by someone else -> step 4
//   3. fstat(fd) vs stat(path): same inode -> the name is ours; else (the previous holder or a
//      cleaner unlinked it between 1 and 2) close and go to 1
//   4. held: if the path now names another inode or nothing, go to 1; else poll the lock until
//      ClaimOptions::contention_wait passes (a cleaner holds a free name's lock for a moment),
//      then NameTaken.
//
// Thread-safety: ActorFile, LocalActorRecord and PeerActor are move-only, single thread (const
// members thread-safe); free functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/uuid.hpp"

namespace shmctx::shm {

struct ClaimOptions {
    mode_t mode = 0600;  ///< of a created actor file (and the actor segment)
    /// How long a claim retries while the lock is held before NameTaken. A cleaner
    /// (reclaim_stale) or a starting actor's own reclaim holds a free name's lock for a
    /// moment; a live holder holds it for good, so this only delays a true NameTaken.
    Duration contention_wait = std::chrono::milliseconds(100);
};

/// Ownership of one actor name: the exclusive OFD lock on its actor file, held for the life of
/// this object.
class ActorFile {
public:
    /// Claims `name` (protocol above). Throws NameTaken naming the actor and the namespace,
    /// PermissionDenied if the file belongs to another user, SystemError.
    static ActorFile claim(const Names& names, std::string_view name, ClaimOptions options = {});
    /// As claim() but with no contention wait; nullopt if the lock is held.
    static std::optional<ActorFile> try_claim(const Names& names, std::string_view name,
                                              mode_t mode = 0600);

    ActorFile(ActorFile&& other) noexcept;
    ActorFile& operator=(ActorFile&& other) noexcept;
    /// Releases without unlinking (a crash looks the same to others); see release().
    ~ActorFile();

    /// Orderly end: unlinks the actor file, then closes (drops the lock). Unlink comes first so
    /// that a new claimer never locks the old inode after we let go.
    void release() noexcept;

    const std::string& file_name() const noexcept { return file_name_; }
    int fd() const noexcept { return fd_; }

private:
    ActorFile(std::string file_name, int fd) noexcept : file_name_(std::move(file_name)), fd_(fd) {}
    std::string file_name_;
    int fd_ = -1;
};

enum class LockState {
    absent,  ///< no actor file
    held,    ///< someone holds the lock: a live actor (or a cleaner, for a moment)
    free,    ///< file exists, nobody holds it: the actor is dead (or has not locked it yet)
};

/// Probes the lock of `name`'s actor file with F_OFD_GETLK; changes nothing.
LockState lock_state(const Names& names, std::string_view name);
/// Probes the lock of an open actor file (F_OFD_GETLK): true if held by anyone else.
bool lock_held(int actor_file_fd);

struct LocalActorOptions {
    ClaimOptions claim{};
    /// Run reclaim_stale() over the namespace after publishing (DESIGN.md §2): dead actors'
    /// objects do not pile up. Failures of that sweep are ignored (it is housekeeping).
    bool reclaim_namespace = true;
};

/// An actor taking part: its name claimed, its segment published. Construction: claim the
/// actor file -> remove whatever a dead predecessor left under the name (we hold the lock, so
/// it is stale) -> build and publish the segment. Destruction (orderly): unlink the segment,
/// then the actor file, then drop the lock. release_name() does the same earlier and keeps the
/// segment mapped, for threads that may still touch it (an actor's surviving handles).
class LocalActorRecord {
public:
    LocalActorRecord(const Names& names, std::string_view name, LocalActorOptions options = {});
    /// The moved-from record owns nothing (its destructor removes nothing).
    LocalActorRecord(LocalActorRecord&& other) noexcept;
    LocalActorRecord& operator=(LocalActorRecord&&) noexcept = delete;
    ~LocalActorRecord();

    /// Unlinks the segment and the actor file and drops the name lock (a new actor may claim
    /// the name at once); the mapping stays until destruction. Idempotent. Not concurrent with
    /// the destructor.
    void release_name() noexcept;

    const Uuid& uuid() const noexcept { return uuid_; }
    const std::string& name() const noexcept { return name_; }
    ActorSegment& segment() noexcept { return *segment_; }
    const ActorSegment& segment() const noexcept { return *segment_; }
    const ActorFile& file() const noexcept { return *file_; }

private:
    std::string name_;
    Uuid uuid_;
    std::optional<ActorFile> file_;
    std::optional<ActorSegment> segment_;
    bool released_ = false;  // release_name() ran: the names may be another actor's now
};

/// A live peer, verified on kernel evidence at open time.
class PeerActor {
public:
    PeerActor(ActorSegment segment, int pidfd, int lock_fd) noexcept;
    PeerActor(PeerActor&& other) noexcept;
    PeerActor& operator=(PeerActor&&) = delete;
    ~PeerActor();

    const Uuid& uuid() const noexcept { return segment_.info().uuid; }
    pid_t pid() const noexcept { return segment_.info().pid; }
    /// pidfd of the peer's process (readable once it has exited); owned by this object.
    int pidfd() const noexcept { return pidfd_; }
    /// fd of the peer's actor file (the inode it locked); lock_held(lock_fd()) says whether the
    /// peer still holds its name. Owned by this object.
    int lock_fd() const noexcept { return lock_fd_; }
    ActorSegment& segment() noexcept { return segment_; }
    const ActorSegment& segment() const noexcept { return segment_; }

private:
    ActorSegment segment_;
    int pidfd_;
    int lock_fd_;
};

/// Opens the live actor `name`: waits (polling the directory, 1..10 ms apart) until the name
/// is held and its segment published, then verifies against the lock: pidfd_open(pid from the
/// header); /proc/<pid>/stat start time equals the header's; the actor file lock is still held
/// and the path still names the inode we probed; the segment under the name is still the one
/// we mapped. Throws ActorNotFound naming the actor and the namespace when no live actor
/// appears before `deadline` (a dead or half-built one counts as absent), LayoutError if the
/// segment has another layout/protocol version.
PeerActor open_peer(const Names& names, std::string_view name, Deadline deadline,
                    ActorSegmentOptions options = {});

struct ReclaimReport {
    std::vector<std::string> removed;  ///< object names removed (or that would be, in dry run)
    std::vector<std::string> notes;    ///< why something was kept that might look stale
};

/// Removes what dead actors of `names`' namespace left behind: for each name whose lock is
/// free (taken while cleaning): its segment, tmp.<name>.*, arenas it owned, then its actor
/// file; seg/tmp entries with no actor file (the same way); arenas whose owner uuid is no live
/// actor's (arenas are listed first, so an arena created by an actor that starts during the
/// sweep is never touched). A name whose entry cannot be probed or claimed is skipped with a
/// note, and then no arena is removed (its owner is unknown). A published segment whose
/// creator still holds its lock (a live process whose actor file was removed, say by hand) is
/// kept with its arenas and noted, whatever its actor file says. `dry_run` only reports.
ReclaimReport reclaim_stale(const Names& names, bool dry_run = false);

/// What a survivor runs when the liveness watcher reported the actor `name` (uuid `uuid`)
/// dead: if the name's lock is free, takes it and removes the segment under the name,
/// tmp.<name>.*, every arena `uuid` owned (even when its segment is gone already), then the
/// actor file. A name already retaken (a restarted actor holds the lock) or already cleaned (no
/// actor file) is left alone, except for `uuid`'s arenas, which no live actor owns. Several
/// survivors may run it at once: the lock makes one of them do the work.
ReclaimReport reclaim_dead_actor(const Names& names, std::string_view name, const Uuid& uuid);

}  // namespace shmctx::shm
