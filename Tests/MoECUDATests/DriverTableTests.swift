import CCUDA
import Testing

@testable import MoECUDA

/// A fake driver whose calls fail with fixed codes: exercises the choke point with no GPU and no libcuda.
enum FakeDriver {
    static func name(for code: Int32) -> StaticString {
        switch code {
        case 2: "CUDA_ERROR_OUT_OF_MEMORY"
        case 700: "CUDA_ERROR_ILLEGAL_ADDRESS"
        default: "CUDA_ERROR_UNKNOWN"
        }
    }

    static func table() -> CCUDADriverAPI {
        var api = CCUDADriverAPI()
        api.cuGetErrorName = { code, out in
            out?.pointee = UnsafeRawPointer(FakeDriver.name(for: code).utf8Start).assumingMemoryBound(to: CChar.self)
            return 0
        }
        api.cuGetErrorString = { _, out in
            let text: StaticString = "fake driver message"
            out?.pointee = UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
            return 0
        }
        api.cuMemAlloc = { _, _ in 2 }  // out of memory
        api.cuCtxSynchronize = { 700 }  // illegal address: sticky
        api.cuDriverGetVersion = { version in
            version?.pointee = 13000
            return 0
        }
        return api
    }
}

@Test func driverErrorsCarryTheCallAndTheDriversErrorName() throws {
    let driver = CUDADriver(api: FakeDriver.table(), libraryPath: "fake")
    var pointer: CUdeviceptr = 0
    #expect(throws: CUDAError.driver(call: "cuMemAlloc", code: 2, name: "CUDA_ERROR_OUT_OF_MEMORY", message: "fake driver message")) {
        try driver.call("cuMemAlloc", driver.api.cuMemAlloc?(&pointer, 1024))
    }
    #expect(try driver.version() == "13.0")
}

@Test func aMissingEntryPointIsATypedErrorNotACrash() {
    let driver = CUDADriver(api: FakeDriver.table(), libraryPath: "fake")
    #expect(throws: CUDAError.missingEntryPoint("cuInit")) { try driver.call("cuInit", driver.api.cuInit?(0)) }
}

@Test func stickyFaultsPoisonLaterCalls() {
    let driver = CUDADriver(api: FakeDriver.table(), libraryPath: "fake")
    #expect(throws: (any Error).self) { try driver.call("cuCtxSynchronize", driver.api.cuCtxSynchronize?()) }
    do {
        try driver.checkHealthy("cuLaunchKernel")
        Issue.record("a sticky fault must make later calls fail")
    } catch {
        guard case .deviceFaulted(let call, let fault) = error else { Issue.record("wrong error \(error)"); return }
        #expect(call == "cuLaunchKernel")
        #expect(fault.contains("CUDA_ERROR_ILLEGAL_ADDRESS"))
    }
}

@Test func nonStickyErrorsLeaveTheDriverUsable() throws {
    let driver = CUDADriver(api: FakeDriver.table(), libraryPath: "fake")
    var pointer: CUdeviceptr = 0
    #expect(throws: (any Error).self) { try driver.call("cuMemAlloc", driver.api.cuMemAlloc?(&pointer, 1)) }
    try driver.checkHealthy("cuMemAlloc")
}

@Test func unknownCodesGetAReadableName() {
    var api = FakeDriver.table()
    api.cuGetErrorName = { _, _ in 1 }  // the driver does not know the code
    let driver = CUDADriver(api: api, libraryPath: "fake")
    #expect(driver.errorName(12345) == "CUDA_ERROR_12345")
}

@Test func resolvingALibraryWithoutTheDriverSymbolsNamesWhatIsMissing() throws {
    // libc is loaded in every process and exports none of the driver's entry points.
    let library = try LibraryLoader.load("libc", search: LibrarySearch(names: ["libc.so.6"], userDirectories: [], fallbackDirectories: []))
    var api = CCUDADriverAPI()
    var missing = [CChar](repeating: 0, count: 4096)
    let absent = ccuda_resolve_driver(library.handle, &api, &missing, missing.count)
    #expect(absent > 40)
    let names = cString(missing)
    #expect(names.contains("cuInit"))
    #expect(names.contains("cuMemAlloc_v2"))
    #expect(api.cuIpcGetMemHandle == nil)  // optional symbols are simply absent
}
