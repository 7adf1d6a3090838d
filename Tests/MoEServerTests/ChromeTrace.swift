import Foundation
import Testing

/// A Chrome trace file parsed with JSONSerialization and checked against the trace event format: an object
/// with `traceEvents`; every event has `name`, `ph`, `pid`, `tid`; complete ("X") events have numeric `ts` and
/// `dur` ≥ 0 (microseconds); metadata ("M") events name their process or thread in `args.name`.
struct ChromeTrace {
    struct Complete {
        var name: String
        var ts: Double
        var dur: Double
        var pid: Int
        var tid: Int
        var flops: Double?
        var bytes: Double?
    }

    struct InvalidTrace: Error, CustomStringConvertible {
        var description: String
    }

    var complete: [Complete] = []
    /// pid → process name from the "process_name" metadata events.
    var processNames: [Int: String] = [:]
    var threadNames: [Int: String] = [:]

    init(json: String) throws {
        let root = try JSONSerialization.jsonObject(with: Data(json.utf8))
        guard let object = root as? [String: Any], let events = object["traceEvents"] as? [[String: Any]] else {
            throw InvalidTrace(description: "not an object with a traceEvents array of objects")
        }
        for (i, event) in events.enumerated() {
            guard let name = event["name"] as? String, let ph = event["ph"] as? String,
                let pid = event["pid"] as? Int, let tid = event["tid"] as? Int
            else { throw InvalidTrace(description: "event \(i) lacks name/ph/pid/tid: \(event)") }
            switch ph {
            case "X":
                guard let ts = (event["ts"] as? NSNumber)?.doubleValue, let dur = (event["dur"] as? NSNumber)?.doubleValue,
                    ts >= 0, dur >= 0
                else { throw InvalidTrace(description: "complete event \(i) lacks numeric ts/dur ≥ 0") }
                let args = event["args"] as? [String: Any]
                complete.append(Complete(
                    name: name, ts: ts, dur: dur, pid: pid, tid: tid,
                    flops: (args?["flops"] as? NSNumber)?.doubleValue, bytes: (args?["bytes"] as? NSNumber)?.doubleValue))
            case "M":
                guard let label = (event["args"] as? [String: Any])?["name"] as? String else {
                    throw InvalidTrace(description: "metadata event \(i) lacks args.name")
                }
                if name == "process_name" { processNames[pid] = label }
                if name == "thread_name" { threadNames[tid] = label }
            default:
                throw InvalidTrace(description: "event \(i) has unexpected phase \(ph)")
            }
        }
    }
}
