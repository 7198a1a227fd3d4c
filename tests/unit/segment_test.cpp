// Segment: creation, permissions, open checks, sparse backing, removal; fault-point parsing
// (through the shm_peer helper, since SHMCTX_FAULT is read once per process).
#include "shmctx/shm/segment.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;

/// A segment name in a namespace of its own; removed again at scope exit.
class ScopedName {
public:
    explicit ScopedName(std::string_view tag, std::string_view actor = "seg")
        : name_(Names(test::unique_ns(tag)).actor_segment(actor)) {}
    ~ScopedName() { Segment::remove(name_); }
    ScopedName(const ScopedName&) = delete;
    ScopedName& operator=(const ScopedName&) = delete;
    const std::string& str() const { return name_; }
    operator const std::string&() const { return name_; }  // NOLINT: test convenience

private:
    std::string name_;
};

/// Sets the umask for a scope (the process-wide umask; gtest runs tests one at a time).
class ScopedUmask {
public:
    explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
    ~ScopedUmask() { ::umask(old_); }
    ScopedUmask(const ScopedUmask&) = delete;
    ScopedUmask& operator=(const ScopedUmask&) = delete;

private:
    mode_t old_;
};

struct stat stat_fd(int fd) {
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0) << std::strerror(errno);
    return st;
}

bool exists(const std::string& name) {
    struct stat st {};
    return ::stat(shm_path(name).c_str(), &st) == 0;
}

TEST(Segment, CreatedModeIsExactly0600WhateverTheUmask) {
    for (const mode_t mask : {mode_t{0}, mode_t{077}, mode_t{0777}}) {
        ScopedUmask umask_scope(mask);
        ScopedName name("mode");
        auto seg = Segment::create(name, 4096);
        EXPECT_EQ(stat_fd(seg.fd()).st_mode & 07777, 0600U) << "umask " << std::oct << mask;
        struct stat by_path {};
        ASSERT_EQ(::stat(shm_path(name.str()).c_str(), &by_path), 0);
        EXPECT_EQ(by_path.st_mode & 07777, 0600U) << "umask " << std::oct << mask;
    }
}

TEST(Segment, CreatedModeIs0660WhenAskedEvenUnderARestrictiveUmask) {
    for (const mode_t mask : {mode_t{0}, mode_t{077}}) {
        ScopedUmask umask_scope(mask);
        ScopedName name("mode660");
        auto seg = Segment::create(name, 4096, SegmentOptions{.mode = 0660});
        EXPECT_EQ(stat_fd(seg.fd()).st_mode & 07777, 0660U) << "umask " << std::oct << mask;
    }
}

TEST(Segment, RejectsModeBitsOutside0777AndSizeZero) {
    ScopedName name("badargs");
    EXPECT_THROW(Segment::create(name, 4096, SegmentOptions{.mode = 04600}), std::invalid_argument);
    EXPECT_THROW(Segment::create(name, 0), std::invalid_argument);
    EXPECT_FALSE(exists(name));
}

TEST(Segment, FdIsCloseOnExecForCreatorAndOpener) {
    ScopedName name("cloexec");
    auto created = Segment::create(name, 4096);
    auto opened = Segment::open(name);
    for (const int fd : {created.fd(), opened.fd()}) {
        const int flags = ::fcntl(fd, F_GETFD);
        ASSERT_GE(flags, 0) << std::strerror(errno);
        EXPECT_NE(flags & FD_CLOEXEC, 0);
    }
}

TEST(Segment, TryCreateOfAnExistingNameReturnsNulloptAndLeavesItIntact) {
    ScopedName name("exists");
    auto first = Segment::create(name, 8192);
    first.data()[100] = std::byte{42};
    EXPECT_FALSE(Segment::try_create(name, 4096).has_value());
    EXPECT_THROW(Segment::create(name, 4096), SystemError);
    auto again = Segment::open(name);
    EXPECT_EQ(again.size(), 8192U);
    EXPECT_EQ(again.data()[100], std::byte{42});
    EXPECT_EQ(again.inode(), first.inode());
}

TEST(Segment, TryOpenOfAMissingNameReturnsNulloptAndOpenThrows) {
    ScopedName name("missing");
    EXPECT_FALSE(Segment::try_open(name).has_value());
    EXPECT_THROW(Segment::open(name), SystemError);
}

TEST(Segment, OpenSmallerThanMinSizeIsLayoutError) {
    ScopedName name("minsize");
    auto seg = Segment::create(name, 4096);
    EXPECT_THROW(Segment::open(name, {}, 4097), LayoutError);
    EXPECT_THROW(Segment::try_open(name, {}, 1 << 20), LayoutError);
    EXPECT_EQ(Segment::open(name, {}, 4096).size(), 4096U);
}

TEST(Segment, OpenOfAnEmptyObjectIsLayoutErrorNotACrash) {
    // An object whose creator has not sized it yet (or never will).
    ScopedName name("empty");
    const int fd =
        ::shm_open(("/" + name.str()).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::close(fd);
    EXPECT_THROW(Segment::open(name, {}, 0), LayoutError);
}

TEST(Segment, CreatorAndOpenerSeeTheSameBytesThroughDifferentMappings) {
    ScopedName name("share");
    auto a = Segment::create(name, 65536);
    auto b = Segment::open(name);
    ASSERT_NE(a.data(), b.data());
    a.data()[65535] = std::byte{7};
    EXPECT_EQ(b.data()[65535], std::byte{7});
    EXPECT_EQ(a.inode(), b.inode());
    EXPECT_EQ(a.name(), name.str());
}

TEST(Segment, ReadOnlyOpenMapsTheContents) {
    ScopedName name("ro");
    auto a = Segment::create(name, 4096);
    a.data()[1] = std::byte{9};
    auto ro = Segment::open(name, SegmentOptions{.read_only = true});
    EXPECT_EQ(ro.data()[1], std::byte{9});
}

TEST(Segment, AllocateBackingIsFullyAllocatedAtCreate) {
    ScopedName name("full");
    constexpr std::size_t kSize = 4 << 20;
    auto seg = Segment::create(name, kSize);
    EXPECT_GE(static_cast<std::size_t>(stat_fd(seg.fd()).st_blocks) * 512, kSize);
}

TEST(Segment, SparseBackingAllocatesOnlyWhatIsAskedFor) {
    ScopedName name("sparse");
    constexpr std::size_t kSize = std::size_t{64} << 20;
    constexpr std::size_t kChunk = std::size_t{1} << 20;
    auto seg = Segment::create(name, kSize, {}, Backing::sparse);
    EXPECT_EQ(seg.size(), kSize);
    EXPECT_EQ(stat_fd(seg.fd()).st_blocks, 0) << "a sparse segment starts without memory";
    seg.allocate(8 * kChunk, kChunk);
    const auto blocks = static_cast<std::size_t>(stat_fd(seg.fd()).st_blocks) * 512;
    EXPECT_GE(blocks, kChunk);
    EXPECT_LT(blocks, 2 * kChunk);
    std::memset(seg.data() + 8 * kChunk, 0xEE, kChunk);
    EXPECT_EQ(seg.data()[9 * kChunk - 1], std::byte{0xEE});
    seg.allocate(0, 0);  // empty range: nothing to do
    EXPECT_EQ(static_cast<std::size_t>(stat_fd(seg.fd()).st_blocks) * 512, blocks);
}

TEST(Segment, AllocateOutsideTheSegmentIsRefusedAndNeverGrowsIt) {
    ScopedName name("outside");
    auto seg = Segment::create(name, 1 << 20, {}, Backing::sparse);
    EXPECT_THROW(seg.allocate((1 << 20) - 4096, 8192), std::out_of_range);
    EXPECT_THROW(seg.allocate((1 << 20) + 1, 0), std::out_of_range);
    EXPECT_THROW(seg.allocate(4096, SIZE_MAX), std::out_of_range);  // offset + bytes overflows
    EXPECT_EQ(stat_fd(seg.fd()).st_size, 1 << 20);
    EXPECT_NO_THROW(seg.allocate((1 << 20) - 4096, 4096));
}

TEST(Segment, CreateLargerThanShmIsShmExhaustedAndLeavesNothing) {
    struct statvfs vfs {};
    ASSERT_EQ(::statvfs("/dev/shm", &vfs), 0);
    const std::size_t total = static_cast<std::size_t>(vfs.f_blocks) * vfs.f_frsize;
    // tmpfs refuses at once a fallocate longer than the whole filesystem; on an unlimited one
    // this would instead eat the machine's memory.
    if (total == 0) GTEST_SKIP() << "/dev/shm has no size limit";
    ScopedName name("huge");
    try {
        (void)Segment::create(name, total * 2);
        ADD_FAILURE() << "creating " << total * 2 << " bytes on a " << total
                      << "-byte /dev/shm succeeded";
    } catch (const ShmExhausted& e) {
        EXPECT_NE(std::string(e.what()).find(std::to_string(total * 2) + " bytes"),
                  std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("bytes free in /dev/shm"), std::string::npos)
            << e.what();
        EXPECT_EQ(e.code(), Errc::shm_exhausted);
    }
    EXPECT_FALSE(exists(name)) << "the half-created object must be removed";
}

TEST(Segment, RemoveUnlinksTheNameButMappingsStayValid) {
    ScopedName name("remove");
    auto seg = Segment::create(name, 4096);
    EXPECT_TRUE(Segment::remove(name));
    EXPECT_FALSE(Segment::remove(name));
    EXPECT_FALSE(exists(name));
    EXPECT_FALSE(Segment::try_open(name).has_value());
    seg.data()[4095] = std::byte{1};  // still mapped
    EXPECT_EQ(seg.data()[4095], std::byte{1});
    // The name is free again: a new object, a new inode.
    auto again = Segment::create(name, 4096);
    EXPECT_NE(again.inode(), seg.inode());
}

TEST(Segment, MovedSegmentKeepsItsMapping) {
    ScopedName name("move");
    auto a = Segment::create(name, 4096);
    std::byte* const data = a.data();
    Segment b = std::move(a);
    EXPECT_EQ(b.data(), data);
    EXPECT_EQ(b.size(), 4096U);
}

TEST(Segment, OpenRefusesASegmentOwnedByAnotherUid) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "needs root to fchown a segment to another uid (euid " << ::geteuid()
                     << ")";
    }
    ScopedName name("owner");
    auto seg = Segment::create(name, 4096);
    ASSERT_EQ(::fchown(seg.fd(), 65534, 65534), 0) << std::strerror(errno);
    try {
        (void)Segment::open(name);
        ADD_FAILURE() << "opened a segment owned by uid 65534";
    } catch (const PermissionDenied& e) {
        EXPECT_NE(std::string(e.what()).find("uid 65534"), std::string::npos) << e.what();
        EXPECT_EQ(e.code(), Errc::permission_denied);
    }
    EXPECT_THROW((void)Segment::try_open(name), PermissionDenied);
}

// ---- fault points (SHMCTX_FAULT is read once per process, so each case is a helper) ----

class FaultPoint : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fault_points_enabled()) GTEST_SKIP() << "built without -DSHMCTX_FAULT_POINTS=ON";
    }

    /// Runs `shm_peer fault <point> <hits>` under SHMCTX_FAULT=<spec>; collects its lines.
    std::vector<std::string> run(const std::string& spec, const std::string& point, int hits,
                                 std::optional<int>* status) {
        child_ = test::spawn("shm_peer", {"fault", point, std::to_string(hits)},
                             {"SHMCTX_FAULT=" + spec});
        std::vector<std::string> lines;
        while (auto line = child_.read_line(5s)) lines.push_back(*line);
        *status = child_.wait(10s);
        return lines;
    }

    test::Child child_;
};

std::string join(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "|";
    return out;
}

bool killed_by(const std::optional<int>& st, int sig) {
    return st && WIFSIGNALED(*st) && WTERMSIG(*st) == sig;
}

TEST_F(FaultPoint, KillDiesAtTheFirstHit) {
    std::optional<int> st;
    const auto lines = run("p.one=kill", "p.one", 3, &st);
    EXPECT_TRUE(killed_by(st, SIGKILL)) << child_.describe();
    EXPECT_EQ(lines, (std::vector<std::string>{"before 1"})) << join(lines);
}

TEST_F(FaultPoint, KillAtNDiesAtTheNthHitOnly) {
    std::optional<int> st;
    const auto lines = run("p.one=kill@3", "p.one", 5, &st);
    EXPECT_TRUE(killed_by(st, SIGKILL)) << child_.describe();
    EXPECT_EQ(lines, (std::vector<std::string>{"before 1", "hit 1 corrupt=0", "before 2",
                                               "hit 2 corrupt=0", "before 3"}))
        << join(lines);
}

TEST_F(FaultPoint, ArmedTellsWhetherAPointIsConfiguredWithoutCountingAHit) {
    const auto armed = [&](const std::string& spec, const std::string& point) {
        child_ = test::spawn("shm_peer", {"armed", point}, {"SHMCTX_FAULT=" + spec});
        const auto line = child_.read_line(5s);
        (void)child_.wait(10s);
        return line.value_or("no answer: " + child_.describe());
    };
    EXPECT_EQ(armed("p.one=kill@3", "p.one"), "armed=1");
    EXPECT_EQ(armed("p.one=kill@3", "p.two"), "armed=0");
    EXPECT_EQ(armed("", "p.one"), "armed=0");
    // No hit counted: the kill on the first hit did not fire.
    EXPECT_EQ(armed("p.one=kill", "p.one"), "armed=1");
}

TEST_F(FaultPoint, AbortRaisesSigabrt) {
    std::optional<int> st;
    const auto lines = run("p.one=abort@2", "p.one", 3, &st);
    EXPECT_TRUE(killed_by(st, SIGABRT)) << child_.describe();
    EXPECT_EQ(lines.back(), "before 2") << join(lines);
}

TEST_F(FaultPoint, CorruptReturnsTrueOnTheChosenHitOnly) {
    std::optional<int> st;
    const auto lines = run("p.one=corrupt@2", "p.one", 3, &st);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << child_.describe();
    EXPECT_EQ(lines,
              (std::vector<std::string>{"before 1", "hit 1 corrupt=0", "before 2",
                                        "hit 2 corrupt=1", "before 3", "hit 3 corrupt=0", "done"}))
        << join(lines);
}

TEST_F(FaultPoint, CorruptWithoutHitNumberFiresOnEveryHitAndOtherPointsAreUntouched) {
    std::optional<int> st;
    auto lines = run("p.one=corrupt,p.two=kill", "p.one", 2, &st);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << child_.describe();
    EXPECT_EQ(lines, (std::vector<std::string>{"before 1", "hit 1 corrupt=1", "before 2",
                                               "hit 2 corrupt=1", "done"}))
        << join(lines);
    lines = run("p.two=kill", "p.one", 1, &st);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << child_.describe();
    EXPECT_EQ(lines.back(), "done");
}

TEST_F(FaultPoint, SeveralItemsForOnePointCountHitsSeparately) {
    std::optional<int> st;
    const auto lines = run("p.one=corrupt@1,p.one=kill@2", "p.one", 3, &st);
    EXPECT_TRUE(killed_by(st, SIGKILL)) << child_.describe();
    EXPECT_EQ(lines, (std::vector<std::string>{"before 1", "hit 1 corrupt=1", "before 2"}))
        << join(lines);
}

TEST_F(FaultPoint, StallBlocksAtTheChosenHit) {
    child_ = test::spawn("shm_peer", {"fault", "p.one", "3"}, {"SHMCTX_FAULT=p.one=stall@2"});
    ASSERT_TRUE(child_.expect_line("before 2")) << child_.describe();
    // The process must stay blocked at the point: no further output and no exit. Bounded
    // observation of an absence; a stall that does not stall prints "hit 2" at once.
    EXPECT_EQ(child_.read_line(300ms), std::nullopt);
    EXPECT_EQ(child_.wait(10ms), std::nullopt) << child_.describe();
    child_.kill(SIGKILL);
    EXPECT_TRUE(killed_by(child_.wait(10s), SIGKILL)) << child_.describe();
}

TEST_F(FaultPoint, MalformedSpecAbortsInsteadOfBeingIgnored) {
    for (const std::string spec :
         {"p.one=explode", "p.one", "=kill", "p.one=kill@0", "p.one=kill@x", "p.one=corrupt@"}) {
        std::optional<int> st;
        const auto lines = run(spec, "p.one", 1, &st);
        EXPECT_TRUE(killed_by(st, SIGABRT)) << spec << ": " << child_.describe();
        EXPECT_EQ(lines, (std::vector<std::string>{"before 1"})) << spec << ": " << join(lines);
    }
}

}  // namespace
}  // namespace shmctx::shm
