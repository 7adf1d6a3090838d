#!/usr/bin/env python3
# Compiles one kernel file of Sources/MoECUDA/Kernels with NVRTC, as the engine does at first use, on a machine with no
# GPU: prints NVRTC's log (ptxas registers, spills, warnings) and writes the cubin for cuobjdump -sass.
#   usage: python3 scripts/gpu/nvrtc_compile.py FILE [ARCH] [NVRTC options…]     (FILE: moe_experts.cu, moe_ep.cu, …)
#   env:   NVRTC  libnvrtc.so.13 (default: found by the loader; `pip download nvidia-cuda-nvrtc==13.0.*` has one;
#                 LD_LIBRARY_PATH must hold its folder too, for libnvrtc-builtins)
#          KDIR   kernel folder (default: this checkout's; another commit's copy to compare with)
#          OUT    folder for FILE.cubin (default /tmp)
import ctypes, os, sys
kdir = os.environ.get("KDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../Sources/MoECUDA/Kernels"))
lib = ctypes.CDLL(os.environ.get("NVRTC", "libnvrtc.so.13"))
name = sys.argv[1]
arch = sys.argv[2] if len(sys.argv) > 2 else "sm_90a"
source = open(os.path.join(kdir, name), "rb").read()
headers = ["moe_common.cuh", "moe_params.h"] + (["moe_routing.cu", "moe_ep_node.cuh"] if name == "moe_ep.cu" else [])
texts = [open(os.path.join(kdir, h), "rb").read() for h in headers]
program = ctypes.c_void_p()
H = (ctypes.c_char_p * len(headers))(*texts)
N = (ctypes.c_char_p * len(headers))(*[h.encode() for h in headers])
assert lib.nvrtcCreateProgram(ctypes.byref(program), source, name.encode(), len(headers), H, N) == 0
options = [f"--gpu-architecture={arch}", "-std=c++17", "-lineinfo", "--ptxas-options=-v"] + sys.argv[3:]
O = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
status = lib.nvrtcCompileProgram(program, len(options), O)
size = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value)
lib.nvrtcGetProgramLog(program, log)
print(log.value.decode())
if status != 0:
    sys.exit("compile failed")
lib.nvrtcGetCUBINSize(program, ctypes.byref(size))
cubin = ctypes.create_string_buffer(size.value)
lib.nvrtcGetCUBIN(program, cubin)
out = os.path.join(os.environ.get("OUT", "/tmp"), name + ".cubin")
open(out, "wb").write(cubin.raw)
print("wrote", out)
