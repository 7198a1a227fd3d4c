// Links against the installed shmctx and checks the versions it reports.
#include <cstdio>
#include <shmctx/version.hpp>

int main() {
    const shmctx::Version v = shmctx::version();
    std::printf("shmctx %s (%u.%u.%u), layout %u, protocol %u: find_package works\n", v.text,
                v.major, v.minor, v.patch, shmctx::layout_version(), shmctx::protocol_version());
    const bool consistent = shmctx::library_version() == v.text && shmctx::layout_version() > 0;
    return consistent ? 0 : 1;
}
