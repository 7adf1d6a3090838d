import Testing

@testable import MoECUDA

@Test func sha256MatchesTheStandardVectors() {
    #expect(SHA256.hash([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(SHA256.hash(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(
        SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    // 1000 bytes crossing many block boundaries, fed in uneven pieces.
    var hash = SHA256()
    let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    hash.update(bytes[0..<3])
    hash.update(bytes[3..<700])
    hash.update(bytes[700...])
    #expect(SHA256.hex(hash.finalize()) == SHA256.hash(bytes))
}

@Test func sha256OfAMillionAs() {
    #expect(SHA256.hash([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
}
