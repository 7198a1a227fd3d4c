// Exhaustion of /dev/shm, for real: the `shm_peer exhaust` helper mounts a 1 MiB tmpfs over
// /dev/shm in a private mount namespace (needs root or CAP_SYS_ADMIN; skipped otherwise) and
// reports how Segment behaves there. A SIGBUS would kill the helper: its exit status is checked.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "process.hpp"

namespace shmctx::shm {
namespace {

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

TEST(SegmentXproc, FullShmIsShmExhaustedAtCreateAndAllocateNeverSigbus) {
    auto child = test::spawn("shm_peer", {"exhaust", test::unique_ns("exh")});
    std::vector<std::string> lines;
    while (auto line = child.read_line()) lines.push_back(*line);
    const auto st = child.wait();
    std::string transcript;
    for (const auto& l : lines) transcript += "  " + l + "\n";
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0)
        << "helper " << child.describe() << " (signal 7 would be a SIGBUS); output:\n"
        << transcript;
    ASSERT_FALSE(lines.empty()) << "helper printed nothing";
    if (starts_with(lines[0], "skip")) {
        GTEST_SKIP() << "cannot mount a private tmpfs here (needs root or CAP_SYS_ADMIN): "
                     << lines[0];
    }
    ASSERT_EQ(lines.size(), 9U) << transcript;
    EXPECT_TRUE(starts_with(lines[0], "mounted free=")) << transcript;
    // 1. create of 4 MiB on a 1 MiB tmpfs: ShmExhausted naming the size and the free bytes,
    //    and the half-created object is gone.
    EXPECT_TRUE(starts_with(lines[1], "create ShmExhausted: ")) << transcript;
    EXPECT_NE(lines[1].find("4194304 bytes"), std::string::npos) << lines[1];
    EXPECT_NE(lines[1].find("bytes free in /dev/shm"), std::string::npos) << lines[1];
    EXPECT_EQ(lines[2], "leftover 0") << transcript;
    // 2. sparse segment: allocate() inside the room works, beyond it is ShmExhausted, and the
    //    part already backed stays writable.
    EXPECT_EQ(lines[3], "sparse created size=4194304") << transcript;
    EXPECT_EQ(lines[4], "allocate small ok") << transcript;
    EXPECT_TRUE(starts_with(lines[5], "allocate ShmExhausted: ")) << transcript;
    EXPECT_NE(lines[5].find("at offset 262144"), std::string::npos) << lines[5];
    EXPECT_EQ(lines[6], "touch ok 1") << transcript;
    EXPECT_EQ(lines[7], "leftover 0") << transcript;
    EXPECT_EQ(lines[8], "done") << transcript;
}

}  // namespace
}  // namespace shmctx::shm
