import MoECore
import MoECPU
print("moe")
