// A CPU emulator for the kernels of kernels/backprop.cu, for tests without a GPU.
//
// Each block runs its threads as OS threads (barrier = __syncthreads, `static` = __shared__,
// one block at a time), or in one loop when the kernel has no barrier. Launches take their
// arguments as cuLaunchKernel does: an array of pointers, one to each parameter's value, so
// the Python side must pass exactly the parameter types the kernel declares.
// Built by tests/emulator/fake_cupy.py with: g++ -std=c++20 -O1 -shared -fPIC -pthread.
#include <barrier>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using std::exp; using std::expm1; using std::fabs; using std::log; using std::log1p;
using std::sqrt; using std::tanh;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* block_barrier = nullptr;

#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() block_barrier->arrive_and_wait()

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
    for (unsigned by = 0; by < grid[1]; ++by)
        for (unsigned bx = 0; bx < grid[0]; ++bx) {
            auto body = [&](unsigned t) {
                blockIdx = {bx, by, 0};
                threadIdx = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                call(kernel, args, std::index_sequence_for<Args...>{});
            };
            if (!barrier) {
                for (unsigned t = 0; t < threads; ++t) body(t);
                continue;
            }
            std::barrier<> sync(threads);
            block_barrier = &sync;
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; ++t) pool.emplace_back(body, t);
            for (auto& th : pool) th.join();
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
