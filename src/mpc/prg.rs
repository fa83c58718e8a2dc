//! Seeds and pseudo-random streams: 128-bit seeds from the OS RNG, expanded with AES-128 in
//! counter mode (key = seed, IV = purpose id), so two holders of a seed derive identical
//! streams and the dealer can hand out seeds instead of whole tensors of randomness.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::TryRngCore;

use super::ring::RingTensor;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// A 128-bit PRG seed. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 16]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// A fresh seed from the operating system's RNG.
    pub fn random() -> Self {
        let mut s = [0u8; 16];
        rand::rngs::OsRng.try_fill_bytes(&mut s).expect("OS random number generator unavailable");
        Seed(s)
    }
}

/// One AES-CTR stream.
pub struct Prg {
    cipher: Aes128Ctr,
}

impl Prg {
    pub fn new(seed: Seed, purpose: u64) -> Self {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&purpose.to_le_bytes());
        Self { cipher: Aes128Ctr::new(&seed.0.into(), &iv.into()) }
    }

    pub fn fill(&mut self, out: &mut [u64]) {
        // Keystream XOR zeros = keystream; u64 words little-endian.
        let mut buf = vec![0u8; out.len() * 8];
        self.cipher.apply_keystream(&mut buf);
        for (o, c) in out.iter_mut().zip(buf.chunks_exact(8)) {
            *o = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        }
    }

    pub fn ring(&mut self, shape: &[usize]) -> RingTensor {
        let mut v = vec![0u64; shape.iter().product()];
        self.fill(&mut v);
        RingTensor::new(shape, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_purposes_differ() {
        let s = Seed::random();
        let a = Prg::new(s, 1).ring(&[64]);
        assert_eq!(a, Prg::new(s, 1).ring(&[64]));
        assert_ne!(a, Prg::new(s, 2).ring(&[64]));
        assert_ne!(Seed::random(), s);
        // Bits look balanced.
        let ones: u32 = a.data.iter().map(|x| x.count_ones()).sum();
        assert!((ones as f64 / (64.0 * 64.0) - 0.5).abs() < 0.05);
        assert_eq!(format!("{s:?}"), "Seed(..)");
    }
}
