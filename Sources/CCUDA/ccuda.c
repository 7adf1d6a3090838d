// Resolves the function tables declared in ccuda.h from libraries opened with dlopen.
#include "ccuda.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

void *ccuda_dlopen(const char *path, char *error, size_t errorLength) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle && error && errorLength > 0) {
        const char *why = dlerror();
        snprintf(error, errorLength, "%s", why ? why : "unknown dlopen error");
    }
    return handle;
}

static void note_missing(char *missing, size_t length, const char *name) {
    if (!missing || length == 0) return;
    size_t used = strlen(missing);
    if (used + 1 >= length) return;
    snprintf(missing + used, length - used, "%s%s", used ? ", " : "", name);
}

/// The first of `names` (NULL-terminated) that the library exports.
static void *first_symbol(void *handle, const char *const *names) {
    for (; *names; names++) {
        void *symbol = dlsym(handle, *names);
        if (symbol) return symbol;
    }
    return NULL;
}

#define RESOLVE(api, field, required, ...)                                       \
    do {                                                                         \
        static const char *const names_[] = {__VA_ARGS__, NULL};                 \
        void *symbol_ = first_symbol(handle, names_);                            \
        memcpy(&(api)->field, &symbol_, sizeof(void *));                         \
        if (!symbol_ && (required)) {                                            \
            note_missing(missing, missingLength, names_[0]);                     \
            absent++;                                                            \
        }                                                                        \
    } while (0)

int ccuda_resolve_driver(void *handle, CCUDADriverAPI *api, char *missing, size_t missingLength) {
    int absent = 0;
    if (missing && missingLength) missing[0] = 0;
    memset(api, 0, sizeof(*api));
    RESOLVE(api, cuInit, 1, "cuInit");
    RESOLVE(api, cuDriverGetVersion, 1, "cuDriverGetVersion");
    RESOLVE(api, cuGetErrorName, 1, "cuGetErrorName");
    RESOLVE(api, cuGetErrorString, 1, "cuGetErrorString");
    RESOLVE(api, cuDeviceGetCount, 1, "cuDeviceGetCount");
    RESOLVE(api, cuDeviceGet, 1, "cuDeviceGet");
    RESOLVE(api, cuDeviceGetName, 1, "cuDeviceGetName");
    RESOLVE(api, cuDeviceGetAttribute, 1, "cuDeviceGetAttribute");
    RESOLVE(api, cuDeviceTotalMem, 1, "cuDeviceTotalMem_v2");
    RESOLVE(api, cuDevicePrimaryCtxRetain, 1, "cuDevicePrimaryCtxRetain");
    RESOLVE(api, cuDevicePrimaryCtxRelease, 1, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
    RESOLVE(api, cuCtxSetCurrent, 1, "cuCtxSetCurrent");
    RESOLVE(api, cuCtxGetCurrent, 1, "cuCtxGetCurrent");
    RESOLVE(api, cuCtxSynchronize, 1, "cuCtxSynchronize");
    RESOLVE(api, cuMemAlloc, 1, "cuMemAlloc_v2");
    RESOLVE(api, cuMemFree, 1, "cuMemFree_v2");
    RESOLVE(api, cuMemGetInfo, 1, "cuMemGetInfo_v2");
    RESOLVE(api, cuMemcpyHtoD, 1, "cuMemcpyHtoD_v2");
    RESOLVE(api, cuMemcpyDtoH, 1, "cuMemcpyDtoH_v2");
    RESOLVE(api, cuMemcpyHtoDAsync, 1, "cuMemcpyHtoDAsync_v2");
    RESOLVE(api, cuMemcpyDtoHAsync, 1, "cuMemcpyDtoHAsync_v2");
    RESOLVE(api, cuMemcpyDtoDAsync, 1, "cuMemcpyDtoDAsync_v2");
    RESOLVE(api, cuMemsetD8Async, 1, "cuMemsetD8Async");
    RESOLVE(api, cuMemsetD32Async, 1, "cuMemsetD32Async");
    RESOLVE(api, cuStreamWriteValue32, 0, "cuStreamWriteValue32_v2", "cuStreamWriteValue32");
    RESOLVE(api, cuStreamCreate, 1, "cuStreamCreate");
    RESOLVE(api, cuStreamDestroy, 1, "cuStreamDestroy_v2");
    RESOLVE(api, cuStreamSynchronize, 1, "cuStreamSynchronize");
    RESOLVE(api, cuStreamWaitEvent, 1, "cuStreamWaitEvent");
    RESOLVE(api, cuStreamBeginCapture, 1, "cuStreamBeginCapture_v2");
    RESOLVE(api, cuStreamEndCapture, 1, "cuStreamEndCapture");
    RESOLVE(api, cuEventCreate, 1, "cuEventCreate");
    RESOLVE(api, cuEventDestroy, 1, "cuEventDestroy_v2");
    RESOLVE(api, cuEventRecord, 1, "cuEventRecord");
    RESOLVE(api, cuEventRecordWithFlags, 0, "cuEventRecordWithFlags");
    RESOLVE(api, cuEventSynchronize, 1, "cuEventSynchronize");
    RESOLVE(api, cuEventElapsedTime, 1, "cuEventElapsedTime_v2", "cuEventElapsedTime");
    RESOLVE(api, cuModuleLoadData, 1, "cuModuleLoadData");
    RESOLVE(api, cuModuleUnload, 1, "cuModuleUnload");
    RESOLVE(api, cuModuleGetFunction, 1, "cuModuleGetFunction");
    RESOLVE(api, cuFuncSetAttribute, 1, "cuFuncSetAttribute");
    RESOLVE(api, cuFuncGetAttribute, 1, "cuFuncGetAttribute");
    RESOLVE(api, cuLaunchKernel, 1, "cuLaunchKernel");
    RESOLVE(api, cuLaunchKernelEx, 0, "cuLaunchKernelEx");
    RESOLVE(api, cuGraphInstantiate, 1, "cuGraphInstantiateWithFlags");
    RESOLVE(api, cuGraphLaunch, 1, "cuGraphLaunch");
    RESOLVE(api, cuGraphExecDestroy, 1, "cuGraphExecDestroy");
    RESOLVE(api, cuGraphDestroy, 1, "cuGraphDestroy");
    RESOLVE(api, cuIpcGetMemHandle, 0, "cuIpcGetMemHandle");
    RESOLVE(api, cuIpcOpenMemHandle, 0, "cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle");
    RESOLVE(api, cuIpcCloseMemHandle, 0, "cuIpcCloseMemHandle");
    RESOLVE(api, cuDeviceCanAccessPeer, 0, "cuDeviceCanAccessPeer");
    RESOLVE(api, cuDeviceGetByPCIBusId, 0, "cuDeviceGetByPCIBusId");
    RESOLVE(api, cuTensorMapEncodeTiled, 0, "cuTensorMapEncodeTiled");
    RESOLVE(api, cuCtxEnablePeerAccess, 0, "cuCtxEnablePeerAccess");
    return absent;
}

int ccuda_resolve_nvrtc(void *handle, CCUDANVRTCAPI *api, char *missing, size_t missingLength) {
    int absent = 0;
    if (missing && missingLength) missing[0] = 0;
    memset(api, 0, sizeof(*api));
    RESOLVE(api, nvrtcVersion, 1, "nvrtcVersion");
    RESOLVE(api, nvrtcGetErrorString, 1, "nvrtcGetErrorString");
    RESOLVE(api, nvrtcCreateProgram, 1, "nvrtcCreateProgram");
    RESOLVE(api, nvrtcDestroyProgram, 1, "nvrtcDestroyProgram");
    RESOLVE(api, nvrtcCompileProgram, 1, "nvrtcCompileProgram");
    RESOLVE(api, nvrtcGetProgramLogSize, 1, "nvrtcGetProgramLogSize");
    RESOLVE(api, nvrtcGetProgramLog, 1, "nvrtcGetProgramLog");
    RESOLVE(api, nvrtcGetCUBINSize, 1, "nvrtcGetCUBINSize");
    RESOLVE(api, nvrtcGetCUBIN, 1, "nvrtcGetCUBIN");
    return absent;
}

int ccuda_resolve_cublas(void *handle, CCUDACuBLASAPI *api, char *missing, size_t missingLength) {
    int absent = 0;
    if (missing && missingLength) missing[0] = 0;
    memset(api, 0, sizeof(*api));
    RESOLVE(api, cublasCreate, 1, "cublasCreate_v2");
    RESOLVE(api, cublasDestroy, 1, "cublasDestroy_v2");
    RESOLVE(api, cublasSetStream, 1, "cublasSetStream_v2");
    RESOLVE(api, cublasGemmEx, 1, "cublasGemmEx");
    return absent;
}

int ccuda_resolve_nccl(void *handle, CCUDANCCLAPI *api, char *missing, size_t missingLength) {
    int absent = 0;
    if (missing && missingLength) missing[0] = 0;
    memset(api, 0, sizeof(*api));
    RESOLVE(api, ncclGetVersion, 1, "ncclGetVersion");
    RESOLVE(api, ncclGetErrorString, 1, "ncclGetErrorString");
    RESOLVE(api, ncclGetUniqueId, 1, "ncclGetUniqueId");
    RESOLVE(api, ncclCommInitRank, 1, "ncclCommInitRank");
    RESOLVE(api, ncclCommDestroy, 1, "ncclCommDestroy");
    RESOLVE(api, ncclCommAbort, 1, "ncclCommAbort");
    RESOLVE(api, ncclCommGetAsyncError, 1, "ncclCommGetAsyncError");
    RESOLVE(api, ncclGroupStart, 1, "ncclGroupStart");
    RESOLVE(api, ncclGroupEnd, 1, "ncclGroupEnd");
    RESOLVE(api, ncclSend, 1, "ncclSend");
    RESOLVE(api, ncclRecv, 1, "ncclRecv");
    RESOLVE(api, ncclAllReduce, 1, "ncclAllReduce");
    RESOLVE(api, ncclAllGather, 1, "ncclAllGather");
    RESOLVE(api, ncclGetLastError, 0, "ncclGetLastError");
    return absent;
}
