import Dispatch
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import MoECUDA

/// The device-wait and NCCL watchers sleep on a `StopSignal` between polls; joining them must not cost the rest of
/// a poll interval (it cost up to 10 ms per all-to-all phase before).
@Suite struct StopSignalTests {
    @Test func settingItWakesASleeperBeforeItsTimeout() {
        let signal = StopSignal()
        let woke = DispatchSemaphore(value: 0)
        let result = ResultBox()
        let start = MonotonicSeconds.now()
        DispatchQueue.global().async {
            result.value = signal.sleep(microseconds: 30_000_000)
            result.seconds = MonotonicSeconds.now() - start
            woke.signal()
        }
        usleep(50_000)  // the sleeper is (almost surely) waiting by now; either order must work
        signal.set()
        #expect(woke.wait(timeout: .now() + 10) == .success, "the sleeper was not woken by set()")
        #expect(result.value == true)
        #expect(result.seconds < 10, "woke after \(result.seconds) s of a 30 s sleep")
    }

    @Test func aSignalSetBeforeTheSleepStaysSet() {
        let signal = StopSignal()
        #expect(!signal.isSet)
        #expect(signal.sleep(microseconds: 1_000) == false)
        signal.set()
        signal.set()  // twice is harmless
        #expect(signal.isSet)
        #expect(signal.sleep(microseconds: 30_000_000) == true)
        #expect(signal.sleep(microseconds: 30_000_000) == true, "a second sleep after set() must return at once too")
    }

    private final class ResultBox: @unchecked Sendable {
        var value = false
        var seconds = 0.0
    }
}
