// The host build of moe_ep_node.cuh: CUDA's built-in block and thread indices become variables the loop below sets,
// and 16-byte copies a plain struct; everything else is the kernel source as the GPU compiles it.
#include "moe_ep_host.h"

#include <cstddef>

#include "../../Sources/MoECUDA/Kernels/moe_params.h"

namespace {
struct Index3 {
    unsigned x, y, z;
};
Index3 blockIdx, threadIdx, blockDim;
struct uint4 {
    unsigned x, y, z, w;
};
}  // namespace

#define MOE_DEVICE static inline
typedef unsigned short bf16_t;

#include "../../Sources/MoECUDA/Kernels/moe_ep_node.cuh"

extern "C" void moe_ep_host_run(int phase, const void *params, int gridX, int gridY, int block) {
    const MoEEPParams &p = *static_cast<const MoEEPParams *>(params);
    blockDim = {unsigned(block), 1, 1};
    for (int y = 0; y < gridY; ++y) {
        for (int x = 0; x < gridX; ++x) {
            for (int t = 0; t < block; ++t) {
                blockIdx = {unsigned(x), unsigned(y), 0};
                threadIdx = {unsigned(t), 0, 0};
                switch (phase) {
                case MOE_EP_HOST_PUBLISH: ep_publish_block(p); break;
                case MOE_EP_HOST_FORWARD_ROUTING: ep_forward_routing_block(p); break;
                case MOE_EP_HOST_DISPATCH: ep_dispatch_block(p); break;
                case MOE_EP_HOST_DISPATCH_FORWARD: ep_dispatch_forward_block(p); break;
                case MOE_EP_HOST_COMBINE: ep_combine_block(p); break;
                case MOE_EP_HOST_COMBINE_COLLECT: ep_combine_collect_block(p); break;
                default: return;
                }
            }
        }
    }
}

extern "C" int moe_ep_host_params_bytes(void) { return int(sizeof(MoEEPParams)); }
extern "C" int moe_ep_host_plan_params_ep_offset(void) { return int(offsetof(MoEEPPlanParams, ep)); }
extern "C" int moe_ep_host_plan_params_bytes(void) { return int(sizeof(MoEEPPlanParams)); }
