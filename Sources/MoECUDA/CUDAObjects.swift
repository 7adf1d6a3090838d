import CCUDA
import Dispatch

/// One GPU and its primary context. Every entry point of MoECUDA makes the context current on the calling
/// thread first (`makeCurrent`), so objects may be used from any thread, one at a time.
public final class CUDADevice: @unchecked Sendable {
    public let driver: CUDADriver
    public let ordinal: Int
    public let handle: CUdevice
    public let context: CUcontext
    public let name: String
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessors: Int
    public let l2CacheBytes: Int
    /// Largest dynamic shared memory one block may opt in to.
    public let maxSharedPerBlock: Int
    public let totalMemory: Int
    public let driverVersion: String

    public init(driver: CUDADriver, ordinal: Int = 0) throws(CUDAError) {
        self.driver = driver
        self.ordinal = ordinal
        let count = try driver.deviceCount()
        guard count > 0 else { throw .noDevice("the driver reports no CUDA devices") }
        guard ordinal < count else { throw .noDevice("device \(ordinal) requested; the driver reports \(count)") }
        var device: CUdevice = 0
        try driver.call("cuDeviceGet", driver.api.cuDeviceGet?(&device, Int32(ordinal)))
        handle = device
        var nameBytes = [CChar](repeating: 0, count: 256)
        try driver.call("cuDeviceGetName", driver.api.cuDeviceGetName?(&nameBytes, Int32(nameBytes.count), device))
        name = cString(nameBytes)
        func attribute(_ id: Int32) throws(CUDAError) -> Int {
            var value: Int32 = 0
            try driver.call("cuDeviceGetAttribute", driver.api.cuDeviceGetAttribute?(&value, id, device))
            return Int(value)
        }
        computeCapability = (
            try attribute(Int32(CCUDA_ATTR_COMPUTE_CAPABILITY_MAJOR)),
            try attribute(Int32(CCUDA_ATTR_COMPUTE_CAPABILITY_MINOR))
        )
        multiprocessors = try attribute(Int32(CCUDA_ATTR_MULTIPROCESSOR_COUNT))
        l2CacheBytes = try attribute(Int32(CCUDA_ATTR_L2_CACHE_SIZE))
        maxSharedPerBlock = try attribute(Int32(CCUDA_ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN))
        var bytes = 0
        try driver.call("cuDeviceTotalMem", driver.api.cuDeviceTotalMem?(&bytes, device))
        totalMemory = bytes
        driverVersion = try driver.version()
        var context: CUcontext?
        try driver.call("cuDevicePrimaryCtxRetain", driver.api.cuDevicePrimaryCtxRetain?(&context, device))
        guard let context else { throw .noDevice("cuDevicePrimaryCtxRetain returned no context") }
        self.context = context
        try makeCurrent()
    }

    deinit {
        _ = driver.api.cuDevicePrimaryCtxRelease?(handle)
    }

    public func makeCurrent() throws(CUDAError) {
        try driver.checkHealthy("cuCtxSetCurrent")
        try driver.call("cuCtxSetCurrent", driver.api.cuCtxSetCurrent?(context))
    }

    /// NVRTC's --gpu-architecture for this device: sm_90a on Hopper (wgmma and setmaxnreg need the "a").
    public var architecture: String {
        let (major, minor) = computeCapability
        return major == 9 && minor == 0 ? "sm_90a" : "sm_\(major)\(minor)"
    }

    public var summary: String {
        "\(name), \(multiprocessors) SMs, sm_\(computeCapability.major)\(computeCapability.minor), "
            + "\(totalMemory >> 30) GiB, \(l2CacheBytes >> 20) MiB L2, CUDA driver \(driverVersion)"
    }

    public func synchronize() throws(CUDAError) {
        try driver.checkHealthy("cuCtxSynchronize")
        try driver.call("cuCtxSynchronize", driver.api.cuCtxSynchronize?())
    }

    /// (free, total) device memory in bytes.
    public func memoryInfo() throws(CUDAError) -> (free: Int, total: Int) {
        var free = 0, total = 0
        try driver.call("cuMemGetInfo", driver.api.cuMemGetInfo?(&free, &total))
        return (free, total)
    }

    /// Runs `allocate`; the driver's out-of-memory result becomes `.outOfMemory` naming `what`, its size, the
    /// device's free memory then and `advice` — "cuMemAlloc failed" alone does not say which part did not fit.
    func allocating<T>(
        _ what: String, bytes: Int?, advice: String, _ allocate: () throws(CUDAError) -> T
    ) throws(CUDAError) -> T {
        do {
            return try allocate()
        } catch {
            guard error.isOutOfMemory else { throw error }
            let free = try? memoryInfo().free
            throw .outOfMemory(what: what, bytes: bytes, free: free, total: totalMemory, advice: advice)
        }
    }
}

/// Device memory, freed on deinit. `address` is what kernels receive.
public final class DeviceBuffer: @unchecked Sendable {
    public let device: CUDADevice
    public let address: CUdeviceptr
    public let byteCount: Int

    public init(device: CUDADevice, byteCount: Int) throws(CUDAError) {
        self.device = device
        self.byteCount = max(byteCount, 16)
        var address: CUdeviceptr = 0
        try device.driver.checkHealthy("cuMemAlloc")
        try device.driver.call("cuMemAlloc", device.driver.api.cuMemAlloc?(&address, self.byteCount))
        self.address = address
    }

    deinit {
        _ = device.driver.api.cuMemFree?(address)
    }

    /// A setup-time upload, complete on return. From pageable memory cuMemcpyHtoD may return before its DMA has
    /// landed, and kernels on the non-blocking streams are not ordered after it, hence the context sync. In a
    /// forward pass use `uploadAsync` on the pass's stream.
    public func upload<T>(_ values: [T], offsetBytes: Int = 0) throws(CUDAError) {
        let bytes = values.count * MemoryLayout<T>.stride
        guard offsetBytes + bytes <= byteCount else {
            throw .invalidArgument("upload of \(bytes) bytes at \(offsetBytes) overflows a \(byteCount)-byte buffer")
        }
        guard bytes > 0 else { return }  // an empty array has no base address to copy from (a rank with no experts)
        let driver = device.driver
        let result = values.withUnsafeBytes { raw in
            driver.api.cuMemcpyHtoD?(address + CUdeviceptr(offsetBytes), raw.baseAddress, bytes)
        }
        try driver.call("cuMemcpyHtoD", result)
        try driver.call("cuCtxSynchronize", driver.api.cuCtxSynchronize?())
    }

    public func uploadAsync<T>(_ values: [T], stream: CUDAStream) throws(CUDAError) {
        let bytes = values.count * MemoryLayout<T>.stride
        guard bytes <= byteCount else { throw .invalidArgument("upload of \(bytes) bytes overflows a \(byteCount)-byte buffer") }
        let driver = device.driver
        // Pageable host memory: the driver stages the copy before returning, so `values` may go away after.
        let result = values.withUnsafeBytes { raw in
            driver.api.cuMemcpyHtoDAsync?(address, raw.baseAddress, bytes, stream.handle)
        }
        try driver.call("cuMemcpyHtoDAsync", result)
    }

    /// Copies `count` elements back (synchronous).
    public func download<T>(_ type: T.Type, count: Int, offsetBytes: Int = 0) throws(CUDAError) -> [T] {
        let bytes = count * MemoryLayout<T>.stride
        guard offsetBytes + bytes <= byteCount else {
            throw .invalidArgument("download of \(bytes) bytes at \(offsetBytes) overflows a \(byteCount)-byte buffer")
        }
        let driver = device.driver
        var failure: Int32? = 0
        let values = [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            failure = driver.api.cuMemcpyDtoH?(UnsafeMutableRawPointer(buffer.baseAddress), address + CUdeviceptr(offsetBytes), bytes)
            initialized = count
        }
        try driver.call("cuMemcpyDtoH", failure)
        return values
    }

    /// Fills every byte with `value` (0xFF poisons bf16 and f32 with NaN, and i32 with −1).
    public func fill(byte value: UInt8, stream: CUDAStream) throws(CUDAError) {
        try device.driver.call("cuMemsetD8Async", device.driver.api.cuMemsetD8Async?(address, value, byteCount, stream.handle))
    }
}

public final class CUDAStream: @unchecked Sendable {
    public let device: CUDADevice
    public let handle: CUstream

    public init(device: CUDADevice) throws(CUDAError) {
        self.device = device
        var stream: CUstream?
        try device.driver.call("cuStreamCreate", device.driver.api.cuStreamCreate?(&stream, UInt32(CCUDA_STREAM_NON_BLOCKING)))
        guard let stream else { throw .invalidArgument("cuStreamCreate returned no stream") }
        handle = stream
    }

    deinit { _ = device.driver.api.cuStreamDestroy?(handle) }

    /// Device seconds of each of `iterations` consecutive `launch(i)` calls on this stream, with an event recorded between
    /// every two (so launch gaps count, as in a replayed layer), after `warmup` untimed calls `launch(0..<warmup)`.
    public func backToBackSeconds(warmup: Int, iterations: Int, _ launch: (Int) throws -> Void) throws -> [Double] {
        for i in 0..<warmup { try launch(i) }
        try synchronize()
        let events = try (0...iterations).map { _ throws(CUDAError) in try CUDAEvent(device: device) }
        try events[0].record(self)
        for i in 0..<iterations {
            try launch(i)
            try events[i + 1].record(self)
        }
        try synchronize()
        return try (0..<iterations).map { i throws(CUDAError) in Double(try events[i + 1].milliseconds(since: events[i])) * 1e-3 }
    }

    public func synchronize() throws(CUDAError) {
        try device.driver.checkHealthy("cuStreamSynchronize")
        try device.driver.call("cuStreamSynchronize", device.driver.api.cuStreamSynchronize?(handle))
    }

    /// Starts recording this stream's work into a graph (thread-local: other threads' CUDA calls are unaffected).
    public func beginCapture() throws(CUDAError) {
        try device.driver.call(
            "cuStreamBeginCapture", device.driver.api.cuStreamBeginCapture?(handle, Int32(CCUDA_CAPTURE_MODE_THREAD_LOCAL)))
    }

    public func endCapture() throws(CUDAError) -> CUDAGraph {
        var graph: CUgraph?
        try device.driver.call("cuStreamEndCapture", device.driver.api.cuStreamEndCapture?(handle, &graph))
        guard let graph else { throw .invalidArgument("cuStreamEndCapture returned no graph") }
        return CUDAGraph(device: device, handle: graph)
    }
}

public final class CUDAEvent: @unchecked Sendable {
    public let device: CUDADevice
    public let handle: CUevent

    public init(device: CUDADevice) throws(CUDAError) {
        self.device = device
        var event: CUevent?
        try device.driver.call("cuEventCreate", device.driver.api.cuEventCreate?(&event, UInt32(CCUDA_EVENT_DEFAULT)))
        guard let event else { throw .invalidArgument("cuEventCreate returned no event") }
        handle = event
    }

    deinit { _ = device.driver.api.cuEventDestroy?(handle) }

    public func record(_ stream: CUDAStream) throws(CUDAError) {
        try device.driver.call("cuEventRecord", device.driver.api.cuEventRecord?(handle, stream.handle))
    }

    /// Records into a graph being captured as an event record node (plain cuEventRecord during capture only
    /// orders work), so the event can time kernels inside graph replays.
    public func recordInGraph(_ stream: CUDAStream) throws(CUDAError) {
        try device.driver.call(
            "cuEventRecordWithFlags",
            device.driver.api.cuEventRecordWithFlags?(handle, stream.handle, UInt32(CCUDA_EVENT_RECORD_EXTERNAL)))
    }

    public func synchronize() throws(CUDAError) {
        try device.driver.call("cuEventSynchronize", device.driver.api.cuEventSynchronize?(handle))
    }

    /// Milliseconds from `start` to this event (both recorded and complete).
    public func milliseconds(since start: CUDAEvent) throws(CUDAError) -> Float {
        var value: Float = 0
        try device.driver.call("cuEventElapsedTime", device.driver.api.cuEventElapsedTime?(&value, start.handle, handle))
        return value
    }
}

/// A loaded cubin.
public final class CUDAModule: @unchecked Sendable {
    public let device: CUDADevice
    public let handle: CUmodule

    public init(device: CUDADevice, image: [UInt8]) throws(CUDAError) {
        self.device = device
        var module: CUmodule?
        let result = image.withUnsafeBytes { device.driver.api.cuModuleLoadData?(&module, $0.baseAddress) }
        try device.driver.call("cuModuleLoadData", result)
        guard let module else { throw .invalidArgument("cuModuleLoadData returned no module") }
        handle = module
    }

    deinit { _ = device.driver.api.cuModuleUnload?(handle) }

    /// Each kernel's dynamic shared-memory limit, shared by every wrapper of that kernel (cached modules hand out
    /// several): the limit belongs to the CUfunction, not to a wrapper.
    private var sharedLimits: [String: CUDAFunction.SharedLimit] = [:]
    private let lock = DispatchSemaphore(value: 1)

    public func function(_ name: String) throws(CUDAError) -> CUDAFunction {
        var function: CUfunction?
        try device.driver.call("cuModuleGetFunction", device.driver.api.cuModuleGetFunction?(&function, handle, name))
        guard let function else { throw .invalidArgument("no kernel \(name)") }
        lock.wait()
        let limit = sharedLimits[name] ?? CUDAFunction.SharedLimit()
        sharedLimits[name] = limit
        lock.signal()
        return CUDAFunction(module: self, handle: function, name: name, sharedLimit: limit)
    }
}

public struct LaunchShape: Sendable, Equatable {
    public var grid: (x: Int, y: Int, z: Int)
    public var block: Int
    public var sharedBytes: Int

    public init(grid: (x: Int, y: Int, z: Int), block: Int, sharedBytes: Int = 0) {
        self.grid = grid
        self.block = block
        self.sharedBytes = sharedBytes
    }

    public static func == (a: LaunchShape, b: LaunchShape) -> Bool {
        a.grid == b.grid && a.block == b.block && a.sharedBytes == b.sharedBytes
    }
}

public final class CUDAFunction: @unchecked Sendable {
    public let module: CUDAModule
    public let handle: CUfunction
    public let name: String
    /// Dynamic shared memory the function may use without opting in (shared by the wrappers of one kernel).
    private let sharedLimit: SharedLimit

    /// The default 48 KiB covers static and dynamic memory together, so requests above 40 KiB opt in (a kernel's few
    /// KiB of static shared memory would otherwise make a request just under 48 KiB fail at launch).
    final class SharedLimit: @unchecked Sendable {
        var bytes = 40 * 1024
        let lock = DispatchSemaphore(value: 1)
    }

    init(module: CUDAModule, handle: CUfunction, name: String, sharedLimit: SharedLimit) {
        self.module = module
        self.handle = handle
        self.name = name
        self.sharedLimit = sharedLimit
    }

    public var registers: Int {
        var value: Int32 = 0
        _ = module.device.driver.api.cuFuncGetAttribute?(&value, Int32(CCUDA_FUNC_ATTR_NUM_REGS), handle)
        return Int(value)
    }

    /// Raises the dynamic shared memory limit past the default 48 KiB when a launch needs it. Called before
    /// graph capture for every launch the graph will hold, so capture records launches only.
    /// The limit is the kernel's, shared by every wrapper of it: it only ever goes up.
    public func allowSharedMemory(_ bytes: Int) throws(CUDAError) {
        sharedLimit.lock.wait()
        defer { sharedLimit.lock.signal() }
        guard bytes > sharedLimit.bytes else { return }
        guard bytes <= module.device.maxSharedPerBlock else {
            throw .invalidArgument("\(name) needs \(bytes) bytes of shared memory; the device allows \(module.device.maxSharedPerBlock)")
        }
        try module.device.driver.call(
            "cuFuncSetAttribute",
            module.device.driver.api.cuFuncSetAttribute?(handle, Int32(CCUDA_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES), Int32(bytes)))
        sharedLimit.bytes = bytes
    }

    /// Launches with one by-value parameter struct (all MoEKit kernels take exactly one). `programmatic`: the
    /// launch may overlap the previous kernel in the stream (programmatic dependent launch, sm_90+); the kernel
    /// itself waits (griddepcontrol.wait) before reading what that kernel wrote. Ignored when the driver lacks
    /// cuLaunchKernelEx or the device is older than sm_90.
    public func launch<Parameters>(
        _ shape: LaunchShape, stream: CUDAStream, parameters: Parameters, programmatic: Bool = false
    ) throws(CUDAError) {
        guard shape.grid.x > 0, shape.grid.y > 0, shape.grid.z > 0 else { return }
        try allowSharedMemory(shape.sharedBytes)
        var copy = parameters
        let driver = module.device.driver
        let useEx = programmatic && driver.api.cuLaunchKernelEx != nil && module.device.computeCapability.major >= 9
        let result = withUnsafeMutablePointer(to: &copy) { pointer -> Int32? in
            var arguments: [UnsafeMutableRawPointer?] = [UnsafeMutableRawPointer(pointer)]
            return arguments.withUnsafeMutableBufferPointer { list -> Int32? in
                if useEx {
                    var attribute = CCUDALaunchAttribute()
                    attribute.id = Int32(CCUDA_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
                    attribute.value.value = 1
                    return withUnsafeMutablePointer(to: &attribute) { attributePointer -> Int32? in
                        var config = CCUDALaunchConfig(
                            gridDimX: UInt32(shape.grid.x), gridDimY: UInt32(shape.grid.y), gridDimZ: UInt32(shape.grid.z),
                            blockDimX: UInt32(shape.block), blockDimY: 1, blockDimZ: 1, sharedMemBytes: UInt32(shape.sharedBytes),
                            hStream: stream.handle, attrs: attributePointer, numAttrs: 1)
                        return driver.api.cuLaunchKernelEx?(&config, handle, list.baseAddress, nil)
                    }
                }
                return driver.api.cuLaunchKernel?(
                    handle, UInt32(shape.grid.x), UInt32(shape.grid.y), UInt32(shape.grid.z), UInt32(shape.block), 1, 1,
                    UInt32(shape.sharedBytes), stream.handle, list.baseAddress, nil)
            }
        }
        try driver.call(useEx ? "cuLaunchKernelEx" : "cuLaunchKernel", result)
    }

    /// Launches with several scalar arguments, each passed by address.
    public func launch(_ shape: LaunchShape, stream: CUDAStream, arguments: [KernelArgument]) throws(CUDAError) {
        try allowSharedMemory(shape.sharedBytes)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, arguments.count) * 8, alignment: 8)
        defer { storage.deallocate() }
        var list: [UnsafeMutableRawPointer?] = []
        for (i, argument) in arguments.enumerated() {
            let slot = storage + i * 8
            switch argument {
            case .u64(let v): slot.storeBytes(of: v, as: UInt64.self)
            case .i32(let v): slot.storeBytes(of: v, as: Int32.self)
            case .u32(let v): slot.storeBytes(of: v, as: UInt32.self)
            case .f32(let v): slot.storeBytes(of: v, as: Float.self)
            }
            list.append(slot)
        }
        let driver = module.device.driver
        let result = list.withUnsafeMutableBufferPointer { buffer in
            driver.api.cuLaunchKernel?(
                handle, UInt32(shape.grid.x), UInt32(shape.grid.y), UInt32(shape.grid.z), UInt32(shape.block), 1, 1,
                UInt32(shape.sharedBytes), stream.handle, buffer.baseAddress, nil)
        }
        try driver.call("cuLaunchKernel", result)
    }
}

/// One scalar kernel argument (for kernels that do not take a parameter struct).
public enum KernelArgument: Sendable {
    case u64(UInt64)
    case i32(Int32)
    case u32(UInt32)
    case f32(Float)
}

public final class CUDAGraph: @unchecked Sendable {
    public let device: CUDADevice
    public let handle: CUgraph

    init(device: CUDADevice, handle: CUgraph) {
        self.device = device
        self.handle = handle
    }

    deinit { _ = device.driver.api.cuGraphDestroy?(handle) }

    public func instantiate() throws(CUDAError) -> CUDAGraphExec {
        var exec: CUgraphExec?
        try device.driver.call("cuGraphInstantiateWithFlags", device.driver.api.cuGraphInstantiate?(&exec, handle, 0))
        guard let exec else { throw .invalidArgument("cuGraphInstantiate returned nothing") }
        return CUDAGraphExec(device: device, handle: exec)
    }
}

public final class CUDAGraphExec: @unchecked Sendable {
    public let device: CUDADevice
    public let handle: CUgraphExec

    init(device: CUDADevice, handle: CUgraphExec) {
        self.device = device
        self.handle = handle
    }

    deinit { _ = device.driver.api.cuGraphExecDestroy?(handle) }

    public func launch(_ stream: CUDAStream) throws(CUDAError) {
        try device.driver.call("cuGraphLaunch", device.driver.api.cuGraphLaunch?(handle, stream.handle))
    }
}
