import CMoEAtomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One named POSIX shared-memory segment mapped into this process.
///
/// The creator holds an exclusive `flock` on its descriptor for as long as it lives: the kernel drops it when
/// the process exits for any reason (even SIGKILL, even while a zombie), so peers can tell a dead owner from a
/// slow one (`ownerIsGone`). The creator's name is registered with the signal/atexit cleanup of CMoEAtomics
/// until it is unlinked, so no exit path leaves it behind in /dev/shm.
final class SharedMemorySegment: @unchecked Sendable {
    let name: String
    let descriptor: Int32
    let base: UnsafeMutableRawPointer
    let byteCount: Int
    let isOwner: Bool
    private var linked: Bool

    private init(name: String, descriptor: Int32, base: UnsafeMutableRawPointer, byteCount: Int, isOwner: Bool) {
        self.name = name
        self.descriptor = descriptor
        self.base = base
        self.byteCount = byteCount
        self.isOwner = isOwner
        self.linked = isOwner
    }

    deinit {
        munmap(base, byteCount)
        close(descriptor)
        if linked { unlink() }
    }

    /// Creates a new segment of `byteCount` zero bytes; fails if the name exists (a stale or duplicate rank).
    static func create(name: String, byteCount: Int) throws -> SharedMemorySegment {
        guard moe_cleanup_remember(name) == 0 else {
            throw ExpertParallelError.invalidArgument("cannot register \(name) for cleanup (name too long or too many segments)")
        }
        let descriptor = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let code = errno
            moe_cleanup_forget(name)
            if code == EEXIST {
                throw ExpertParallelError.invalidArgument(
                    "shared-memory segment \(name) already exists: another job uses this MOE_JOB_ID, or a rank was started twice")
            }
            throw ExpertParallelError.system(call: "shm_open", object: name, errno: code)
        }
        func fail(_ call: String) -> ExpertParallelError {
            let error = ExpertParallelError.system(call: call, object: "\(name), \(byteCount) bytes", errno: errno)
            close(descriptor)
            shm_unlink(name)
            moe_cleanup_forget(name)
            return error
        }
        guard ftruncate(descriptor, off_t(byteCount)) == 0 else { throw fail("ftruncate") }
        let lock = moe_lock_exclusive(descriptor)
        guard lock == 0 else {
            errno = -lock
            throw fail("flock")
        }
        let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw fail("mmap") }
        return SharedMemorySegment(name: name, descriptor: descriptor, base: address, byteCount: byteCount, isOwner: true)
    }

    /// Opens a peer's segment if it exists and has reached `minimumBytes`; nil while it does not (yet).
    static func openExisting(name: String, minimumBytes: Int) throws -> SharedMemorySegment? {
        let descriptor = shm_open(name, O_RDWR | O_CLOEXEC, 0)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw ExpertParallelError.system(call: "shm_open", object: name, errno: errno)
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            let error = ExpertParallelError.system(call: "fstat", object: name, errno: errno)
            close(descriptor)
            throw error
        }
        let size = Int(info.st_size)
        guard size >= minimumBytes else {
            close(descriptor)
            return nil  // created but not sized yet
        }
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let address, address != MAP_FAILED else {
            let error = ExpertParallelError.system(call: "mmap", object: "\(name), \(size) bytes", errno: errno)
            close(descriptor)
            throw error
        }
        return SharedMemorySegment(name: name, descriptor: descriptor, base: address, byteCount: size, isOwner: false)
    }

    /// Removes the name (mappings stay valid; the memory is freed when the last one goes).
    func unlink() {
        guard linked else { return }
        shm_unlink(name)
        moe_cleanup_forget(name)
        linked = false
    }

    /// True once the creator's process no longer holds its lock (it exited or closed the segment).
    var ownerIsGone: Bool { moe_probe_exclusive_holder_gone(descriptor) == 1 }

    /// Unlinks `name` if it exists (launcher sweeps after ranks that could not clean up, e.g. SIGKILL).
    /// Returns true when something was removed.
    @discardableResult
    static func removeIfPresent(name: String) -> Bool { shm_unlink(name) == 0 }
}

/// Monotonic time in seconds.
enum MonotonicClock {
    static func seconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
    }

    static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    static func sleep(seconds: Double) {
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
