// The embedded Triton cubins: selection by SM, argument checks, loading through the CUDA runtime's
// library API (no libcuda link: the runtime finds the driver on first use), the launch seam.
#include "triton_loader.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "resq_ops.h"

// the generated table (build/plugins/triton/triton_kernels.cpp)
extern const ResQTritonKernel* const resq_triton_table;
extern const int resq_triton_table_size;
extern const char* const resq_triton_versions_text;
extern const char* const resq_triton_policy_text;

namespace resq {
namespace triton {
namespace {

thread_local std::string g_error = "no error";

}  // namespace

int fail(int status, std::string message) {
  g_error = std::move(message);
  return status;
}

namespace {

int cuda_fail(cudaError_t e, const std::string& what) {
  const int status = e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? RESQ_ERR_NO_DEVICE : RESQ_ERR_CUDA;
  return fail(status, what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

struct Param {
  std::string name;
  uint32_t bytes;
  bool div16;
  bool scratch;
};

uint32_t type_bytes(const std::string& type) {
  if (!type.empty() && type[0] == '*') return 8;
  static const std::map<std::string, uint32_t> sizes = {
      {"i1", 1}, {"i8", 1}, {"u8", 1}, {"i16", 2}, {"u16", 2}, {"i32", 4}, {"u32", 4}, {"i64", 8},
      {"u64", 8}, {"fp16", 2}, {"bf16", 2}, {"fp32", 4}, {"fp64", 8}};
  auto it = sizes.find(type);
  return it == sizes.end() ? 0 : it->second;
}

// "name:type[/16],..." of a row, parsed once per row
const std::vector<Param>& params_of(const ResQTritonKernel& k) {
  static std::mutex mutex;
  static std::map<const ResQTritonKernel*, std::vector<Param>> parsed;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = parsed.find(&k);
  if (it != parsed.end()) return it->second;
  std::vector<Param> out;
  std::string all = k.params;
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find(',', start);
    if (end == std::string::npos) end = all.size();
    std::string item = all.substr(start, end - start);
    const size_t colon = item.find(':');
    std::string type = item.substr(colon + 1);
    const bool div16 = type.size() > 3 && type.compare(type.size() - 3, 3, "/16") == 0;
    if (div16) type.resize(type.size() - 3);
    const std::string name = item.substr(0, colon);
    out.push_back({name, type_bytes(type), div16, name == "global_scratch" || name == "profile_scratch"});
    start = end + 1;
  }
  return parsed.emplace(&k, std::move(out)).first->second;
}

std::string sm_name(int major, int minor) { return "sm_" + std::to_string(major * 10 + minor); }

}  // namespace

const char* last_error() { return g_error.c_str(); }

const ResQTritonKernel* table(int* count) {
  if (count) *count = resq_triton_table_size;
  return resq_triton_table;
}

const ResQTritonKernel* select(const char* name, int major, int minor, std::string* error) {
  const ResQTritonKernel* best = nullptr;
  std::string embedded;
  for (int i = 0; i < resq_triton_table_size; ++i) {
    const ResQTritonKernel& k = resq_triton_table[i];
    if (std::strcmp(k.name, name) != 0) continue;
    embedded += (embedded.empty() ? "sm_" : ", sm_") + std::string(k.arch);
    const int k_major = k.sm / 10, k_minor = k.sm % 10;
    if (k_major != major || k_minor > minor) continue;
    if (k.arch_specific && k_minor != minor) continue;  // an `a` cubin runs on its own SM only
    if (!best || k_minor > best->sm % 10) best = &k;
  }
  if (!best && error) {
    *error = embedded.empty()
                 ? std::string("no Triton kernel named ") + name + " is embedded in libresq_triton.so"
                 : std::string("no cubin of Triton kernel ") + name + " runs on " + sm_name(major, minor) +
                       " (embedded: " + embedded + "); add the architecture to the configuration's archs "
                       "(resq_export/kernels) and rebuild";
  }
  return best;
}

int check_args(const ResQTritonKernel& k, const KernelArg* args, int nargs, std::string* error) {
  const std::vector<Param>& params = params_of(k);
  const int expected = static_cast<int>(params.size()) - 2;  // the two scratch pointers are ours to add
  std::string msg;
  if (nargs != expected || (nargs > 0 && !args)) {
    msg = std::string(k.name) + ": " + std::to_string(nargs) + " arguments, the kernel takes " + std::to_string(expected);
  } else {
    for (int i = 0; i < nargs && msg.empty(); ++i) {
      const Param& p = params[i];
      if (!args[i].value || args[i].bytes != p.bytes) {
        msg = std::string(k.name) + ": argument " + p.name + " has " + std::to_string(args[i].bytes) +
              " bytes, the kernel takes " + std::to_string(p.bytes);
      } else if (p.div16) {
        uint64_t v = 0;
        std::memcpy(&v, args[i].value, p.bytes);  // little-endian: the low bytes of v
        if (v % 16) msg = std::string(k.name) + ": argument " + p.name + " = " + std::to_string(v) +
                          " is not a multiple of 16, which its cubin was compiled assuming";
      }
    }
  }
  if (msg.empty()) return RESQ_OK;
  if (error) *error = msg;
  return RESQ_ERR_INVALID;
}

// --- CUDA ------------------------------------------------------------------------------------
namespace {

struct Loaded {
  const ResQTritonKernel* row;
  cudaKernel_t kernel;
};

struct CudaState {
  std::mutex mutex;
  std::map<const ResQTritonKernel*, cudaLibrary_t> libraries;  // context-independent, one per cubin
  std::map<int, std::map<std::string, Loaded>> devices;      // device ordinal -> name -> kernel
};

CudaState& state() {
  static CudaState* s = new CudaState();  // never destroyed: unloading at exit races the driver's own teardown
  return *s;
}

// Into the current context: the dynamic shared memory opt-in (cudaFuncSetAttribute takes a
// cudaKernel_t as it is, CUDA runtime API; its setting is the context's) and the kernel itself,
// loaded now by querying it, not at its first launch (maybe inside a capture). Done on every
// prepare(), so that each context that prepares (TensorRT's attachToContext) gets both.
int bind(const Loaded& k) {
  cudaError_t e;
  // above the default 48 KiB a block must opt in to its dynamic shared memory
  if (k.row->shared + k.row->static_shared > 48 * 1024 &&
      (e = cudaFuncSetAttribute(reinterpret_cast<const void*>(k.kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                k.row->shared)) != cudaSuccess)
    return cuda_fail(e, std::string("setting the shared memory limit of ") + k.row->name);
  cudaFuncAttributes attrs{};
  e = cudaFuncGetAttributes(&attrs, reinterpret_cast<const void*>(k.kernel));
  if (e != cudaSuccess) return cuda_fail(e, std::string("loading ") + k.row->name + " into the context");
  return RESQ_OK;
}

// The kernel handle of `name` for this device's SM, once per device: a cudaLibrary_t and its
// cudaKernel_t are context-independent (the runtime loads them into a context when it needs them),
// so the cache is per device (which SM, which cubin), not per context.
int resolve(CudaState& s, int device, int major, int minor, int optin, const std::string& name, Loaded* out) {
  auto known = s.devices[device].find(name);
  if (known != s.devices[device].end()) return *out = known->second, RESQ_OK;
  std::string error;
  const ResQTritonKernel* row = select(name.c_str(), major, minor, &error);
  if (!row) return fail(RESQ_ERR_UNSUPPORTED, error);
  const int needed = row->shared + row->static_shared;
  if (needed > optin)
    return fail(RESQ_ERR_UNSUPPORTED, std::string(row->name) + " (sm_" + row->arch + " cubin) needs " + std::to_string(needed) +
                                          " bytes of shared memory per block, " + sm_name(major, minor) + " allows " +
                                          std::to_string(optin));
  cudaLibrary_t lib = nullptr;
  auto it = s.libraries.find(row);
  if (it != s.libraries.end()) {
    lib = it->second;
  } else {
    cudaError_t e = cudaLibraryLoadData(&lib, row->cubin, nullptr, nullptr, 0, nullptr, nullptr, 0);
    if (e != cudaSuccess) return cuda_fail(e, std::string("loading the sm_") + row->arch + " cubin of " + row->name);
    s.libraries[row] = lib;
  }
  cudaKernel_t kernel = nullptr;
  cudaError_t e = cudaLibraryGetKernel(&kernel, lib, row->kernel);
  if (e != cudaSuccess) return cuda_fail(e, std::string("finding ") + row->kernel + " in the cubin of " + row->name);
  *out = Loaded{row, kernel};
  s.devices[device][name] = *out;
  return RESQ_OK;
}

int load_one(CudaState& s, int device, int major, int minor, int optin, const std::string& name) {
  Loaded k{};
  const int st = resolve(s, device, major, minor, optin, name, &k);
  return st != RESQ_OK ? st : bind(k);
}

}  // namespace

int CudaLauncher::prepare(int device, const std::vector<std::string>& names) noexcept {
  try {
    CudaState& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    int previous = 0, major = 0, minor = 0, optin = 0;
    cudaError_t e = cudaGetDevice(&previous);
    if (e != cudaSuccess) return cuda_fail(e, "cudaGetDevice");
    if (device != previous && (e = cudaSetDevice(device)) != cudaSuccess) return cuda_fail(e, "cudaSetDevice");
    int status = RESQ_OK;
    if ((e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) != cudaSuccess) {
      status = cuda_fail(e, "querying the device");
    } else if (names.empty()) {  // everything that has a cubin for this SM; the rest fails at its launch
      std::map<std::string, bool> seen;
      for (int i = 0; i < resq_triton_table_size && status == RESQ_OK; ++i) {
        const std::string name = resq_triton_table[i].name;
        if (seen[name]) continue;
        seen[name] = true;
        if (!select(name.c_str(), major, minor, nullptr)) continue;
        status = load_one(s, device, major, minor, optin, name);
      }
    } else {
      for (const std::string& name : names)
        if (status == RESQ_OK) status = load_one(s, device, major, minor, optin, name);
    }
    if (device != previous) cudaSetDevice(previous);
    return status;
  } catch (const std::exception& ex) {
    return fail(RESQ_ERR_CUDA, ex.what());
  }
}

int CudaLauncher::launch(const char* name, dim3 grid, cudaStream_t stream, const KernelArg* args, int nargs) noexcept {
  try {
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess) return cuda_fail(e, "cudaGetDevice");
    Loaded loaded{};
    {
      CudaState& s = state();
      std::lock_guard<std::mutex> lock(s.mutex);
      auto dev = s.devices.find(device);
      if (dev != s.devices.end()) {
        auto it = dev->second.find(name);
        if (it != dev->second.end()) loaded = it->second;
      }
    }
    if (!loaded.row) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      if ((e = cudaStreamIsCapturing(stream, &capture)) != cudaSuccess) return cuda_fail(e, "cudaStreamIsCapturing");
      if (capture != cudaStreamCaptureStatusNone)
        return fail(RESQ_ERR_INVALID, std::string(name) + " was not loaded on device " + std::to_string(device) +
                                          " before CUDA-graph capture (prepare() it outside enqueue)");
      const int st = prepare(device, {name});
      if (st != RESQ_OK) return st;
      return launch(name, grid, stream, args, nargs);
    }
    std::string error;
    if (check_args(*loaded.row, args, nargs, &error) != RESQ_OK) return fail(RESQ_ERR_INVALID, error);
    std::vector<void*> argv(static_cast<size_t>(nargs) + 2);
    for (int i = 0; i < nargs; ++i) argv[i] = const_cast<void*>(args[i].value);
    void* null_scratch = nullptr;  // compile_triton.py refuses kernels that need scratch memory
    argv[nargs] = argv[nargs + 1] = &null_scratch;
    e = cudaLaunchKernel(reinterpret_cast<const void*>(loaded.kernel), grid, dim3(loaded.row->num_warps * 32),
                         argv.data(), static_cast<size_t>(loaded.row->shared), stream);
    if (e != cudaSuccess) return cuda_fail(e, std::string("launching ") + name);
    return RESQ_OK;
  } catch (const std::exception& ex) {
    return fail(RESQ_ERR_CUDA, ex.what());
  }
}

int CudaLauncher::memset(void* ptr, int value, size_t bytes, cudaStream_t stream) noexcept {
  const cudaError_t e = cudaMemsetAsync(ptr, value, bytes, stream);
  return e == cudaSuccess ? RESQ_OK : cuda_fail(e, "cudaMemsetAsync");
}

int RecordingLauncher::memset(void* ptr, int value, size_t bytes, cudaStream_t) noexcept {
  std::memset(ptr, value, bytes);  // the recorded launches run on host buffers
  return RESQ_OK;
}

int CudaLauncher::copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) noexcept {
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
  return e == cudaSuccess ? RESQ_OK : cuda_fail(e, "cudaMemcpyAsync");
}

// done at record time, like memset: it precedes every launch of the same enqueue, which the replay
// then runs in order
int RecordingLauncher::copy(void* dst, const void* src, size_t bytes, cudaStream_t) noexcept {
  std::memmove(dst, src, bytes);
  return RESQ_OK;
}

namespace {
// the value of `key` in "k1=v1,k2=v2,..." (the table's constexprs, the policy), or -1
int int_in_list(const char* list, const char* key) {
  const size_t len = std::strlen(key);
  for (const char* c = list; c && *c;) {
    const char* eq = std::strchr(c, '=');
    if (!eq) break;
    if (static_cast<size_t>(eq - c) == len && std::strncmp(c, key, len) == 0) return std::atoi(eq + 1);
    const char* comma = std::strchr(eq, ',');
    c = comma ? comma + 1 : nullptr;
  }
  return -1;
}
}  // namespace

int constexpr_of(const char* name, const char* constexpr_name) {
  for (int i = 0; i < resq_triton_table_size; ++i)
    if (std::strcmp(resq_triton_table[i].name, name) == 0) return int_in_list(resq_triton_table[i].constexprs, constexpr_name);
  return -1;
}

int policy_of(const char* name) { return int_in_list(resq_triton_policy_text, name); }

int RecordingLauncher::launch(const char* name, dim3 grid, cudaStream_t, const KernelArg* args, int nargs) noexcept {
  try {
    std::string error;
    const ResQTritonKernel* row = select(name, major_, minor_, &error);
    if (!row) return fail(RESQ_ERR_UNSUPPORTED, error);
    if (check_args(*row, args, nargs, &error) != RESQ_OK) return fail(RESQ_ERR_INVALID, error);
    LaunchRecord r{name, {grid.x, grid.y, grid.z}, {}, {}};
    for (int i = 0; i < nargs; ++i) {
      const auto* bytes = static_cast<const unsigned char*>(args[i].value);
      r.args.insert(r.args.end(), bytes, bytes + args[i].bytes);
      r.arg_bytes.push_back(args[i].bytes);
    }
    records.push_back(std::move(r));
    return RESQ_OK;
  } catch (const std::exception& ex) {
    return fail(RESQ_ERR_INVALID, ex.what());
  }
}

namespace {
std::atomic<Launcher*> g_launcher{nullptr};
}

CudaLauncher& cuda_launcher() {
  static CudaLauncher* l = new CudaLauncher();
  return *l;
}

Launcher& launcher() {
  Launcher* l = g_launcher.load();
  return l ? *l : cuda_launcher();
}

void set_launcher(Launcher* l) { g_launcher.store(l); }

}  // namespace triton
}  // namespace resq

// --- C API -----------------------------------------------------------------------------------
namespace T = resq::triton;

RESQ_TAPI int resq_triton_abi_version(void) { return RESQ_ABI_VERSION; }

RESQ_TAPI int resq_triton_kernel_count(void) { return resq_triton_table_size; }

RESQ_TAPI const ResQTritonKernel* resq_triton_kernel(int index) {
  return index >= 0 && index < resq_triton_table_size ? &resq_triton_table[index] : nullptr;
}

RESQ_TAPI const char* resq_triton_versions(void) { return resq_triton_versions_text; }

RESQ_TAPI const char* resq_triton_policy(void) { return resq_triton_policy_text; }

RESQ_TAPI const char* resq_triton_last_error(void) { return T::last_error(); }

RESQ_TAPI int resq_triton_select(const char* name, int major, int minor) {
  if (!name) return T::fail(RESQ_ERR_INVALID, "no kernel name"), -1;
  std::string error;
  const ResQTritonKernel* row = T::select(name, major, minor, &error);
  if (!row) return T::fail(RESQ_ERR_UNSUPPORTED, error), -1;
  return static_cast<int>(row - resq_triton_table);
}

RESQ_TAPI int resq_triton_prepare(int device) {
  if (device < 0) {  // the current device
    const cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess) return T::cuda_fail(e, "cudaGetDevice");
  }
  return T::cuda_launcher().prepare(device);
}

RESQ_TAPI int resq_triton_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, void* stream,
                                 const void* const* arg_values, const uint32_t* arg_bytes, int nargs) {
  if (!name || nargs < 0 || (nargs > 0 && (!arg_values || !arg_bytes))) return T::fail(RESQ_ERR_INVALID, "bad launch arguments");
  std::vector<T::KernelArg> args(static_cast<size_t>(nargs));
  for (int i = 0; i < nargs; ++i) args[i] = T::KernelArg{arg_values[i], arg_bytes[i]};
  return T::launcher().launch(name, dim3(gx, gy, gz), static_cast<cudaStream_t>(stream), args.data(), nargs);
}

RESQ_TAPI void* resq_triton_record_begin(int sm_major, int sm_minor) {
  auto* r = new T::RecordingLauncher(sm_major, sm_minor);
  T::set_launcher(r);
  return r;
}

RESQ_TAPI int resq_triton_record_count(void* recorder) {
  return recorder ? static_cast<int>(static_cast<T::RecordingLauncher*>(recorder)->records.size()) : 0;
}

RESQ_TAPI int resq_triton_record_get(void* recorder, int index, const char** name, unsigned* grid,
                                     const unsigned char** args, size_t* args_bytes) {
  auto* r = static_cast<T::RecordingLauncher*>(recorder);
  if (!r || index < 0 || index >= static_cast<int>(r->records.size())) return RESQ_ERR_INVALID;
  const T::LaunchRecord& rec = r->records[index];
  if (name) *name = rec.name.c_str();
  if (grid) std::memcpy(grid, rec.grid, sizeof rec.grid);
  if (args) *args = rec.args.data();
  if (args_bytes) *args_bytes = rec.args.size();
  return RESQ_OK;
}

RESQ_TAPI void resq_triton_record_end(void* recorder) {
  auto* r = static_cast<T::RecordingLauncher*>(recorder);
  if (&T::launcher() == r) T::set_launcher(nullptr);
  delete r;
}
