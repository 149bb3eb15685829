//! The W5 input: `words.txt` generated exactly as docs/BENCHMARKS.md specifies
//! (SplitMix64, seed 20240601, 10 000-word vocabulary, 1 000 000 lines of 10 words),
//! cached under `target/` and checked against the size and SHA-256 given there.

use std::collections::HashSet;
use std::path::PathBuf;

pub const SHA256: &str = "50d04143c7d414da863ddc49f1428658107182591ac465e38474aee4f44a0805";
pub const BYTES: usize = 74_798_367;
pub const VOCAB: usize = 10_000;
pub const LINES: usize = 1_000_000;
pub const WORDS_PER_LINE: usize = 10;

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The first `lines` lines of the file (all of them for `LINES`).
pub fn generate(lines: usize) -> Vec<u8> {
    let mut rng = SplitMix64(20_240_601);
    let mut seen = HashSet::new();
    let mut vocab: Vec<Vec<u8>> = Vec::with_capacity(VOCAB);
    while vocab.len() < VOCAB {
        let len = 3 + rng.next() % 8;
        let word: Vec<u8> = (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect();
        if seen.insert(word.clone()) {
            vocab.push(word);
        }
    }
    let mut out = Vec::with_capacity(BYTES);
    for _ in 0..lines {
        for k in 0..WORDS_PER_LINE {
            if k > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(&vocab[(rng.next() % VOCAB as u64) as usize]);
        }
        out.push(b'\n');
    }
    out
}

/// `target/words.txt`, generated once and verified (size and SHA-256) on every use.
pub fn path() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = dir.join("words.txt");
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == BYTES && sha256_hex(&bytes) == SHA256 {
            return path;
        }
    }
    let bytes = generate(LINES);
    assert_eq!(bytes.len(), BYTES, "generated words.txt has the wrong size");
    assert_eq!(
        sha256_hex(&bytes),
        SHA256,
        "generated words.txt has the wrong SHA-256"
    );
    std::fs::create_dir_all(&dir).expect("create target dir");
    std::fs::write(&path, &bytes).expect("write target/words.txt");
    path
}

/// FIPS 180-4 SHA-256, enough to check one file.
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}
