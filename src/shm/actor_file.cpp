#include "shmctx/shm/actor_file.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "shmctx/errors.hpp"

namespace shmctx::shm {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void throw_errno(const std::string& op, const std::string& object, int err) {
    const std::string text = op + " '" + object + "': " + errno_text(err);
    if (err == EACCES || err == EPERM) throw PermissionDenied(text);
    throw SystemError(text);
}

void sleep_for(Duration d) {
    timespec ts{static_cast<time_t>(d.count() / 1'000'000'000),
                static_cast<long>(d.count() % 1'000'000'000)};
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void close_fd(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

/// Refuses a file owned by another user (DESIGN.md §2: other users are kept out).
void check_owner(int fd, const std::string& path) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("fstat", path, errno);
    if (st.st_uid != ::geteuid()) {
        throw PermissionDenied("actor file '" + path + "' is owned by uid " +
                               std::to_string(st.st_uid) + ", not by us (uid " +
                               std::to_string(::geteuid()) + "): refused");
    }
}

/// Opens the actor file, creating it (mode applied with fchmod, past the umask) if absent.
int open_or_create(const std::string& path, mode_t mode) {
    for (;;) {
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd >= 0) {
            if (::fchmod(fd, mode) != 0) {
                const int err = errno;
                ::close(fd);
                ::unlink(path.c_str());
                throw_errno("fchmod", path, err);
            }
            return fd;
        }
        if (errno != EEXIST) throw_errno("open(create)", path, errno);
        fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            try {
                check_owner(fd, path);
            } catch (...) {
                ::close(fd);
                throw;
            }
            return fd;
        }
        if (errno != ENOENT) throw_errno("open", path, errno);
        // Unlinked between our two opens: start over.
    }
}

/// F_OFD_SETLK F_WRLCK on the whole file: true if taken, false if someone else holds it.
bool try_lock(int fd, const std::string& path) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // whole file
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EAGAIN || errno == EACCES) return false;
    throw_errno("fcntl(F_OFD_SETLK)", path, errno);
}

/// True if `path` names the same inode as `fd` (false if it names nothing or another one).
bool same_inode(int fd, const std::string& path) {
    struct stat by_fd {};
    struct stat by_path {};
    if (::fstat(fd, &by_fd) != 0) return false;
    if (::stat(path.c_str(), &by_path) != 0) return false;
    return by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev;
}

/// The part of a listed "tmp" entry ("<name>.<uuid>") before the dot.
std::string_view tmp_actor(std::string_view entry) { return entry.substr(0, entry.find('.')); }

std::vector<std::string> tmp_entries_of(const Names& names, std::string_view name) {
    std::vector<std::string> out;
    for (auto& e : names.list("tmp")) {
        if (tmp_actor(e) == name) out.push_back(names.prefix() + "tmp." + e);
    }
    return out;
}

/// The uuid of the segment published under `name`, if it is a readable segment of ours.
std::optional<Uuid> published_uuid(const Names& names, std::string_view name,
                                   std::vector<std::string>* notes) {
    try {
        auto seg = ActorSegment::try_open(names, name, ActorSegmentOptions{0600, true});
        if (seg) return seg->info().uuid;
    } catch (const Error& e) {
        if (notes != nullptr) notes->push_back(e.what());
    }
    return std::nullopt;
}

/// True if the segment published under `name` is still locked by its creator: the kernel says
/// a live process made it, whatever state its actor file is in (e.g. removed by hand). False
/// when there is none or it cannot be probed (then the actor-file lock decides, as before).
bool creator_alive(const Names& names, std::string_view name) {
    try {
        auto seg = Segment::try_open(names.actor_segment(name), SegmentOptions{0600, true});
        return seg && seg->locked_elsewhere();
    } catch (const Error&) {
        return false;
    }
}

void remove_object(const std::string& object, bool dry_run, ReclaimReport& report) {
    if (dry_run) {
        if (object_inode(object)) report.removed.push_back(object);
        return;
    }
    if (Segment::remove(object)) report.removed.push_back(object);
}

/// Removes the arenas of `arenas` (listed "link" entries) that `owner` owns.
void remove_arenas_of(const Names& names, const Uuid& owner, const std::vector<std::string>& arenas,
                      bool dry_run, ReclaimReport& report) {
    const std::string prefix = owner.to_hex() + ".";
    for (auto& a : arenas) {
        if (a.compare(0, prefix.size(), prefix) == 0) {
            remove_object(names.prefix() + "link." + a, dry_run, report);
        }
    }
}

/// Removes what a dead holder of `name` left: segment, tmp.<name>.*, arenas owned by the
/// segment's uuid. The caller holds the lock (or, in a dry run, found it free).
void reclaim_name(const Names& names, std::string_view name, const std::vector<std::string>& arenas,
                  bool dry_run, ReclaimReport& report) {
    const std::optional<Uuid> old = published_uuid(names, name, nullptr);
    remove_object(names.actor_segment(name), dry_run, report);
    for (auto& tmp : tmp_entries_of(names, name)) remove_object(tmp, dry_run, report);
    if (old) remove_arenas_of(names, *old, arenas, dry_run, report);
}

}  // namespace

// ---- ActorFile ----

std::optional<ActorFile> ActorFile::try_claim(const Names& names, std::string_view name,
                                              mode_t mode) {
    const std::string file_name = names.actor_file(name);
    const std::string path = shm_path(file_name);
    for (;;) {
        int fd = open_or_create(path, mode);
        bool locked = false;
        try {
            locked = try_lock(fd, path);
        } catch (...) {
            ::close(fd);
            throw;
        }
        if (!locked) {
            const bool still_there = same_inode(fd, path);
            ::close(fd);
            if (!still_there) continue;  // the holder was a cleaner that has unlinked it
            return std::nullopt;
        }
        // The previous holder (or a cleaner) may have unlinked the file between our open and
        // our lock: we would hold a lock on an orphan inode. Then start over.
        if (same_inode(fd, path)) return ActorFile(file_name, fd);
        ::close(fd);
    }
}

ActorFile ActorFile::claim(const Names& names, std::string_view name, ClaimOptions options) {
    const Deadline deadline(options.contention_wait);
    for (;;) {
        if (auto file = try_claim(names, name, options.mode)) return std::move(*file);
        if (deadline.expired()) break;
        // No kernel notification exists for "an OFD lock was released" short of a blocking
        // F_OFD_SETLKW with no timeout; poll briefly (this only runs under contention).
        sleep_for(std::chrono::milliseconds(1));
    }
    throw NameTaken("actor name '" + std::string(name) + "' in namespace '" + names.ns() +
                    "' is held by a live actor");
}

ActorFile::ActorFile(ActorFile&& other) noexcept
    : file_name_(std::move(other.file_name_)), fd_(std::exchange(other.fd_, -1)) {}

ActorFile& ActorFile::operator=(ActorFile&& other) noexcept {
    if (this != &other) {
        close_fd(fd_);
        file_name_ = std::move(other.file_name_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

ActorFile::~ActorFile() { close_fd(fd_); }

void ActorFile::release() noexcept {
    if (fd_ < 0) return;
    // Only the holder unlinks, and only while it still holds the lock; if the path names
    // another inode (cannot happen while we hold the lock, but cheap to check) leave it.
    const std::string path = shm_path(file_name_);
    if (same_inode(fd_, path)) ::unlink(path.c_str());
    close_fd(fd_);
}

// ---- probes ----

bool lock_held(int actor_file_fd) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;
    if (::fcntl(actor_file_fd, F_OFD_GETLK, &fl) != 0) {
        throw SystemError("fcntl(F_OFD_GETLK): " + errno_text(errno));
    }
    return fl.l_type != F_UNLCK;
}

LockState lock_state(const Names& names, std::string_view name) {
    const std::string path = shm_path(names.actor_file(name));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return LockState::absent;
        throw_errno("open", path, errno);
    }
    bool held = false;
    try {
        held = lock_held(fd);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    return held ? LockState::held : LockState::free;
}

// ---- LocalActorRecord ----

LocalActorRecord::LocalActorRecord(const Names& names, std::string_view name,
                                   LocalActorOptions options)
    : name_(name), uuid_(Uuid::random()) {
    file_.emplace(ActorFile::claim(names, name, options.claim));
    try {
        // We hold the lock: whatever sits under the name is a dead predecessor's.
        ReclaimReport ignored;
        reclaim_name(names, name, names.list("link"), false, ignored);
        segment_.emplace(ActorSegment::create(names, name, uuid_,
                                              ActorSegmentOptions{options.claim.mode, false}));
    } catch (...) {
        file_->release();
        throw;
    }
    if (options.reclaim_namespace) {
        try {
            (void)reclaim_stale(names, false);
        } catch (const Error&) {
            // Housekeeping only; `shmctx clean` reports the same failure to a human.
        }
    }
}

LocalActorRecord::LocalActorRecord(LocalActorRecord&& other) noexcept
    : name_(std::move(other.name_)),
      uuid_(other.uuid_),
      file_(std::move(other.file_)),
      segment_(std::move(other.segment_)),
      released_(other.released_) {
    other.file_.reset();
    other.segment_.reset();
}

LocalActorRecord::~LocalActorRecord() { release_name(); }

void LocalActorRecord::release_name() noexcept {
    if (!file_ || released_) return;  // moved from, or done
    released_ = true;
    // While we hold the lock the published name is ours; after release() it may be a new
    // claimer's, hence the flag.
    if (segment_) Segment::remove(segment_->published_name());
    file_->release();
}

// ---- PeerActor ----

PeerActor::PeerActor(ActorSegment segment, int pidfd, int lock_fd) noexcept
    : segment_(std::move(segment)), pidfd_(pidfd), lock_fd_(lock_fd) {}

PeerActor::PeerActor(PeerActor&& other) noexcept
    : segment_(std::move(other.segment_)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      lock_fd_(std::exchange(other.lock_fd_, -1)) {}

PeerActor::~PeerActor() {
    close_fd(pidfd_);
    close_fd(lock_fd_);
}

namespace {

/// One attempt of open_peer(); nullopt with `reason` set when there is no live actor now.
std::optional<PeerActor> try_open_peer(const Names& names, std::string_view name,
                                       ActorSegmentOptions options, std::string& reason) {
    const std::string file_path = shm_path(names.actor_file(name));
    int lock_fd = ::open(file_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (lock_fd < 0) {
        if (errno != ENOENT) throw_errno("open", file_path, errno);
        reason = "no actor file";
        return std::nullopt;
    }
    int pidfd = -1;
    try {
        check_owner(lock_fd, file_path);
        if (!lock_held(lock_fd)) {
            reason = "its actor file is not locked (dead)";
            close_fd(lock_fd);
            return std::nullopt;
        }
        auto seg = ActorSegment::try_open(names, name, options);
        if (!seg) {
            reason = "its segment is not published (yet)";
            close_fd(lock_fd);
            return std::nullopt;
        }
        const ActorInfo& info = seg->info();
        // The segment under seg.<name> must say it is <name> of this namespace; anything else
        // is a corrupt or misplaced header, never a live peer of that name.
        if (info.name != name || info.ns != names.ns()) {
            reason = "its segment names actor '" + info.name + "' in namespace '" + info.ns +
                     "' (corrupt)";
            close_fd(lock_fd);
            return std::nullopt;
        }
        // The creator holds an OFD lock on its segment until its fd closes; the kernel drops it
        // when the process exits, before the process becomes a zombie (and its pidfd readable).
        // A successor that already holds the actor-file lock never locks this old inode.
        if (!seg->segment().locked_elsewhere()) {
            reason = "its segment's creator lock is free (the creator has exited)";
            close_fd(lock_fd);
            return std::nullopt;
        }
        pidfd = static_cast<int>(::syscall(SYS_pidfd_open, info.pid, 0));
        if (pidfd < 0) {
            // ESRCH: no such process. The number may also have come back as a thread of
            // another process (pids and tids share one space): ENOENT, or EINVAL on older
            // kernels. Either way our actor is gone.
            if (errno != ESRCH && errno != ENOENT && errno != EINVAL) {
                throw_errno("pidfd_open(" + std::to_string(info.pid) + ")", std::string(name),
                            errno);
            }
            reason = "its pid " + std::to_string(info.pid) + " no longer names a process (dead)";
            close_fd(lock_fd);
            return std::nullopt;
        }
        // The pidfd names whichever process had that pid when it was opened. If the start time
        // read after it matches the header, that process is the segment's creator (a reused pid
        // has a later start time), and the pidfd will report its exit.
        const auto start = process_start_time(info.pid);
        if (!start || *start != info.start_time) {
            reason = "its pid " + std::to_string(info.pid) +
                     " now belongs to another process (start time differs)";
            close_fd(pidfd);
            close_fd(lock_fd);
            return std::nullopt;
        }
        // Verified against the lock: still held, the name still names the inode we probed, and
        // the segment under the name is still the one we mapped (not a successor's).
        const auto seg_ino = object_inode(seg->published_name());
        if (!lock_held(lock_fd) || !same_inode(lock_fd, file_path) || !seg_ino ||
            *seg_ino != seg->segment().inode()) {
            reason = "it changed while we verified it (dead or replaced)";
            close_fd(pidfd);
            close_fd(lock_fd);
            return std::nullopt;
        }
        // The lock proves only that someone holds the name: an exited but unreaped creator
        // (pid and start time still match) whose successor holds the lock but has not yet
        // replaced the segment passes every check above. The creator is alive now, checked
        // after the lock, so it held the name then (it unpublishes before it lets go).
        pollfd exited{pidfd, POLLIN, 0};
        int polled = 0;
        while ((polled = ::poll(&exited, 1, 0)) < 0 && errno == EINTR) {
        }
        if (polled < 0) throw_errno("poll(pidfd)", std::string(name), errno);
        if (polled > 0) {
            reason = "its process " + std::to_string(info.pid) + " has exited (dead)";
            close_fd(pidfd);
            close_fd(lock_fd);
            return std::nullopt;
        }
        return PeerActor(std::move(*seg), pidfd, lock_fd);
    } catch (...) {
        close_fd(pidfd);
        close_fd(lock_fd);
        throw;
    }
}

}  // namespace

PeerActor open_peer(const Names& names, std::string_view name, Deadline deadline,
                    ActorSegmentOptions options) {
    Duration pause = std::chrono::milliseconds(1);
    std::string reason;
    for (;;) {
        if (auto peer = try_open_peer(names, name, options, reason)) return std::move(*peer);
        if (deadline.expired()) break;
        // Discovery is a directory scan (DESIGN.md §2); a peer that is starting is waited for
        // by re-scanning with a short backoff (1 -> 10 ms), bounded by the deadline.
        sleep_for(std::min(pause, deadline.remaining()));
        pause = std::min<Duration>(pause * 2, std::chrono::milliseconds(10));
    }
    throw ActorNotFound("actor '" + std::string(name) + "' not found in namespace '" + names.ns() +
                        "': " + reason);
}

// ---- reclaim ----

ReclaimReport reclaim_dead_actor(const Names& names, std::string_view name, const Uuid& uuid) {
    ReclaimReport report;
    // The dead actor's uuid is never reused: its arenas go whoever holds the name now.
    const std::vector<std::string> arenas = names.list("link");
    remove_arenas_of(names, uuid, arenas, false, report);
    // Absent: cleaned already (the file goes last). Held: a restarted actor (or another
    // survivor cleaning right now) owns the name. Probing first keeps a late survivor from
    // creating a fresh actor file only to unlink it again.
    if (lock_state(names, name) != LockState::free) return report;
    auto file = ActorFile::try_claim(names, name);
    if (!file) return report;
    reclaim_name(names, name, arenas, false, report);
    file->release();
    report.removed.push_back(names.actor_file(name));
    return report;
}

ReclaimReport reclaim_stale(const Names& names, bool dry_run) {
    ReclaimReport report;
    // Arenas first: an arena created after this listing (by an actor that starts during the
    // sweep) is not in it, so it cannot be removed however the rest of the sweep goes.
    const std::vector<std::string> arenas = names.list("link");

    std::set<std::string> actor_names;
    for (auto& n : names.list("actor")) actor_names.insert(n);
    for (auto& n : names.list("seg")) actor_names.insert(n);
    for (auto& e : names.list("tmp")) actor_names.emplace(tmp_actor(e));

    std::set<Uuid> live;
    bool live_unknown = false;
    auto note_live = [&](const std::string& name) {
        if (auto uuid = published_uuid(names, name, &report.notes)) {
            live.insert(*uuid);
            return;
        }
        // Not published (being built): its uuid is in its tmp names. Else it owns no arena
        // yet, unless its segment is unreadable (another version): then we cannot tell.
        if (object_inode(names.actor_segment(name))) live_unknown = true;
        for (auto& e : names.list("tmp")) {
            Uuid u;
            if (tmp_actor(e) == name && Uuid::parse_hex(e.substr(e.find('.') + 1), u)) {
                live.insert(u);
            }
        }
    };

    for (const auto& name : actor_names) {
        try {
            validate_component("actor name", name, kMaxActorNameBytes);
        } catch (const InvalidName&) {
            report.notes.push_back("skipped '" + name + "': not a valid actor name");
            continue;
        }
        const std::string file_name = names.actor_file(name);
        const bool had_file = object_inode(file_name).has_value();
        // One entry that cannot be probed or claimed (e.g. planted by another user in the
        // world-writable /dev/shm) must not stop the sweep of every name after it.
        try {
            auto keep_live_creator = [&] {
                report.notes.push_back("kept '" + names.actor_segment(name) +
                                       "' and its arenas: its creator still holds its lock (a "
                                       "live process whose actor file was removed)");
                note_live(name);
            };
            if (dry_run) {
                if (lock_state(names, name) == LockState::held) {
                    note_live(name);
                    continue;
                }
                if (creator_alive(names, name)) {
                    keep_live_creator();
                    if (had_file) report.removed.push_back(file_name);
                    continue;
                }
                reclaim_name(names, name, arenas, true, report);
                if (had_file) report.removed.push_back(file_name);
                continue;
            }
            // Take the lock while cleaning: a claimer that arrives meanwhile waits (its
            // contention_wait) or, once we unlinked the file, creates a new one.
            auto file = ActorFile::try_claim(names, name);
            if (!file) {
                note_live(name);
                continue;
            }
            if (creator_alive(names, name)) {
                keep_live_creator();
                file->release();  // a free (or our fresh) actor file is stale either way
                if (had_file) report.removed.push_back(file_name);
                continue;
            }
            reclaim_name(names, name, arenas, false, report);
            file->release();
            if (had_file) report.removed.push_back(file_name);
        } catch (const Error& e) {
            // Its owner (if any) is unknown: keep every arena, as for an unreadable segment.
            live_unknown = true;
            report.notes.push_back("skipped '" + name + "': " + e.what());
        }
    }

    for (const auto& a : arenas) {
        Uuid owner;
        if (a.size() < 33 || !Uuid::parse_hex(std::string_view(a).substr(0, 32), owner)) {
            report.notes.push_back("skipped arena 'link." + a + "': unparsable owner");
            continue;
        }
        if (live.count(owner) != 0) continue;
        if (live_unknown) {
            report.notes.push_back("kept arena 'link." + a +
                                   "': a live actor's segment is unreadable, so its owner "
                                   "cannot be ruled out");
            continue;
        }
        const std::string object = names.prefix() + "link." + a;
        if (std::find(report.removed.begin(), report.removed.end(), object) ==
            report.removed.end()) {
            remove_object(object, dry_run, report);
        }
    }
    return report;
}

}  // namespace shmctx::shm
