//! The fuzzer's seeded mutations (bit flips, interesting bytes, truncations, splices,
//! insertions and deletions, huge lengths in headers, extreme numbers in text).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Numbers that break assumptions when they replace a number in a text file.
const EXTREME_NUMBERS: [&str; 10] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "NaN",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "1e-320",
    "65",
];

/// Bytes that are often special to a parser.
const INTERESTING_BYTES: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'9', b'-', b'"', b'(', b')', b',', b'}',
];

/// Stacks one to three random mutations on a random seed file.
pub fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=3) {
        let len = b.len();
        let pos = |rng: &mut ChaCha8Rng| rng.random_range(0..len.max(1));
        match rng.random_range(0..8) {
            0 if len > 0 => {
                for _ in 0..rng.random_range(1..=4) {
                    let i = pos(rng);
                    b[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 if len > 0 => {
                let i = pos(rng);
                b[i] = INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())];
            }
            2 => b.truncate(rng.random_range(0..=len)),
            3 => {
                // Splice: a piece of another seed (or this one) over or into this one.
                let other = &seeds[rng.random_range(0..seeds.len())];
                let start = rng.random_range(0..other.len());
                let end = rng.random_range(start..=other.len().min(start + 64));
                let at = rng.random_range(0..=len);
                if rng.random_bool(0.5) {
                    b.splice(at..at, other[start..end].iter().copied());
                } else {
                    let stop = (at + end - start).min(len);
                    b.splice(at..stop, other[start..end].iter().copied());
                }
            }
            4 if len > 0 => {
                let at = pos(rng);
                let stop = (at + rng.random_range(1..=16)).min(len);
                b.drain(at..stop);
            }
            5 => {
                let at = rng.random_range(0..=len);
                let extra: Vec<u8> = (0..rng.random_range(1..=16))
                    .map(|_| rng.random())
                    .collect();
                b.splice(at..at, extra);
            }
            6 => {
                // A huge length into a header field (half the time in the first 16 bytes).
                let value: u64 = match rng.random_range(0..4) {
                    0 => u64::MAX,
                    1 => u32::MAX as u64,
                    2 => 1 << 31,
                    _ => 1 << rng.random_range(16..63),
                };
                let width = if rng.random_bool(0.5) { 4 } else { 8 };
                let bytes = if rng.random_bool(0.5) {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let bytes = if width == 4 && rng.random_bool(0.5) {
                    &bytes[4..]
                } else {
                    &bytes[..width]
                };
                if len >= width {
                    let limit = if rng.random_bool(0.5) {
                        16.min(len)
                    } else {
                        len
                    };
                    let at = rng.random_range(0..=limit.saturating_sub(width));
                    b[at..at + width].copy_from_slice(bytes);
                }
            }
            _ => {
                // Text: a run of digits replaced by an extreme number.
                let digits: Vec<usize> = (0..len).filter(|&i| b[i].is_ascii_digit()).collect();
                if let Some(&i) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let mut j = i;
                    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                        j += 1;
                    }
                    let n = EXTREME_NUMBERS[rng.random_range(0..EXTREME_NUMBERS.len())];
                    b.splice(i..j, n.bytes());
                }
            }
        }
    }
    b
}
