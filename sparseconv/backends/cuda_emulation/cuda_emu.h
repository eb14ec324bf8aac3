// cuda_emu.h — run sparseconv's CUDA kernels on the CPU, for tests on machines without a GPU.
//
// Force-included (g++ -include cuda_emu.h) in front of the unchanged backends/cuda/*.cu files. It
// supplies what NVRTC/nvcc would: the CUDA keywords, blockIdx/threadIdx/blockDim/gridDim, atomics,
// __syncthreads (and its _or/_and/_count forms), and a launcher that walks the grid.
//
// Execution model. Blocks run one after another. Inside a block every thread is a cooperative fiber
// with its own stack; a fiber runs until it reaches a barrier, an atomic (optional yield point), or
// its end, then the scheduler moves on. A barrier is released when every thread of the block waits
// at it; it is an error (reported, not hung) if some threads already exited or wait at a different
// __syncthreads. Within a block, threads are resumed in index order (seed 0), reversed (seed 1) or
// a fresh pseudo-random order each round (other seeds); blocks likewise. `__shared__` becomes
// `static`: one copy per kernel instantiation, shared by the threads of the block that runs.
//
// What this proves and does not: see docs/gpu.md. In short, it checks indexing, bounds, tiling,
// barrier placement (divergent or mismatched barriers are reported), block-uniformity of
// __syncthreads_or results, order independence of results across schedules, and atomicCAS retry
// logic under interleaving; it cannot see data races between barriers, memory-ordering or
// visibility problems, warp-level behaviour, or floating-point contraction (FMA) differences.
#pragma once
#if !defined(__cplusplus) || __cplusplus < 201703L
#error "cuda_emu.h needs C++17 (g++ -std=c++17)"
#endif

#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(SC_EMU_UCONTEXT)
#define SC_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

// ---- CUDA vocabulary ------------------------------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};

inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

namespace sc_emu {

enum State { RUNNABLE = 0, AT_BARRIER = 1, DONE = 2 };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer (asm switch)
#ifndef SC_EMU_ASM_SWITCH
  ucontext_t ctx;
#endif
  char* stack = nullptr;
  int state = DONE;
  uint3 tid{0, 0, 0};
  int line = 0, op = 0, pred = 0, result = 0;
};

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::uint64_t kStackCanary = 0x5CA1AB1EDEADBEEFull;

inline std::vector<Fiber> fibers;
inline int current = -1;
inline bool yield_atomics = false;
inline void (*invoke)(void**) = nullptr;
inline void** invoke_args = nullptr;
inline std::string error;
#ifdef SC_EMU_ASM_SWITCH
inline void* sched_sp = nullptr;
#else
inline ucontext_t sched_ctx;
#endif

}  // namespace sc_emu

#ifdef SC_EMU_ASM_SWITCH
// sc_emu_switch(&save_sp, new_sp): push the callee-saved registers, save rsp, load new_sp, pop, ret.
extern "C" void sc_emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .p2align 4
    .globl sc_emu_switch
    .hidden sc_emu_switch
    .type sc_emu_switch, @function
sc_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size sc_emu_switch, .-sc_emu_switch
)");
#endif

namespace sc_emu {

inline void suspend() {  // fiber -> scheduler
#ifdef SC_EMU_ASM_SWITCH
  sc_emu_switch(&fibers[current].sp, sched_sp);
#else
  swapcontext(&fibers[current].ctx, &sched_ctx);
#endif
}

inline void resume(int t) {  // scheduler -> fiber t
  current = t;
  threadIdx = fibers[t].tid;
#ifdef SC_EMU_ASM_SWITCH
  sc_emu_switch(&sched_sp, fibers[t].sp);
#else
  swapcontext(&sched_ctx, &fibers[t].ctx);
#endif
}

[[noreturn]] inline void trampoline() {
  invoke(invoke_args);
  fibers[current].state = DONE;
  suspend();
  std::abort();  // a finished fiber is never resumed
}

inline void start(Fiber& f) {
  f.state = RUNNABLE;
#ifdef SC_EMU_ASM_SWITCH
  auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStackBytes) & ~std::uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                  // trampoline's (unused) return address
  *--sp = reinterpret_cast<void*>(&trampoline);     // popped by `ret`: rsp % 16 == 8 at entry
  for (int i = 0; i < 6; ++i) *--sp = nullptr;      // rbp rbx r12 r13 r14 r15
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&trampoline), 0);
#endif
}

// __syncthreads / __syncthreads_or / _and / _count: op 0 / 1 / 2 / 3.
inline int barrier(int line, int op, int pred) {
  Fiber& f = fibers[current];
  f.state = AT_BARRIER;
  f.line = line;
  f.op = op;
  f.pred = pred != 0;
  suspend();
  return fibers[current].result;
}

inline void atomic_point() {
  if (yield_atomics) suspend();  // stays RUNNABLE: lets other threads of the block interleave here
}

struct Rng {  // xorshift64*
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

template <typename V>
inline void order(V& v, std::uint64_t seed, Rng& rng) {
  if (seed == 0) return;
  if (seed == 1) {
    for (std::size_t i = 0, j = v.size(); i + 1 < j; ++i, --j) std::swap(v[i], v[j - 1]);
    return;
  }
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.next() % i]);
}

inline int fail(const std::string& message) {
  error = message;
  return 1;
}

// ---- guarded buffers: every kernel argument lives between two inaccessible pages -------------------
// Layout: [PROT_NONE page][slack filled with `pattern`][data ... ends at a page boundary][PROT_NONE page].
// An access past the end (or far before the start) faults and the launch reports it; a write into the
// slack just before the data is found by the pattern check after the launch.
struct Guarded {
  char* base;
  std::size_t total;
  std::size_t slack;  // bytes of pattern between the leading guard page and the data
  unsigned char pattern;
};
inline std::map<char*, Guarded> guarded;  // data pointer -> allocation

inline std::size_t page_size() { return std::size_t(sysconf(_SC_PAGESIZE)); }

inline char* guarded_alloc(std::size_t nbytes, unsigned char pattern) {
  const std::size_t page = page_size();
  const std::size_t inner = ((nbytes + 256 + page - 1) / page) * page;  // >= 256 bytes of slack
  const std::size_t total = inner + 2 * page;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(mem);
  mprotect(base, page, PROT_NONE);
  mprotect(base + page + inner, page, PROT_NONE);
  char* data = base + page + inner - nbytes;
  std::memset(base + page, pattern, inner - nbytes);
  guarded[data] = Guarded{base, total, inner - nbytes, pattern};
  return data;
}

// 1 if the slack before `data` still holds its pattern, 0 if something wrote there, -1 if unknown.
inline int guarded_intact(char* data) {
  auto it = guarded.find(data);
  if (it == guarded.end()) return -1;
  const Guarded& g = it->second;
  for (std::size_t i = 0; i < g.slack; ++i)
    if (static_cast<unsigned char>(data[-1 - std::ptrdiff_t(i)]) != g.pattern) return 0;
  return 1;
}

inline void guarded_free(char* data) {
  auto it = guarded.find(data);
  if (it == guarded.end()) return;
  munmap(it->second.base, it->second.total);
  guarded.erase(it);
}

// ---- faults inside a launch are reported, not fatal ------------------------------------------------
inline sigjmp_buf fault_recover;
inline void* volatile fault_address = nullptr;
inline volatile int fault_signal = 0;
alignas(16) inline char fault_stack[64 * 1024];

inline void on_fault(int sig, siginfo_t* info, void*) {
  fault_address = info->si_addr;
  fault_signal = sig;
  siglongjmp(fault_recover, 1);
}

inline int run_grid(void (*fn)(void**), void** args, dim3 grid, dim3 block, std::uint64_t seed, bool yield_at_atomics);

// Run `fn(args)` on every thread of grid x block. Returns 0, or 1 with `error` set.
inline int launch(void (*fn)(void**), void** args, dim3 grid, dim3 block, std::uint64_t seed,
                  bool yield_at_atomics) {
  error.clear();
  fault_address = nullptr;
  fault_signal = 0;
  struct sigaction action, old_segv, old_bus;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = &on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  stack_t alt, old_alt;
  alt.ss_sp = fault_stack;
  alt.ss_size = sizeof fault_stack;
  alt.ss_flags = 0;
  sigaltstack(&alt, &old_alt);
  sigaction(SIGSEGV, &action, &old_segv);
  sigaction(SIGBUS, &action, &old_bus);
  volatile int rc = 1;
  if (sigsetjmp(fault_recover, 1) == 0) {
    rc = run_grid(fn, args, grid, block, seed, yield_at_atomics);
  } else {
    char buf[160];
    std::snprintf(buf, sizeof buf, "invalid memory access (signal %d) at address %p", int(fault_signal),
                  const_cast<void*>(fault_address));
    rc = fail(buf);
  }
  sigaction(SIGSEGV, &old_segv, nullptr);
  sigaction(SIGBUS, &old_bus, nullptr);
  sigaltstack(&old_alt, nullptr);
  return rc;
}

inline int run_grid(void (*fn)(void**), void** args, dim3 grid, dim3 block, std::uint64_t seed,
                    bool yield_at_atomics) {
  const std::uint64_t nthreads = std::uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || nthreads == 0)
    return fail("invalid configuration: a grid or block dimension is 0 (CUDA refuses such a launch)");
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    return fail("invalid configuration: grid exceeds (2^31-1, 65535, 65535)");
  if (block.x > 1024u || block.y > 1024u || block.z > 64u || nthreads > 1024u)
    return fail("invalid configuration: block exceeds 1024 threads or (1024, 1024, 64)");
  const int n = int(nthreads);
  while (fibers.size() < std::size_t(n)) {
    Fiber f;
    f.stack = static_cast<char*>(std::malloc(kStackBytes));
    if (!f.stack) return fail("out of memory for fiber stacks");
    std::memcpy(f.stack, &kStackCanary, sizeof kStackCanary);
    fibers.push_back(f);
  }
  gridDim = grid;
  blockDim = block;
  invoke = fn;
  invoke_args = args;
  yield_atomics = yield_at_atomics;
  Rng rng(seed);

  const std::uint64_t nblocks = std::uint64_t(grid.x) * grid.y * grid.z;
  std::vector<std::uint64_t> blocks(nblocks);
  for (std::uint64_t b = 0; b < nblocks; ++b) blocks[b] = b;
  order(blocks, seed, rng);
  std::vector<int> threads(n);

  for (std::uint64_t b : blocks) {
    blockIdx = uint3{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (std::uint64_t(grid.x) * grid.y))};
    for (int t = 0; t < n; ++t) {
      fibers[t].tid = uint3{unsigned(t % block.x), unsigned((t / block.x) % block.y), unsigned(t / (block.x * block.y))};
      start(fibers[t]);
      threads[t] = t;
    }
    for (;;) {
      order(threads, seed, rng);
      for (int t : threads)
        if (fibers[t].state == RUNNABLE) resume(t);
      int done = 0, waiting = 0;
      for (int t = 0; t < n; ++t) {
        done += fibers[t].state == DONE;
        waiting += fibers[t].state == AT_BARRIER;
      }
      if (done == n) break;
      if (done + waiting < n) continue;  // some threads yielded at an atomic: another round
      // every live thread waits at a barrier
      int first = -1;
      for (int t = 0; t < n && first < 0; ++t)
        if (fibers[t].state == AT_BARRIER) first = t;
      const Fiber& w = fibers[first];
      if (done > 0) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "divergent __syncthreads: %d of %d threads of block (%u,%u,%u) exited while the rest wait at line %d",
                      done, n, blockIdx.x, blockIdx.y, blockIdx.z, w.line);
        return fail(buf);
      }
      int count = 0;
      for (int t = 0; t < n; ++t) {
        const Fiber& f = fibers[t];
        if (f.line != w.line || f.op != w.op) {
          char buf[200];
          std::snprintf(buf, sizeof buf, "mismatched barriers in block (%u,%u,%u): thread %d waits at line %d, thread %d at line %d",
                        blockIdx.x, blockIdx.y, blockIdx.z, first, w.line, t, f.line);
          return fail(buf);
        }
        count += f.pred;
      }
      const int result = w.op == 1 ? (count > 0) : w.op == 2 ? (count == n) : w.op == 3 ? count : 0;
      for (int t = 0; t < n; ++t) {
        fibers[t].result = result;
        fibers[t].state = RUNNABLE;
      }
    }
    for (int t = 0; t < n; ++t) {
      if (std::memcmp(fibers[t].stack, &kStackCanary, sizeof kStackCanary) != 0)
        return fail("fiber stack overflow (raise sc_emu::kStackBytes)");
    }
  }
  return 0;
}

}  // namespace sc_emu

// ---- barriers and atomics -------------------------------------------------------------------------
#define __syncthreads() ((void)::sc_emu::barrier(__LINE__, 0, 0))
#define __syncthreads_or(p) ::sc_emu::barrier(__LINE__, 1, (p))
#define __syncthreads_and(p) ::sc_emu::barrier(__LINE__, 2, (p))
#define __syncthreads_count(p) ::sc_emu::barrier(__LINE__, 3, (p))

template <typename T>
inline T sc_emu_atomic_cas(T* address, T compare, T value) {
  ::sc_emu::atomic_point();
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <typename T>
inline T sc_emu_atomic_add(T* address, T value) {
  ::sc_emu::atomic_point();
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
inline T sc_emu_atomic_exch(T* address, T value) {
  ::sc_emu::atomic_point();
  const T old = *address;
  *address = value;
  return old;
}
inline int atomicCAS(int* a, int c, int v) { return sc_emu_atomic_cas(a, c, v); }
inline unsigned int atomicCAS(unsigned int* a, unsigned int c, unsigned int v) { return sc_emu_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
  return sc_emu_atomic_cas(a, c, v);
}
inline int atomicAdd(int* a, int v) { return sc_emu_atomic_add(a, v); }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) { return sc_emu_atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return sc_emu_atomic_add(a, v); }
inline float atomicAdd(float* a, float v) { return sc_emu_atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return sc_emu_atomic_add(a, v); }
inline int atomicExch(int* a, int v) { return sc_emu_atomic_exch(a, v); }
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) { return sc_emu_atomic_exch(a, v); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
