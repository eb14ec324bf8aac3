// emu_registry.h — the C interface of the emulated kernels, used from Python through ctypes.
//
// A generated translation unit (see build.py) includes the backends/cuda/*.cu files, then this header,
// then lists every `extern "C" __global__` kernel it found with SC_EMU_ENTRY and calls
// SC_EMU_DEFINE_API. A kernel is launched like cuLaunchKernel: args[i] points at the i-th parameter's
// value. Each kernel also publishes its parameter signature (e.g. "pcf4,pi4,i8"), so the Python side
// can refuse a launch whose arguments would be marshalled wrongly on the GPU too.
#pragma once
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sc_emu {

template <typename T> struct TypeCode;
template <> struct TypeCode<float> { static constexpr const char* code = "f4"; };
template <> struct TypeCode<double> { static constexpr const char* code = "f8"; };
template <> struct TypeCode<int> { static constexpr const char* code = "i4"; };
template <> struct TypeCode<unsigned int> { static constexpr const char* code = "u4"; };
template <> struct TypeCode<long long> { static constexpr const char* code = "i8"; };
template <> struct TypeCode<unsigned long long> { static constexpr const char* code = "u8"; };

// "p" pointer, "c" to const, then the element code; scalars are just their code.
template <typename A>
std::string arg_code() {
  if constexpr (std::is_pointer_v<A>) {
    using P = std::remove_pointer_t<A>;
    return std::string("p") + (std::is_const_v<P> ? "c" : "") + TypeCode<std::remove_cv_t<P>>::code;
  } else {
    return TypeCode<std::remove_cv_t<A>>::code;
  }
}

template <auto F> struct Invoker;
template <typename... A, void (*F)(A...)>
struct Invoker<F> {
  template <std::size_t... I>
  static void call(void** args, std::index_sequence<I...>) {
    F(*static_cast<std::remove_cv_t<A>*>(args[I])...);
  }
  static void invoke(void** args) { call(args, std::index_sequence_for<A...>{}); }
  static std::string signature() {
    std::string s;
    ((s += arg_code<A>() + ","), ...);
    if (!s.empty()) s.pop_back();
    return s;
  }
};

struct Entry {
  const char* name;
  void (*invoke)(void**);
  std::string (*signature)();
};

}  // namespace sc_emu

#define SC_EMU_ENTRY(kernel) \
  ::sc_emu::Entry{#kernel, &::sc_emu::Invoker<&kernel>::invoke, &::sc_emu::Invoker<&kernel>::signature}

#define SC_EMU_EXPORT extern "C" __attribute__((visibility("default")))

#define SC_EMU_DEFINE_API(table)                                                                   \
  static std::vector<std::string> sc_emu_signatures_;                                              \
  SC_EMU_EXPORT int sc_emu_kernel_count() { return int(sizeof(table) / sizeof(table[0])); }           \
  SC_EMU_EXPORT const char* sc_emu_kernel_name(int i) { return table[i].name; }                       \
  SC_EMU_EXPORT const char* sc_emu_kernel_signature(int i) {                                          \
    if (sc_emu_signatures_.empty())                                                                \
      for (const auto& e : table) sc_emu_signatures_.push_back(e.signature());                     \
    return sc_emu_signatures_[i].c_str();                                                          \
  }                                                                                                \
  SC_EMU_EXPORT const char* sc_emu_last_error() { return ::sc_emu::error.c_str(); }                   \
  SC_EMU_EXPORT void* sc_emu_fault_address() { return const_cast<void*>(::sc_emu::fault_address); }   \
  SC_EMU_EXPORT void* sc_emu_alloc(unsigned long long nbytes, int pattern) {                        \
    return ::sc_emu::guarded_alloc(std::size_t(nbytes), (unsigned char)pattern);                     \
  }                                                                                                \
  SC_EMU_EXPORT int sc_emu_intact(void* data) { return ::sc_emu::guarded_intact((char*)data); }     \
  SC_EMU_EXPORT void sc_emu_free(void* data) { ::sc_emu::guarded_free((char*)data); }               \
  SC_EMU_EXPORT int sc_emu_launch(int i, const unsigned* grid, const unsigned* block, void** args,    \
                               unsigned long long seed, int yield_atomics) {                       \
    return ::sc_emu::launch(table[i].invoke, args, dim3(grid[0], grid[1], grid[2]),                \
                            dim3(block[0], block[1], block[2]), seed, yield_atomics != 0);         \
  }
