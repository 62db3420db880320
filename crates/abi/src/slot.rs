//! Region slots of a VM domain, and the bells that replace futex wakes
//! across the VM boundary.
//!
//! A VM domain cannot map a client's memfd: its regions must be guest
//! memory. The daemon preallocates a pool of *slots* (as the paper
//! preallocates its shared pages), each a sealed memfd that QEMU shows the
//! guest as one NVDIMM, which the domain's PID 1 turns into a device-DAX
//! node (`/dev/daxN.M`, a write-back mapping of the very same pages). A
//! client gets the memfd of the one slot it was given; the guest maps the
//! matching DAX device.
//!
//! The guest kernel keeps a small info block at the start of the NVDIMM,
//! so the DAX device's byte 0 sits at some offset into the slot file. The
//! guest learns which DAX node is which slot from a tag the daemon writes
//! into the last page of each slot file (inside every DAX view), and
//! reports each slot's offset back (`DomainReply::Slots`); the daemon checks
//! it before handing out the slot.
//!
//! Slot file (host offsets): `[0, off)` guest info block,
//! `[off, off + REGION_SIZE)` request region, then the state page, and the
//! tag in the file's last page.
//!
//! Futexes do not cross the boundary either, so wakes travel as 4-byte
//! [`Bell`] messages on a virtio-serial port: down (client rang the
//! doorbell or asked for an interrupt; the daemon sees it with
//! `futex_waitv` and relays it) and up (a call completed for a caller
//! that sleeps; the daemon does the futex wake on the host).

use crate::layout::{round_up, NUM_ENTRIES, PAGE_SIZE, REGION_SIZE, STATE_SIZE};

/// Size of one slot file: region + state page + tag, plus room for the
/// guest's info block, rounded to 2 MiB (NVDIMM alignment).
pub const SLOT_FILE_SIZE: usize =
    round_up(REGION_SIZE + STATE_SIZE + PAGE_SIZE + (2 << 20), 2 << 20);
/// Offset of the state page inside the DAX view of a slot.
pub const STATE_IN_SLOT: usize = REGION_SIZE;
/// Bytes of a slot the domain uses, from the DAX view's start.
pub const SLOT_USED: usize = REGION_SIZE + STATE_SIZE;
/// Offset of the tag page in the slot file (and, for the guest, the last
/// page of the DAX view).
pub const TAG_OFFSET: usize = SLOT_FILE_SIZE - PAGE_SIZE;
/// Most slots a VM domain can have (bells carry the slot in 8 bits, and
/// the daemon's `futex_waitv` watches two words per slot, at most 128).
pub const MAX_SLOTS: usize = 63;
/// `b"VIRTUOST"`: start of a slot tag.
pub const TAG_MAGIC: u64 = u64::from_le_bytes(*b"VIRTUOST");

const _: () = {
    assert!(SLOT_FILE_SIZE.is_multiple_of(2 << 20));
    assert!(SLOT_FILE_SIZE >= SLOT_USED + PAGE_SIZE + (2 << 20));
    assert!(STATE_IN_SLOT.is_multiple_of(PAGE_SIZE));
    assert!(2 * MAX_SLOTS <= 128, "futex_waitv takes at most 128 words");
};

/// The tag the daemon writes at [`TAG_OFFSET`]: magic, slot index, file
/// size (little-endian u64 each).
pub fn encode_tag(slot: u32) -> [u8; 24] {
    let mut t = [0u8; 24];
    t[..8].copy_from_slice(&TAG_MAGIC.to_le_bytes());
    t[8..16].copy_from_slice(&(slot as u64).to_le_bytes());
    t[16..24].copy_from_slice(&(SLOT_FILE_SIZE as u64).to_le_bytes());
    t
}

/// The slot index in a tag, if it is one of ours.
pub fn decode_tag(t: &[u8]) -> Option<u32> {
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(t.get(i..i + 8)?.try_into().ok()?)) };
    let (magic, slot, size) = (word(0)?, word(8)?, word(16)?);
    if magic != TAG_MAGIC || size != SLOT_FILE_SIZE as u64 || slot >= MAX_SLOTS as u64 {
        return None;
    }
    Some(slot as u32)
}

/// The offset of a DAX view of `dax_size` bytes into its slot file, if the
/// view holds everything the domain uses (the DAX area ends where the
/// file does: the guest only reserves space at the start).
pub fn view_offset(dax_size: u64) -> Option<u64> {
    let off = (SLOT_FILE_SIZE as u64).checked_sub(dax_size)?;
    (off.is_multiple_of(PAGE_SIZE as u64) && dax_size >= (SLOT_USED + PAGE_SIZE) as u64)
        .then_some(off)
}

/// Check an offset the guest reported for a slot.
pub fn valid_offset(off: u64) -> bool {
    off.is_multiple_of(PAGE_SIZE as u64)
        && off
            .checked_add((SLOT_USED + PAGE_SIZE) as u64)
            .is_some_and(|end| end <= SLOT_FILE_SIZE as u64)
}

/// Check the guest's report of where each of `count` slots' DAX view
/// starts (`DomainReply::Slots`): every slot reported exactly once, at a
/// valid offset. The offsets by slot index, or what is wrong.
pub fn check_views(count: usize, views: &[crate::control::SlotView]) -> Result<Vec<u64>, String> {
    let mut offsets: Vec<Option<u64>> = vec![None; count];
    for v in views {
        let seen = offsets
            .get_mut(v.slot as usize)
            .ok_or_else(|| format!("the guest reported slot {}, which does not exist", v.slot))?;
        if !valid_offset(v.offset) {
            return Err(format!("slot {}: bad offset {}", v.slot, v.offset));
        }
        if seen.replace(v.offset).is_some() {
            return Err(format!("slot {} reported twice", v.slot));
        }
    }
    offsets
        .iter()
        .enumerate()
        .map(|(i, o)| o.ok_or_else(|| format!("the guest did not find slot {i}")))
        .collect()
}

/// One wake across the VM boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bell {
    /// Down: the client bumped its region's `doorbell` (workers sleep).
    Doorbell { slot: u8 },
    /// Down: the client bumped `interrupt_bell` (a signal arrived).
    Interrupt { slot: u8 },
    /// Up: entry `entry` of `slot` completed and its caller sleeps.
    Complete { slot: u8, entry: u16 },
    /// Up: the domain server's main loop is alive (the VM's heartbeat,
    /// what the heartbeat page is for a process domain).
    Heartbeat,
}

/// Size of an encoded bell.
pub const BELL_SIZE: usize = 4;

impl Bell {
    pub fn encode(self) -> [u8; BELL_SIZE] {
        let (kind, slot, entry) = match self {
            Bell::Doorbell { slot } => (1u8, slot, 0u16),
            Bell::Interrupt { slot } => (2, slot, 0),
            Bell::Complete { slot, entry } => (3, slot, entry),
            Bell::Heartbeat => (4, 0, 0),
        };
        let e = entry.to_le_bytes();
        [kind, slot, e[0], e[1]]
    }

    /// Decode a bell from the peer: unknown kinds, slots or entries out of
    /// range are refused.
    pub fn decode(b: [u8; BELL_SIZE]) -> Option<Bell> {
        let (kind, slot, entry) = (b[0], b[1], u16::from_le_bytes([b[2], b[3]]));
        if slot as usize >= MAX_SLOTS {
            return None;
        }
        match kind {
            1 if entry == 0 => Some(Bell::Doorbell { slot }),
            2 if entry == 0 => Some(Bell::Interrupt { slot }),
            3 if (entry as usize) < NUM_ENTRIES => Some(Bell::Complete { slot, entry }),
            4 if slot == 0 && entry == 0 => Some(Bell::Heartbeat),
            _ => None,
        }
    }
}

/// Reassembles bells from a byte stream read in arbitrary pieces (a
/// virtio-serial port delivers whatever the peer wrote, not whole bells).
pub struct BellReader {
    buf: [u8; 64 * BELL_SIZE],
    have: usize,
}

impl Default for BellReader {
    fn default() -> Self {
        BellReader {
            buf: [0; 64 * BELL_SIZE],
            have: 0,
        }
    }
}

impl BellReader {
    /// Where to read the next bytes into (never empty).
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.have..]
    }

    /// `n` bytes were read into `space()`: hand every whole bell to `each`
    /// (`Err` with the raw bytes for one that does not decode) and keep the
    /// partial rest. A count larger than the space is clamped to it.
    pub fn filled(&mut self, n: usize, each: &mut dyn FnMut(Result<Bell, [u8; BELL_SIZE]>)) {
        self.have += n.min(self.buf.len() - self.have);
        let whole = self.have / BELL_SIZE * BELL_SIZE;
        for b in self.buf[..whole].chunks_exact(BELL_SIZE) {
            let raw = [b[0], b[1], b[2], b[3]];
            each(Bell::decode(raw).ok_or(raw));
        }
        self.buf.copy_within(whole..self.have, 0);
        self.have -= whole;
    }

    /// Bytes of an incomplete bell kept for the next read.
    pub fn pending(&self) -> usize {
        self.have
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_roundtrip_and_reject_garbage() {
        assert_eq!(decode_tag(&encode_tag(5)), Some(5));
        assert_eq!(decode_tag(&encode_tag(MAX_SLOTS as u32)), None);
        assert_eq!(decode_tag(&[0u8; 24]), None);
        assert_eq!(decode_tag(&encode_tag(1)[..20]), None);
        let mut t = encode_tag(1);
        t[16] ^= 1;
        assert_eq!(decode_tag(&t), None, "wrong file size");
    }

    #[test]
    fn offsets_are_checked() {
        let off = view_offset(SLOT_FILE_SIZE as u64 - 8192).unwrap();
        assert_eq!(off, 8192);
        assert!(valid_offset(off));
        assert_eq!(view_offset(SLOT_FILE_SIZE as u64 + 1), None);
        assert_eq!(view_offset(SLOT_FILE_SIZE as u64 - 100), None);
        assert_eq!(view_offset(4096), None, "too small for a region");
        assert!(!valid_offset(u64::MAX - 4095));
        assert!(!valid_offset(100));
        assert!(!valid_offset(SLOT_FILE_SIZE as u64));
    }

    #[test]
    fn bells_roundtrip() {
        for b in [
            Bell::Doorbell { slot: 0 },
            Bell::Interrupt { slot: 62 },
            Bell::Heartbeat,
            Bell::Complete {
                slot: 3,
                entry: NUM_ENTRIES as u16 - 1,
            },
        ] {
            assert_eq!(Bell::decode(b.encode()), Some(b));
        }
    }

    proptest! {
        #[test]
        fn decoded_bells_are_in_range(b in any::<[u8; 4]>()) {
            match Bell::decode(b) {
                None | Some(Bell::Heartbeat) => {}
                Some(Bell::Doorbell { slot }) | Some(Bell::Interrupt { slot }) => {
                    prop_assert!((slot as usize) < MAX_SLOTS)
                }
                Some(Bell::Complete { slot, entry }) => {
                    prop_assert!((slot as usize) < MAX_SLOTS);
                    prop_assert!((entry as usize) < NUM_ENTRIES);
                }
            }
        }
    }
}
