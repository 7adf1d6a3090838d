import Testing

@testable import MoECUDA

@Test func searchOrderIsEnvironmentThenSystemLoaderThenInstallFolders() {
    let search = LibrarySearch.standard(names: ["libcuda.so.1"], environment: "/opt/a:/opt/b/")
    let candidates = search.candidates
    #expect(candidates[0] == "/opt/a/libcuda.so.1")
    #expect(candidates[1] == "/opt/b/libcuda.so.1")
    #expect(candidates[2] == "libcuda.so.1")
    #expect(candidates.contains("/usr/local/cuda/lib64/libcuda.so.1"))
    #expect(Set(candidates).count == candidates.count)
}

@Test func aMissingLibraryListsEveryPlaceItLookedAndTheVariable() {
    let search = LibrarySearch(names: ["libcuda.so.1"], userDirectories: [], fallbackDirectories: ["/nowhere"])
    do {
        _ = try LibraryLoader.load("libcuda.so.1 (the NVIDIA driver)", search: search) { path in .failed("\(path): cannot open shared object file") }
        Issue.record("loading must fail")
    } catch {
        guard case .libraryNotFound(let library, let attempts) = error else { Issue.record("\(error)"); return }
        #expect(library.hasPrefix("libcuda.so.1"))
        #expect(attempts.contains("$MOE_CUDA_LIBRARY_PATH: not set"))
        #expect(attempts.contains("libcuda.so.1 (system loader path): cannot open shared object file"))
        #expect(attempts.contains("/nowhere/libcuda.so.1: cannot open shared object file"))
        #expect(error.description.contains("Set MOE_CUDA_LIBRARY_PATH"))
        #expect(error.description.contains("/nowhere/libcuda.so.1"))
        #expect(!error.description.contains("\n"))
    }
}

@Test func theFirstCandidateThatOpensWins() throws {
    let search = LibrarySearch(names: ["libx.so"], userDirectories: ["/first", "/second"], fallbackDirectories: [])
    var tried: [String] = []
    let marker = UnsafeMutableRawPointer(bitPattern: 0x1000)!
    let library = try LibraryLoader.load("libx", search: search) { path in
        tried.append(path)
        return path == "/second/libx.so" ? .opened(marker) : .failed("no")
    }
    #expect(library.path == "/second/libx.so")
    #expect(tried == ["/first/libx.so", "/second/libx.so"])
}

@Test func availabilityExplainsItselfEitherWay() {
    let availability = CUDABackend.availability()
    #expect(availability.name == "cuda")
    #expect(!availability.reason.isEmpty)
    if !availability.available {
        // On machines without CUDA the reason names the library and where it was looked for.
        #expect(availability.reason.contains("lib") || availability.reason.contains("device"))
    }
}

/// The shared runtime opens the rank's own GPU by the rank's index on its node, read as RankEnvironment reads it:
/// MOE_LOCAL_RANK, else MOE_RANK. Before, a launcher setting only MOE_RANK left every rank's shared context on GPU 0.
@Test func theProcessGPUFollowsTheRanksLocalIndex() {
    #expect(CUDARuntime.localRank { ["MOE_LOCAL_RANK": "1", "MOE_RANK": "5"][$0] } == 1)
    #expect(CUDARuntime.localRank { ["MOE_RANK": "3"][$0] } == 3)
    #expect(CUDARuntime.localRank { _ in nil } == nil)
    #expect(CUDAExpertParallelLayer.deviceOrdinal(localRank: 3, deviceCount: 2) == 1)
}
