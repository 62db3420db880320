//! A small deterministic generator (SplitMix64): every case is derived from
//! (run seed, case number), so any failure replays alone with
//! `--seed S --case N`.

/// SplitMix64 (Steele, Lea, Flood 2014): fast, 2^64 period, good enough
/// to drive a fuzzer.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The generator of case `case` of a run seeded with `seed`.
    pub fn for_case(seed: u64, case: u64) -> Rng {
        let mut r = Rng::new(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.u64();
        r
    }

    pub fn u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn u32(&mut self) -> u32 {
        (self.u64() >> 32) as u32
    }

    pub fn u8(&mut self) -> u8 {
        (self.u64() >> 56) as u8
    }

    pub fn bool(&mut self) -> bool {
        self.u64() & 1 == 1
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `0..n` as a usize.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.index(from.len())]
    }

    /// A length biased towards small values: `0..=max`, a quarter of the
    /// time exactly at the top or around it.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(8) {
            0 => max,
            1 => max.saturating_sub(self.index(3)),
            2..=4 => self.index(max.min(16) + 1),
            _ => self.index(max + 1),
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let w = self.u64().to_ne_bytes();
            c.copy_from_slice(&w[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// A 64-bit value from the places where checks go wrong: 0, 1, small,
    /// powers of two and their neighbours, sign boundaries, `extra` (the
    /// caller's limits), or anything.
    pub fn edgy(&mut self, extra: &[u64]) -> u64 {
        match self.below(10) {
            0 => self.pick(&[0, 1, 2, 7, 8, 0xff, 0xffff, u32::MAX as u64, u64::MAX]),
            1 => {
                let p = 1u64 << self.below(64);
                p.wrapping_add(self.below(3)).wrapping_sub(1)
            }
            2 => self.pick(&[
                i64::MAX as u64,
                i64::MIN as u64,
                i32::MAX as u64,
                (-1i32) as u32 as u64,
                i32::MIN as i64 as u64,
            ]),
            3..=5 if !extra.is_empty() => {
                let e = self.pick(extra);
                e.wrapping_add(self.below(5)).wrapping_sub(2)
            }
            6 | 7 => self.below(64),
            _ => self.u64(),
        }
    }
}
