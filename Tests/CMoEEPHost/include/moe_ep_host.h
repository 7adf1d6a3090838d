// moe_ep_host.h — moe_ep.cu's phase blocks (moe_ep_node.cuh) compiled for the host, for the tests: the same source
// the GPU runs, run block by block and thread by thread over heaps in host memory.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/// The phases moe_ep_host_run can run (the `*_block` functions of moe_ep_node.cuh).
enum MoEEPHostPhase {
    MOE_EP_HOST_PUBLISH = 0,
    MOE_EP_HOST_FORWARD_ROUTING = 1,
    MOE_EP_HOST_DISPATCH = 2,
    MOE_EP_HOST_DISPATCH_FORWARD = 3,
    MOE_EP_HOST_COMBINE = 4,
    MOE_EP_HOST_COMBINE_COLLECT = 5,
};

/// Runs `phase` over a grid of gridX × gridY blocks of `block` threads, one thread after another, with the
/// MoEEPParams at `params` (host addresses in every pointer field). The combine phase's blocks past the local tile
/// count return at once, as the kernel's do.
void moe_ep_host_run(int phase, const void *params, int gridX, int gridY, int block);

/// sizeof(MoEEPParams) as the host compiler lays it out.
int moe_ep_host_params_bytes(void);

/// offsetof(MoEEPPlanParams, ep) and sizeof(MoEEPPlanParams) as the host compiler lays them out.
int moe_ep_host_plan_params_ep_offset(void);
int moe_ep_host_plan_params_bytes(void);

#ifdef __cplusplus
}
#endif
