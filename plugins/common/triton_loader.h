// The loader of the embedded Triton cubins and the launch seam the plugins call them through.
// Built without TensorRT headers (libresq_triton.so) so CI and a bare GPU machine can use it. It
// links the CUDA runtime only, never libcuda: the runtime reaches the driver on its first call, so
// the library loads and lists its kernels on machines without a driver (engines are built there).
//
// Lifecycle: prepare(device) loads the cubins that fit the device's SM and sets their shared memory
// limits; call it outside enqueue (TensorRT's attachToContext, a tool's start-up), never during
// CUDA-graph capture. launch() only looks up what prepare() loaded (and loads on demand when the
// stream is not capturing). Every function returns a ResQStatus and never exits; the message of the
// last error of this thread is last_error().
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "resq_layout.h"
#include "triton_table.h"

namespace resq {
namespace triton {

// One kernel argument as the launch passes it: its bytes (a pointer's value, an int32, a float).
struct KernelArg {
  const void* value;
  uint32_t bytes;
};
template <typename T>
KernelArg arg(const T& v) {
  return KernelArg{&v, static_cast<uint32_t>(sizeof(T))};
}

// The embedded table and its queries; no CUDA call.
const ResQTritonKernel* table(int* count);
// The row of `name` that runs on SM major.minor: the exact SM, else the nearest lower SM of the
// same major whose cubin is not arch-specific (sm_86 runs on 8.7 and 8.9; sm_90a only on 9.0;
// sm_120 on 12.1). nullptr and a message naming what is embedded when none fits.
const ResQTritonKernel* select(const char* name, int major, int minor, std::string* error);
// Argument count, sizes and the divisibility the cubin was compiled assuming; RESQ_ERR_INVALID
// and a message otherwise (a misaligned pointer would be undefined behaviour on the GPU).
int check_args(const ResQTritonKernel& k, const KernelArg* args, int nargs, std::string* error);

// The seam: every Triton launch of the plugins goes through one of these. grid counts programs;
// the block (num_warps * 32) and the dynamic shared memory are the cubin's, from the table.
class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual int launch(const char* name, dim3 grid, cudaStream_t stream, const KernelArg* args, int nargs) noexcept = 0;
  // fills workspace bytes (a zero operand): cudaMemsetAsync, or memset of the host buffer when recording
  virtual int memset(void* ptr, int value, size_t bytes, cudaStream_t stream) noexcept = 0;
  // copies device bytes (the KV cache's past into present where they are not one buffer):
  // cudaMemcpyAsync, or memcpy of the host buffers when recording
  virtual int copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) noexcept = 0;
};

// A constexpr the named configuration was compiled with (its tile sizes: the launch grid follows the
// cubin, not a copy of the policy); -1 when the name or the constexpr is not embedded.
int constexpr_of(const char* name, const char* constexpr_name);
// An integer of the launch policy compiled in with the cubins (resq_export/kernels/launch.py's
// upper-case constants, e.g. SPLIT_MAX_M, DECODE_MAX_M); -1 when absent.
int policy_of(const char* name);

// The message of this thread's last failure of any function here (and of the ops' layer, triton_op.h).
const char* last_error();
// Sets that message; returns `status` (an error of the ops' layer: `return fail(RESQ_ERR_INVALID, ...)`).
int fail(int status, std::string message);

// The CUDA implementation (cudaLibraryLoadData / cudaLibraryGetKernel / cudaLaunchKernel).
class CudaLauncher : public Launcher {
 public:
  // Loads every embedded kernel that has a cubin for this device's SM (all names when `names` is
  // empty, else exactly those, each of which must fit). Idempotent.
  int prepare(int device, const std::vector<std::string>& names = {}) noexcept;
  int launch(const char* name, dim3 grid, cudaStream_t stream, const KernelArg* args, int nargs) noexcept override;
  int memset(void* ptr, int value, size_t bytes, cudaStream_t stream) noexcept override;
  int copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) noexcept override;
};

// Records each launch (name, grid, block, shared memory, the argument bytes in order) instead of
// running it: the CPU test of the plugins' enqueue replays the records with Triton's interpreter.
struct LaunchRecord {
  std::string name;
  unsigned grid[3];
  std::vector<unsigned char> args;  // the arguments' bytes, concatenated in launch order
  std::vector<uint32_t> arg_bytes;
};
class RecordingLauncher : public Launcher {
 public:
  explicit RecordingLauncher(int sm_major = 8, int sm_minor = 9) : major_(sm_major), minor_(sm_minor) {}
  int launch(const char* name, dim3 grid, cudaStream_t stream, const KernelArg* args, int nargs) noexcept override;
  int memset(void* ptr, int value, size_t bytes, cudaStream_t stream) noexcept override;
  int copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) noexcept override;
  std::vector<LaunchRecord> records;

 private:
  int major_, minor_;
};

// The process-wide launcher the plugins use: the CUDA one unless a test installs another.
Launcher& launcher();
void set_launcher(Launcher* l);  // nullptr restores the CUDA launcher
CudaLauncher& cuda_launcher();

}  // namespace triton
}  // namespace resq

// The C API (ctypes: resq_export/native/triton.py).
#ifdef __cplusplus
#define RESQ_TAPI extern "C" __attribute__((visibility("default")))
#endif
RESQ_TAPI int resq_triton_abi_version(void);
RESQ_TAPI int resq_triton_kernel_count(void);
RESQ_TAPI const ResQTritonKernel* resq_triton_kernel(int index);
RESQ_TAPI const char* resq_triton_versions(void);  // "triton 3.9.0; ptxas 13.0 (V13.0.88)"
RESQ_TAPI const char* resq_triton_policy(void);    // "SPLIT_MAX_M=4,DECODE_MAX_M=16,..."
// Index of the row `select` picks for SM major.minor, or -1 (resq_triton_last_error() says why).
RESQ_TAPI int resq_triton_select(const char* name, int major, int minor);
RESQ_TAPI const char* resq_triton_last_error(void);
// CudaLauncher::prepare on `device` (-1: the current one) for every embedded kernel (a GPU tool's
// start-up, the plugins' attachToContext).
RESQ_TAPI int resq_triton_prepare(int device);
// One launch through the process-wide launcher: arg_values[i] points at arg_bytes[i] bytes.
RESQ_TAPI int resq_triton_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, void* stream,
                                 const void* const* arg_values, const uint32_t* arg_bytes, int nargs);
// A recording launcher installed as the process-wide one (tests); its records read back by index.
RESQ_TAPI void* resq_triton_record_begin(int sm_major, int sm_minor);
RESQ_TAPI int resq_triton_record_count(void* recorder);
// name, grid[3], the argument bytes (*args, *args_bytes); pointers valid until record_end.
RESQ_TAPI int resq_triton_record_get(void* recorder, int index, const char** name, unsigned* grid,
                                     const unsigned char** args, size_t* args_bytes);
RESQ_TAPI void resq_triton_record_end(void* recorder);  // uninstalls and frees it
