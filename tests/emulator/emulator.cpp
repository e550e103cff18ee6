// A CPU emulator for the kernels of kernels/backprop.cu, for tests without a GPU.
//
// Each block runs its threads as fibers (ucontext) on one OS thread: __syncthreads switches
// back to a round-robin scheduler, so every thread of the block reaches the barrier before any
// passes it; `static` stands for __shared__ (one block at a time). Kernels without a barrier
// run their threads in one loop. Launches take their
// arguments as cuLaunchKernel does: an array of pointers, one to each parameter's value, so
// the Python side must pass exactly the parameter types the kernel declares.
// Built by tests/emulator/fake_cupy.py with: g++ -std=c++17 -O1 -shared -fPIC.
#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

using std::exp; using std::expm1; using std::fabs; using std::frexp; using std::ldexp;
using std::log; using std::log1p; using std::sqrt; using std::tanh;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
dim3 threadIdx, blockIdx, blockDim, gridDim;

static ucontext_t scheduler;
static std::vector<ucontext_t> fibers;
static std::vector<char> done;
static std::vector<std::vector<char>> stacks;
static std::function<void(unsigned)> fiber_body;
static unsigned current = 0;

static void sync_threads() { swapcontext(&fibers[current], &scheduler); }

static void fiber_entry(int t) {
    fiber_body((unsigned)t);
    done[t] = 1;                                   // then uc_link returns to the scheduler
}

#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() sync_threads()

#include KERNEL_SOURCE

template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
}

template <typename... Args>
void launch(void (*kernel)(Args...), bool barrier, const unsigned* grid, const unsigned* block,
            void** args) {
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    const unsigned threads = block[0] * block[1] * block[2];
    for (unsigned block_index = 0; block_index < grid[0] * grid[1] * grid[2]; ++block_index) {
        blockIdx = {block_index % grid[0], (block_index / grid[0]) % grid[1],
                    block_index / (grid[0] * grid[1])};
        auto set_thread = [&](unsigned t) {
            threadIdx = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
        };
        if (!barrier) {
            for (unsigned t = 0; t < threads; ++t) {
                set_thread(t);
                call(kernel, args, std::index_sequence_for<Args...>{});
            }
            continue;
        }
        fiber_body = [&](unsigned) { call(kernel, args, std::index_sequence_for<Args...>{}); };
        fibers.assign(threads, ucontext_t{});
        done.assign(threads, 0);
        stacks.resize(threads);
        for (unsigned t = 0; t < threads; ++t) {
            stacks[t].resize(1 << 16);
            getcontext(&fibers[t]);
            fibers[t].uc_stack.ss_sp = stacks[t].data();
            fibers[t].uc_stack.ss_size = stacks[t].size();
            fibers[t].uc_link = &scheduler;
            makecontext(&fibers[t], (void (*)())fiber_entry, 1, (int)t);
        }
        for (bool running = true; running;) {      // round robin until all have returned
            running = false;
            for (unsigned t = 0; t < threads; ++t) {
                if (done[t]) continue;
                current = t;
                set_thread(t);
                swapcontext(&scheduler, &fibers[t]);
                running = running || !done[t];
            }
        }
    }
}

#include "instances.inc"   // generated: LAUNCHERS, one entry per name expression

extern "C" int emulate(const char* name, const unsigned* grid, const unsigned* block,
                       void** args) {
    for (auto& entry : LAUNCHERS)
        if (std::strcmp(entry.first, name) == 0) {
            entry.second(grid, block, args);
            return 0;
        }
    return 1;
}
