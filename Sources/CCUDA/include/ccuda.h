#pragma once
// CUDA driver API, NVRTC, cuBLAS and NCCL entry points, declared here by hand (no CUDA headers are needed to
// build MoEKit) and resolved at run time with dlopen/dlsym into function tables (see ccuda.c).
//
// Only the types and constants MoEKit uses are declared. Values are the ABI values of the CUDA 12/13 driver
// API (stable across releases); each table field names the exported symbol(s) it is resolved from, newest
// versioned name first (the driver exports e.g. both cuMemAlloc and cuMemAlloc_v2; the _v2 is the current one).

#include <stddef.h>
#include <stdint.h>

#include "ccuda_params.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: driver API types

typedef int CUresult;                 // CUDA_SUCCESS = 0
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
typedef struct { char reserved[64]; } CUipcMemHandle;

enum {
    CCUDA_SUCCESS = 0,
    CCUDA_ERROR_INVALID_VALUE = 1,
    CCUDA_ERROR_OUT_OF_MEMORY = 2,
    CCUDA_ERROR_NOT_INITIALIZED = 3,
    CCUDA_ERROR_NO_DEVICE = 100,
    CCUDA_ERROR_INVALID_IMAGE = 200,
    CCUDA_ERROR_NOT_FOUND = 500,
    CCUDA_ERROR_NOT_READY = 600,
    CCUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CCUDA_ERROR_LAUNCH_FAILED = 719,
};

// CUdevice_attribute values.
enum {
    CCUDA_ATTR_MAX_THREADS_PER_BLOCK = 1,
    CCUDA_ATTR_MAX_SHARED_MEMORY_PER_BLOCK = 8,
    CCUDA_ATTR_CLOCK_RATE = 13,
    CCUDA_ATTR_MULTIPROCESSOR_COUNT = 16,
    CCUDA_ATTR_MEMORY_CLOCK_RATE = 36,
    CCUDA_ATTR_GLOBAL_MEMORY_BUS_WIDTH = 37,
    CCUDA_ATTR_L2_CACHE_SIZE = 38,
    CCUDA_ATTR_COMPUTE_CAPABILITY_MAJOR = 75,
    CCUDA_ATTR_COMPUTE_CAPABILITY_MINOR = 76,
    CCUDA_ATTR_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81,
    CCUDA_ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
};

// CUfunction_attribute values.
enum {
    CCUDA_FUNC_ATTR_MAX_THREADS_PER_BLOCK = 0,
    CCUDA_FUNC_ATTR_SHARED_SIZE_BYTES = 1,
    CCUDA_FUNC_ATTR_LOCAL_SIZE_BYTES = 3,
    CCUDA_FUNC_ATTR_NUM_REGS = 4,
    CCUDA_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};

enum { CCUDA_STREAM_NON_BLOCKING = 1 };
enum { CCUDA_EVENT_DEFAULT = 0, CCUDA_EVENT_DISABLE_TIMING = 2 };
enum { CCUDA_EVENT_RECORD_EXTERNAL = 1 };
// CUstreamCaptureMode
enum { CCUDA_CAPTURE_MODE_GLOBAL = 0, CCUDA_CAPTURE_MODE_THREAD_LOCAL = 1, CCUDA_CAPTURE_MODE_RELAXED = 2 };
enum { CCUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1 };

/// cuLaunchKernelEx's attribute and configuration (CUDA 12+ ABI: a 4-byte id, 4 bytes of padding, a 64-byte value).
enum { CCUDA_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct CCUDALaunchAttribute {
    int id;
    char pad[4];
    union {
        char bytes[64];
        int value;
    } value;
} CCUDALaunchAttribute;
typedef struct CCUDALaunchConfig {
    unsigned int gridDimX, gridDimY, gridDimZ;
    unsigned int blockDimX, blockDimY, blockDimZ;
    unsigned int sharedMemBytes;
    CUstream hStream;
    CCUDALaunchAttribute *attrs;
    unsigned int numAttrs;
} CCUDALaunchConfig;

/// The driver entry points MoEKit calls. A NULL field is a symbol the library did not export; required ones
/// make loading fail (ccuda_resolve_driver), optional ones (IPC, peer access) fail when first called.
typedef struct CCUDADriverAPI {
    CUresult (*cuInit)(unsigned int flags);
    CUresult (*cuDriverGetVersion)(int *version);
    CUresult (*cuGetErrorName)(CUresult error, const char **name);
    CUresult (*cuGetErrorString)(CUresult error, const char **text);
    CUresult (*cuDeviceGetCount)(int *count);
    CUresult (*cuDeviceGet)(CUdevice *device, int ordinal);
    CUresult (*cuDeviceGetName)(char *name, int length, CUdevice device);
    CUresult (*cuDeviceGetAttribute)(int *value, int attribute, CUdevice device);
    CUresult (*cuDeviceTotalMem)(size_t *bytes, CUdevice device);                       // _v2
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice device);                             // _v2
    CUresult (*cuCtxSetCurrent)(CUcontext context);
    CUresult (*cuCtxGetCurrent)(CUcontext *context);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuMemAlloc)(CUdeviceptr *pointer, size_t bytes);                          // _v2
    CUresult (*cuMemFree)(CUdeviceptr pointer);                                          // _v2
    CUresult (*cuMemGetInfo)(size_t *free, size_t *total);                               // _v2
    CUresult (*cuMemcpyHtoD)(CUdeviceptr destination, const void *source, size_t bytes); // _v2
    CUresult (*cuMemcpyDtoH)(void *destination, CUdeviceptr source, size_t bytes);       // _v2
    CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr destination, const void *source, size_t bytes, CUstream stream);
    CUresult (*cuMemcpyDtoHAsync)(void *destination, CUdeviceptr source, size_t bytes, CUstream stream);
    CUresult (*cuMemcpyDtoDAsync)(CUdeviceptr destination, CUdeviceptr source, size_t bytes, CUstream stream);
    CUresult (*cuMemsetD8Async)(CUdeviceptr destination, unsigned char value, size_t count, CUstream stream);
    CUresult (*cuMemsetD32Async)(CUdeviceptr destination, unsigned int value, size_t count, CUstream stream);
    /// Optional (stream memory operations): a 32-bit write done by the GPU's front end, with no kernel.
    CUresult (*cuStreamWriteValue32)(CUstream stream, CUdeviceptr address, unsigned int value, unsigned int flags);
    CUresult (*cuStreamCreate)(CUstream *stream, unsigned int flags);
    CUresult (*cuStreamDestroy)(CUstream stream);                                        // _v2
    CUresult (*cuStreamSynchronize)(CUstream stream);
    CUresult (*cuStreamWaitEvent)(CUstream stream, CUevent event, unsigned int flags);
    CUresult (*cuStreamBeginCapture)(CUstream stream, int mode);                         // _v2
    CUresult (*cuStreamEndCapture)(CUstream stream, CUgraph *graph);
    CUresult (*cuEventCreate)(CUevent *event, unsigned int flags);
    CUresult (*cuEventDestroy)(CUevent event);                                           // _v2
    CUresult (*cuEventRecord)(CUevent event, CUstream stream);
    /// With CCUDA_EVENT_RECORD_EXTERNAL during stream capture: a real event record node (timing inside graphs).
    CUresult (*cuEventRecordWithFlags)(CUevent event, CUstream stream, unsigned int flags);
    CUresult (*cuEventSynchronize)(CUevent event);
    CUresult (*cuEventElapsedTime)(float *milliseconds, CUevent start, CUevent end);     // _v2 first
    CUresult (*cuModuleLoadData)(CUmodule *module, const void *image);
    CUresult (*cuModuleUnload)(CUmodule module);
    CUresult (*cuModuleGetFunction)(CUfunction *function, CUmodule module, const char *name);
    CUresult (*cuFuncSetAttribute)(CUfunction function, int attribute, int value);
    CUresult (*cuFuncGetAttribute)(int *value, int attribute, CUfunction function);
    CUresult (*cuLaunchKernel)(
        CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX,
        unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, CUstream stream, void **parameters,
        void **extra);
    /// Optional: launches with attributes (programmatic dependent launch).
    CUresult (*cuLaunchKernelEx)(const CCUDALaunchConfig *config, CUfunction function, void **parameters, void **extra);
    CUresult (*cuGraphInstantiate)(CUgraphExec *exec, CUgraph graph, unsigned long long flags); // WithFlags
    CUresult (*cuGraphLaunch)(CUgraphExec exec, CUstream stream);
    CUresult (*cuGraphExecDestroy)(CUgraphExec exec);
    CUresult (*cuGraphDestroy)(CUgraph graph);
    // Optional (expert parallelism across processes / peers).
    CUresult (*cuIpcGetMemHandle)(CUipcMemHandle *handle, CUdeviceptr pointer);
    CUresult (*cuIpcOpenMemHandle)(CUdeviceptr *pointer, CUipcMemHandle handle, unsigned int flags); // _v2
    CUresult (*cuIpcCloseMemHandle)(CUdeviceptr pointer);
    CUresult (*cuDeviceCanAccessPeer)(int *canAccess, CUdevice device, CUdevice peer);
    CUresult (*cuDeviceGetByPCIBusId)(CUdevice *device, const char *pciBusId);
    CUresult (*cuCtxEnablePeerAccess)(CUcontext peer, unsigned int flags);
    /// Optional (CUDA 12+): a TMA tensor map (128 bytes, 64-byte aligned) for the registered kernels' bulk tensor
    /// copies. The enums are the driver's CUtensorMapDataType, …Interleave, …Swizzle, …L2promotion, …FloatOOBfill.
    CUresult (*cuTensorMapEncodeTiled)(
        void *tensorMap, int dataType, unsigned int rank, void *globalAddress, const unsigned long long *globalDim,
        const unsigned long long *globalStrides, const unsigned int *boxDim, const unsigned int *elementStrides,
        int interleave, int swizzle, int l2Promotion, int oobFill);
} CCUDADriverAPI;

// MARK: NVRTC

typedef int nvrtcResult;  // NVRTC_SUCCESS = 0
typedef struct _nvrtcProgram *nvrtcProgram;
enum { CCUDA_NVRTC_SUCCESS = 0, CCUDA_NVRTC_ERROR_COMPILATION = 6 };

typedef struct CCUDANVRTCAPI {
    nvrtcResult (*nvrtcVersion)(int *major, int *minor);
    const char *(*nvrtcGetErrorString)(nvrtcResult result);
    nvrtcResult (*nvrtcCreateProgram)(
        nvrtcProgram *program, const char *source, const char *name, int headerCount, const char *const *headers,
        const char *const *includeNames);
    nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *program);
    nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram program, int optionCount, const char *const *options);
    nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram program, size_t *size);
    nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram program, char *log);
    nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram program, size_t *size);
    nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram program, char *cubin);
} CCUDANVRTCAPI;

// MARK: cuBLAS (only to measure the bf16 matrix peak)

typedef int cublasStatus_t;  // CUBLAS_STATUS_SUCCESS = 0
typedef struct cublasContext *cublasHandle_t;
enum { CCUDA_CUBLAS_OP_N = 0, CCUDA_CUBLAS_OP_T = 1 };
enum { CCUDA_R_32F = 0, CCUDA_R_16BF = 14 };
enum { CCUDA_CUBLAS_COMPUTE_32F = 68 };
enum { CCUDA_CUBLAS_GEMM_DEFAULT = -1 };

typedef struct CCUDACuBLASAPI {
    cublasStatus_t (*cublasCreate)(cublasHandle_t *handle);          // _v2
    cublasStatus_t (*cublasDestroy)(cublasHandle_t handle);          // _v2
    cublasStatus_t (*cublasSetStream)(cublasHandle_t handle, CUstream stream);  // _v2
    cublasStatus_t (*cublasGemmEx)(
        cublasHandle_t handle, int transa, int transb, int m, int n, int k, const void *alpha, const void *A,
        int Atype, int lda, const void *B, int Btype, int ldb, const void *beta, void *C, int Ctype, int ldc,
        int computeType, int algorithm);
} CCUDACuBLASAPI;

// MARK: NCCL (for expert parallelism across GPUs)

typedef int ncclResult_t;  // ncclSuccess = 0
typedef struct ncclComm *ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
enum { CCUDA_NCCL_INT8 = 0, CCUDA_NCCL_UINT8 = 1, CCUDA_NCCL_INT32 = 2, CCUDA_NCCL_FLOAT32 = 7, CCUDA_NCCL_BFLOAT16 = 9 };
enum { CCUDA_NCCL_SUM = 0, CCUDA_NCCL_MAX = 2 };
// ncclResult_t values MoEKit tells apart (nccl.h: ncclSuccess 0 … ncclRemoteError 6, ncclInProgress 7).
enum {
    CCUDA_NCCL_SUCCESS = 0,
    CCUDA_NCCL_UNHANDLED_CUDA_ERROR = 1,
    CCUDA_NCCL_SYSTEM_ERROR = 2,
    CCUDA_NCCL_INTERNAL_ERROR = 3,
    CCUDA_NCCL_INVALID_ARGUMENT = 4,
    CCUDA_NCCL_INVALID_USAGE = 5,
    CCUDA_NCCL_REMOTE_ERROR = 6,
    CCUDA_NCCL_IN_PROGRESS = 7,
};

typedef struct CCUDANCCLAPI {
    ncclResult_t (*ncclGetVersion)(int *version);
    const char *(*ncclGetErrorString)(ncclResult_t result);
    ncclResult_t (*ncclGetUniqueId)(ncclUniqueId *uniqueId);
    ncclResult_t (*ncclCommInitRank)(ncclComm_t *comm, int ranks, ncclUniqueId commId, int rank);
    ncclResult_t (*ncclCommDestroy)(ncclComm_t comm);
    ncclResult_t (*ncclCommAbort)(ncclComm_t comm);
    ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t comm, ncclResult_t *asyncError);
    ncclResult_t (*ncclGroupStart)(void);
    ncclResult_t (*ncclGroupEnd)(void);
    ncclResult_t (*ncclSend)(const void *buffer, size_t count, int datatype, int peer, ncclComm_t comm, CUstream stream);
    ncclResult_t (*ncclRecv)(void *buffer, size_t count, int datatype, int peer, ncclComm_t comm, CUstream stream);
    ncclResult_t (*ncclAllReduce)(
        const void *send, void *receive, size_t count, int datatype, int op, ncclComm_t comm, CUstream stream);
    ncclResult_t (*ncclAllGather)(
        const void *send, void *receive, size_t sendCount, int datatype, ncclComm_t comm, CUstream stream);
    /// Optional (NCCL ≥ 2.13): the last error's detail text, e.g. "Duplicate GPU detected …".
    const char *(*ncclGetLastError)(ncclComm_t comm);
} CCUDANCCLAPI;

// MARK: resolution

/// Fills `api` from a dlopen handle. Returns the number of required symbols that are missing; their names
/// (comma-separated) are written to `missing` (truncated to `missingLength`).
int ccuda_resolve_driver(void *handle, CCUDADriverAPI *api, char *missing, size_t missingLength);
int ccuda_resolve_nvrtc(void *handle, CCUDANVRTCAPI *api, char *missing, size_t missingLength);
int ccuda_resolve_cublas(void *handle, CCUDACuBLASAPI *api, char *missing, size_t missingLength);
int ccuda_resolve_nccl(void *handle, CCUDANCCLAPI *api, char *missing, size_t missingLength);

/// dlopen(path, RTLD_NOW | RTLD_LOCAL); on failure NULL and dlerror()'s text in `error`.
void *ccuda_dlopen(const char *path, char *error, size_t errorLength);

#ifdef __cplusplus
}
#endif
