//! Spilling: when the disk refuses a fill's bytes (out of space, out of
//! inodes, a quota), the rest of the body is held in memory just long enough
//! for the fill's readers to take it, so their downloads complete, uncached.
//! The memory is a window: the writer waits while it is more than [`WINDOW`]
//! ahead of the slowest reader, so a full disk never turns into a full RAM.
//!
//! Readers of a fill register their position here from the start (a lock
//! per chunk), so that when a spill begins the writer knows who still needs
//! which bytes.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// Most bytes held in memory ahead of the slowest reader of a spilled fill.
pub(crate) const WINDOW: u64 = 8 << 20;

/// Reader positions and, once spilling, the bytes the disk did not take.
#[derive(Default)]
pub(crate) struct Spill {
    /// Bytes `[0, on_disk)` are in the file; the rest (from `base`) in `chunks`.
    on_disk: Option<u64>,
    base: u64,
    chunks: VecDeque<Bytes>,
    end: u64,
    readers: HashMap<u64, u64>,
    next_id: u64,
}

impl Spill {
    /// A new reader at `pos`; returns its id.
    pub(crate) fn register(&mut self, pos: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.readers.insert(id, pos);
        id
    }

    /// Reader `id` has consumed everything before `pos`. True when memory
    /// was freed (the writer may go on).
    pub(crate) fn advance(&mut self, id: u64, pos: u64) -> bool {
        if let Some(p) = self.readers.get_mut(&id) {
            *p = pos;
        }
        self.trim()
    }

    /// Reader `id` is gone.
    pub(crate) fn unregister(&mut self, id: u64) {
        self.readers.remove(&id);
        self.trim();
    }

    /// The disk took bytes up to `on_disk` and no more.
    pub(crate) fn start(&mut self, on_disk: u64) {
        self.on_disk = Some(on_disk);
        self.base = on_disk;
        self.end = on_disk;
    }

    /// Where the file's bytes end, once spilling.
    pub(crate) fn on_disk(&self) -> Option<u64> {
        self.on_disk
    }

    /// How far the held bytes run ahead of the slowest reader; `None` when
    /// no reader is left.
    pub(crate) fn ahead_of_slowest(&self) -> Option<u64> {
        let slowest = self.readers.values().copied().min()?;
        Some(self.end.saturating_sub(slowest.max(self.base)))
    }

    /// Holds the next bytes of the body.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.end += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// Up to `max` held bytes at `pos`; `None` if they are not held.
    pub(crate) fn read(&self, pos: u64, max: u64) -> Option<Bytes> {
        let mut offset = self.base;
        for chunk in &self.chunks {
            let len = chunk.len() as u64;
            if pos < offset + len && pos >= offset {
                let start = (pos - offset) as usize;
                let n = (len - (pos - offset)).min(max) as usize;
                return Some(chunk.slice(start..start + n));
            }
            offset += len;
        }
        None
    }

    /// Drops chunks every reader is past.
    fn trim(&mut self) -> bool {
        if self.on_disk.is_none() {
            return false;
        }
        let slowest = self.readers.values().copied().min().unwrap_or(self.end);
        let mut freed = false;
        while let Some(first) = self.chunks.front() {
            let len = first.len() as u64;
            if self.base + len > slowest {
                break;
            }
            self.base += len;
            self.chunks.pop_front();
            freed = true;
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_are_freed_once_every_reader_is_past_them() {
        let mut s = Spill::default();
        let a = s.register(0);
        let b = s.register(0);
        s.start(10);
        s.push(Bytes::from_static(b"0123456789"));
        s.push(Bytes::from_static(b"abcdefghij"));
        assert_eq!(s.read(12, 100).unwrap(), &b"23456789"[..]);
        assert_eq!(s.read(20, 4).unwrap(), &b"abcd"[..]);
        assert_eq!(s.ahead_of_slowest(), Some(20));
        assert!(!s.advance(a, 25), "b still needs the first chunk");
        assert!(s.advance(b, 21));
        assert_eq!(s.read(12, 1), None);
        assert_eq!(s.read(21, 2).unwrap(), &b"bc"[..]);
        assert_eq!(s.ahead_of_slowest(), Some(9));
        s.unregister(a);
        s.unregister(b);
        assert_eq!(s.ahead_of_slowest(), None);
    }
}
