import CCUDA
import MoECore
import Testing

@testable import MoECUDA

/// A fake GPU of `FakeGPU.capacity` bytes: allocations succeed until they would pass it, then fail as the driver
/// does (CUDA_ERROR_OUT_OF_MEMORY); cuMemGetInfo reports what is left. Its state is global (C function pointers
/// capture nothing), so the tests that use it form one serialized suite.
enum FakeGPU {
    nonisolated(unsafe) static var capacity = 0
    nonisolated(unsafe) static var allocated = 0
    nonisolated(unsafe) static var sizes: [CUdeviceptr: Int] = [:]
    nonisolated(unsafe) static var nextAddress: CUdeviceptr = 0x1000

    static func table() -> CCUDADriverAPI {
        var api = FakeDriver.table()
        api.cuInit = { _ in 0 }
        api.cuDeviceGetCount = { count in
            count?.pointee = 1
            return 0
        }
        api.cuDeviceGet = { device, _ in
            device?.pointee = 0
            return 0
        }
        api.cuDeviceGetName = { name, length, _ in
            let text = Array("Fake GPU".utf8CString)
            for i in 0..<min(Int(length), text.count) { name?[i] = text[i] }
            return 0
        }
        api.cuDeviceGetAttribute = { value, _, _ in
            value?.pointee = 9
            return 0
        }
        api.cuDeviceTotalMem = { bytes, _ in
            bytes?.pointee = FakeGPU.capacity
            return 0
        }
        api.cuDevicePrimaryCtxRetain = { context, _ in
            context?.pointee = OpaquePointer(bitPattern: 0x10)
            return 0
        }
        api.cuDevicePrimaryCtxRelease = { _ in 0 }
        api.cuCtxSetCurrent = { _ in 0 }
        api.cuCtxSynchronize = { 0 }
        api.cuMemcpyHtoD = { _, _, _ in 0 }
        api.cuMemAlloc = { pointer, bytes in
            guard FakeGPU.allocated + bytes <= FakeGPU.capacity else { return 2 }
            FakeGPU.allocated += bytes
            FakeGPU.nextAddress += CUdeviceptr(bytes + 256)
            FakeGPU.sizes[FakeGPU.nextAddress] = bytes
            pointer?.pointee = FakeGPU.nextAddress
            return 0
        }
        api.cuMemFree = { pointer in
            FakeGPU.allocated -= FakeGPU.sizes.removeValue(forKey: pointer) ?? 0
            return 0
        }
        api.cuMemGetInfo = { free, total in
            free?.pointee = FakeGPU.capacity - FakeGPU.allocated
            total?.pointee = FakeGPU.capacity
            return 0
        }
        return api
    }
}

@Suite(.serialized) struct FakeGPUTests {
    /// A layer whose weights do not fit says so: what did not fit, its size, the GPU's free and total memory, and what
    /// to do — not "cuMemAlloc failed". A rank holding a part of the experts needs only that part.
    @Test func weightsThatDoNotFitTheGPUSayHowMuchAndWhatToDo() throws {
        let config = MoEConfig(hidden: 64, intermediate: 64, experts: 8, topK: 2)
        let weights = try SyntheticModel.layer(config: config, seed: 5)
        let whole = RepackedLayer(weights), half = RepackedLayer(weights, selection: [0, 2, 4, 6])
        #expect(half.bytes < whole.bytes)
        FakeGPU.capacity = (whole.bytes + half.bytes) / 2
        FakeGPU.allocated = 0
        let device = try CUDADevice(driver: CUDADriver(api: FakeGPU.table(), libraryPath: "fake"))

        do {
            _ = try DeviceLayer(device: device, layer: whole)
            Issue.record("the whole layer cannot fit")
        } catch {
            guard case .outOfMemory(let what, let bytes, let free, let total, let advice) = error else {
                Issue.record("expected outOfMemory, got \(error)")
                return
            }
            #expect(what == "the weights of all 8 experts of one MoE layer")
            #expect(bytes == whole.bytes)
            #expect(total == FakeGPU.capacity)
            #expect(free != nil && free! < whole.bytes)
            #expect(advice.contains("moe launch --ranks"))
            #expect(error.description.contains("out of memory for the weights of all 8 experts"))
        }
        #expect(FakeGPU.allocated == 0, "the buffers allocated before the failure are freed")

        // The rank's half fits, and the buffers it holds are exactly its bytes (each at least 16).
        let layer = try DeviceLayer(device: device, layer: half)
        #expect(layer.experts == [0, 2, 4, 6])
        #expect(layer.bytes == FakeGPU.allocated)
        #expect(layer.bytes == half.bytes)

        // Another error than out of memory passes through unchanged.
        #expect(throws: CUDAError.invalidArgument("not memory")) {
            try device.allocating("x", bytes: 1, advice: "") { () throws(CUDAError) -> Int in
                throw CUDAError.invalidArgument("not memory")
            }
        }
    }
}
