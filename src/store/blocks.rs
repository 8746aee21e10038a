//! Per-block checksums of a body: one xxh3-64 per [`BLOCK`] bytes, computed
//! while a fill streams (no second read) and recorded in the entry's
//! metadata beside the sha256 of the whole body. Reads of a committed entry
//! check exactly the blocks they send (see `reader`), so a flipped byte on
//! disk is caught on the first read that touches it.
//!
//! xxh3 is not cryptographic: it guards against damage at rest (bit rot, a
//! truncated or overwritten file), not against someone who can write the
//! cache directory and also its metadata.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Bytes per checked block; the last block of a body may be shorter.
pub const BLOCK: u64 = 256 * 1024;

/// The checksums of every block of one body, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSums {
    /// Block size these sums were taken with (always [`BLOCK`] today; kept
    /// so that a later size can read old entries).
    pub size: u64,
    /// xxh3-64 of each block, as one lower-case hex string (16 digits each):
    /// a JSON array of numbers would triple the metadata of a large body.
    #[serde(
        rename = "xxh3",
        serialize_with = "to_hex",
        deserialize_with = "from_hex"
    )]
    pub sums: Vec<u64>,
}

impl BlockSums {
    /// The block that holds byte `pos`, as `(index, start)`.
    pub fn block_of(&self, pos: u64) -> (usize, u64) {
        let index = pos / self.size;
        (index as usize, index * self.size)
    }

    /// Whether `data`, read from the start of block `index`, is that block.
    /// A block index past the recorded ones never matches.
    pub fn matches(&self, index: usize, data: &[u8]) -> bool {
        self.sums.get(index) == Some(&xxh3_64(data))
    }

    /// Whether these sums can describe a body of `len` bytes.
    pub fn fits(&self, len: u64) -> bool {
        self.size > 0 && self.sums.len() as u64 == len.div_ceil(self.size)
    }
}

/// Computes [`BlockSums`] over a body fed in pieces of any size.
#[derive(Clone)]
pub struct BlockHasher {
    sums: Vec<u64>,
    current: Xxh3,
    in_block: u64,
}

impl Default for BlockHasher {
    fn default() -> Self {
        BlockHasher {
            sums: Vec::new(),
            current: Xxh3::new(),
            in_block: 0,
        }
    }
}

impl BlockHasher {
    /// Feeds the next bytes of the body.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (BLOCK - self.in_block) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.in_block += now.len() as u64;
            if self.in_block == BLOCK {
                self.sums.push(self.current.digest());
                self.current.reset();
                self.in_block = 0;
            }
            data = rest;
        }
    }

    /// The sums of the body fed so far (a trailing partial block included).
    pub fn sums(&self) -> BlockSums {
        let mut sums = self.sums.clone();
        if self.in_block > 0 {
            sums.push(self.current.digest());
        }
        BlockSums { size: BLOCK, sums }
    }
}

fn to_hex<S: Serializer>(sums: &[u64], s: S) -> Result<S::Ok, S::Error> {
    let mut out = String::with_capacity(sums.len() * 16);
    for sum in sums {
        out.push_str(&format!("{sum:016x}"));
    }
    s.serialize_str(&out)
}

fn from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() % 16 != 0 || !text.is_ascii() {
        return Err(serde::de::Error::custom(
            "block sums are 16 hex digits each",
        ));
    }
    (0..text.len())
        .step_by(16)
        .map(|i| u64::from_str_radix(&text[i..i + 16], 16).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 3) as u8).collect()
    }

    #[test]
    fn pieces_of_any_size_give_the_sums_of_whole_blocks() {
        let data = body(2 * BLOCK as usize + 1000);
        let mut one = BlockHasher::default();
        one.update(&data);
        let mut many = BlockHasher::default();
        for piece in data.chunks(4093) {
            many.update(piece);
        }
        let sums = one.sums();
        assert_eq!(sums, many.sums());
        assert_eq!(sums.sums.len(), 3);
        assert!(sums.fits(data.len() as u64));
        assert!(!sums.fits(data.len() as u64 + BLOCK));
        for (i, block) in data.chunks(BLOCK as usize).enumerate() {
            assert!(sums.matches(i, block));
        }
        let mut flipped = data[..BLOCK as usize].to_vec();
        flipped[17] ^= 1;
        assert!(!sums.matches(0, &flipped));
        assert!(!sums.matches(3, &data[..10]), "no such block");
    }

    #[test]
    fn an_empty_body_has_no_blocks_and_sums_round_trip_as_hex() {
        let sums = BlockHasher::default().sums();
        assert!(sums.sums.is_empty() && sums.fits(0));
        let mut hasher = BlockHasher::default();
        hasher.update(&body(BLOCK as usize + 1));
        let sums = hasher.sums();
        let json = serde_json::to_string(&sums).unwrap();
        assert!(json.contains("\"xxh3\":\""), "{json}");
        assert_eq!(serde_json::from_str::<BlockSums>(&json).unwrap(), sums);
        assert!(serde_json::from_str::<BlockSums>(r#"{"size":1,"xxh3":"abc"}"#).is_err());
    }

    #[test]
    fn block_of_finds_the_block_start() {
        let sums = BlockSums {
            size: BLOCK,
            sums: vec![0; 3],
        };
        assert_eq!(sums.block_of(0), (0, 0));
        assert_eq!(sums.block_of(BLOCK - 1), (0, 0));
        assert_eq!(sums.block_of(BLOCK + 5), (1, BLOCK));
    }
}
