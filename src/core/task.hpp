// detail::Task: a move-only, type-erased `void()` callable for work handed to another thread
// (CancellerThread::post, EndpointPool::try_submit).
//
// Why not std::function: the work an endpoint thread runs owns its Start message and the
// context's state, which need not be copyable; std::function requires a copyable target.
// C++23's std::move_only_function is not available at -std=c++20.
//
// Thread-safety: single thread (a value type; moved across threads by its owner).
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace shmctx::detail {

class Task {
public:
    Task() noexcept = default;

    /// Wraps any callable `f()` (a lambda, a std::function, a function pointer). Allocates once.
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Task> &&
                                                std::is_invocable_v<std::decay_t<F>&>>>
    Task(F&& f)  // NOLINT(google-explicit-constructor): post([&] { ... }) reads best
        : impl_(std::make_unique<Impl<std::decay_t<F>>>(std::forward<F>(f))) {}

    Task(Task&&) noexcept = default;
    Task& operator=(Task&&) noexcept = default;
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() = default;

    explicit operator bool() const noexcept { return impl_ != nullptr; }

    /// Runs the callable; precondition: not empty. Exceptions propagate to the caller.
    void operator()() { impl_->run(); }

private:
    struct Base {
        Base() = default;
        Base(const Base&) = delete;
        Base& operator=(const Base&) = delete;
        virtual ~Base() = default;
        virtual void run() = 0;
    };
    template <class F>
    struct Impl final : Base {
        template <class G>
        explicit Impl(G&& g) : f(std::forward<G>(g)) {}
        void run() override { f(); }
        F f;
    };

    std::unique_ptr<Base> impl_;
};

}  // namespace shmctx::detail
