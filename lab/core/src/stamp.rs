//! The write stamp: every 512-byte sector the guest agent writes starts with
//! a header that says which write put it there, so a scan after a crash can
//! tell, sector by sector, whose data it sees (or zeroes, or garbage).
//!
//! 512 bytes is the smallest LBA a device can have, so a write torn at any
//! LBA boundary shows up as sectors of different writes.

use serde::{Deserialize, Serialize};

pub const SECTOR: usize = 512;
const MAGIC: [u8; 8] = *b"LABSTAMP";
const HEADER: usize = 48;

/// Who wrote a sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Identifies the run (so data from an earlier run is never mistaken).
    pub run: u64,
    pub file: u32,
    /// Unique per write within a run.
    pub write: u32,
    /// Per-file count of writes, for ordering.
    pub generation: u32,
    /// Byte offset of this sector in the file.
    pub offset: u64,
}

/// What a sector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sector {
    Zero,
    Stamped(Stamp),
    /// Neither zeroes nor a valid stamp (torn inside a sector, stale, corrupt).
    Garbage,
}

/// CRC-32C (Castagnoli), bitwise: sectors are few and this keeps the crate
/// free of dependencies and of unsafe.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Deterministic filler for the rest of the sector, from the stamp.
fn fill(stamp: &Stamp, out: &mut [u8]) {
    let mut x = stamp.run ^ (u64::from(stamp.write) << 32) ^ stamp.offset ^ 0x9E37_79B9_7F4A_7C15;
    for chunk in out.chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes one stamped sector into `out` (exactly SECTOR bytes).
pub fn encode(stamp: &Stamp, out: &mut [u8]) {
    assert_eq!(out.len(), SECTOR, "a stamp fills one sector");
    out[0..8].copy_from_slice(&MAGIC);
    out[8..16].copy_from_slice(&stamp.run.to_le_bytes());
    out[16..20].copy_from_slice(&stamp.file.to_le_bytes());
    out[20..24].copy_from_slice(&stamp.write.to_le_bytes());
    out[24..28].copy_from_slice(&stamp.generation.to_le_bytes());
    out[28..36].copy_from_slice(&stamp.offset.to_le_bytes());
    out[36..44].fill(0);
    fill(stamp, &mut out[HEADER..]);
    let crc = crc32c(&[&out[..44], &out[HEADER..]].concat());
    out[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// Fills a buffer for a write of `buf.len()` bytes at file offset `offset`
/// (both sector aligned), stamping every sector.
pub fn encode_write(run: u64, file: u32, write: u32, generation: u32, offset: u64, buf: &mut [u8]) {
    assert!(
        buf.len().is_multiple_of(SECTOR) && offset.is_multiple_of(SECTOR as u64),
        "stamped writes are sector aligned"
    );
    for (i, sector) in buf.chunks_mut(SECTOR).enumerate() {
        let s = Stamp {
            run,
            file,
            write,
            generation,
            offset: offset + (i * SECTOR) as u64,
        };
        encode(&s, sector);
    }
}

/// Reads one sector.
pub fn decode(sector: &[u8]) -> Sector {
    if sector.iter().all(|&b| b == 0) {
        return Sector::Zero;
    }
    if sector.len() != SECTOR || sector[0..8] != MAGIC {
        return Sector::Garbage;
    }
    let u32_at = |i: usize| u32::from_le_bytes(sector[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(sector[i..i + 8].try_into().expect("8 bytes"));
    if crc32c(&[&sector[..44], &sector[HEADER..]].concat()) != u32_at(44) {
        return Sector::Garbage;
    }
    Sector::Stamped(Stamp {
        run: u64_at(8),
        file: u32_at(16),
        write: u32_at(20),
        generation: u32_at(24),
        offset: u64_at(28),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 test vector: 32 bytes of zeroes.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn zero_sector_is_zero() {
        assert_eq!(decode(&[0u8; SECTOR]), Sector::Zero);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(run: u64, file: u32, write: u32, generation: u32, off in 0u64..(1 << 40)) {
            let s = Stamp { run, file, write, generation, offset: off * SECTOR as u64 };
            let mut buf = [0u8; SECTOR];
            encode(&s, &mut buf);
            prop_assert_eq!(decode(&buf), Sector::Stamped(s));
        }

        #[test]
        fn any_flipped_byte_is_garbage(idx in 0usize..SECTOR, flip in 1u8..=255) {
            let s = Stamp { run: 7, file: 1, write: 3, generation: 2, offset: 4096 };
            let mut buf = [0u8; SECTOR];
            encode(&s, &mut buf);
            buf[idx] ^= flip;
            prop_assert_eq!(decode(&buf), Sector::Garbage);
        }

        #[test]
        fn a_write_stamps_each_sector_with_its_offset(sectors in 1usize..16, base in 0u64..1000) {
            let mut buf = vec![0u8; sectors * SECTOR];
            encode_write(1, 2, 3, 4, base * SECTOR as u64, &mut buf);
            for (i, sec) in buf.chunks(SECTOR).enumerate() {
                match decode(sec) {
                    Sector::Stamped(s) => prop_assert_eq!(s.offset, (base + i as u64) * SECTOR as u64),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
