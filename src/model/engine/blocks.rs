//! The KV cache's block bookkeeping: a fixed pool of blocks of `block_size` positions, each with
//! a reference count (the samples of one request share their prompt's blocks), and a prefix
//! cache: a full block is known by the hash of its tokens and of every block before it, so a
//! later request whose prompt starts the same way takes those blocks instead of computing them.
//! Blocks nobody uses any more stay cached until a new block is needed, least recently used
//! first. Nothing here touches a tensor; the engine copies and writes the blocks' contents.

use std::collections::{BTreeMap, HashMap};

/// A block's index in the cache tensors.
pub type BlockId = u32;

/// The hash of a full block: its tokens and the hash of the block before it.
pub fn chain_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same tokens hash alike in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug)]
pub struct BlockPool {
    block_size: usize,
    refs: Vec<u32>,
    /// Blocks holding nothing anyone may want.
    free: Vec<BlockId>,
    /// Full blocks by chain hash, whether in use or only cached.
    by_hash: HashMap<u64, BlockId>,
    hash_of: Vec<Option<u64>>,
    /// Cached blocks nobody uses, by the tick they were last released (oldest first).
    idle: BTreeMap<u64, BlockId>,
    idle_tick: Vec<u64>,
    tick: u64,
    /// Prefix-cache lookups that found a block, and those that did not.
    pub hits: u64,
    pub misses: u64,
}

impl BlockPool {
    pub fn new(blocks: usize, block_size: usize) -> BlockPool {
        BlockPool {
            block_size,
            refs: vec![0; blocks],
            // Popped from the end: low ids first, which keeps tests readable.
            free: (0..blocks as BlockId).rev().collect(),
            by_hash: HashMap::new(),
            hash_of: vec![None; blocks],
            idle: BTreeMap::new(),
            idle_tick: vec![0; blocks],
            tick: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a new allocation can take: free ones and cached ones nobody uses.
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// Blocks some sequence holds.
    pub fn used(&self) -> usize {
        self.total() - self.available()
    }

    /// A block for new contents (reference count 1): a free one, else the least recently used
    /// cached one, which leaves the prefix cache. `None` when every block is in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (&tick, &b) = self.idle.iter().next()?;
                self.idle.remove(&tick);
                if let Some(h) = self.hash_of[b as usize].take() {
                    self.by_hash.remove(&h);
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// One more holder of `b`.
    pub fn retain(&mut self, b: BlockId) {
        let i = b as usize;
        if self.refs[i] == 0 {
            self.idle.remove(&self.idle_tick[i]);
        }
        self.refs[i] += 1;
    }

    /// One holder fewer; a block nobody holds is cached if it is known by hash, else free.
    pub fn release(&mut self, b: BlockId) {
        let i = b as usize;
        debug_assert!(self.refs[i] > 0, "block {b} released more often than held");
        self.refs[i] = self.refs[i].saturating_sub(1);
        if self.refs[i] == 0 {
            if self.hash_of[i].is_some() {
                self.tick += 1;
                self.idle_tick[i] = self.tick;
                self.idle.insert(self.tick, b);
            } else {
                self.free.push(b);
            }
        }
    }

    pub fn refs(&self, b: BlockId) -> u32 {
        self.refs[b as usize]
    }

    /// The cached block with this chain hash, now held once more by the caller.
    pub fn lookup(&mut self, hash: u64) -> Option<BlockId> {
        match self.by_hash.get(&hash).copied() {
            Some(b) => {
                self.hits += 1;
                self.retain(b);
                Some(b)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Makes a full block findable by `hash` (a block whose contents another already has stays
    /// unpublished: the first one is kept).
    pub fn publish(&mut self, b: BlockId, hash: u64) {
        if self.hash_of[b as usize].is_none() && !self.by_hash.contains_key(&hash) {
            self.by_hash.insert(hash, b);
            self.hash_of[b as usize] = Some(hash);
        }
    }

    /// Whether the block is in the prefix cache.
    pub fn is_published(&self, b: BlockId) -> bool {
        self.hash_of[b as usize].is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_returns_to_the_pool_when_its_last_holder_releases_it() {
        let mut p = BlockPool::new(2, 4);
        let a = p.allocate().unwrap();
        p.retain(a);
        assert_eq!(p.available(), 1);
        p.release(a);
        assert_eq!(p.available(), 1, "still held once");
        p.release(a);
        assert_eq!(p.available(), 2);
    }

    #[test]
    fn a_published_block_is_found_again_after_its_holders_are_gone_until_it_is_needed() {
        let mut p = BlockPool::new(2, 4);
        let h = chain_hash(None, &[1, 2, 3, 4]);
        let a = p.allocate().unwrap();
        p.publish(a, h);
        p.release(a);
        assert_eq!(p.available(), 2, "cached blocks count as available");
        assert_eq!(p.lookup(h), Some(a));
        p.release(a);
        // Two new blocks are needed: the free one, then the cached one is evicted.
        let b = p.allocate().unwrap();
        let c = p.allocate().unwrap();
        assert_ne!(b, c);
        assert_eq!(p.lookup(h), None);
        assert!(p.allocate().is_none());
        assert_eq!((p.hits, p.misses), (1, 1));
    }

    #[test]
    fn the_least_recently_released_cached_block_is_evicted_first() {
        let mut p = BlockPool::new(2, 1);
        let (ha, hb) = (chain_hash(None, &[1]), chain_hash(None, &[2]));
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        p.publish(a, ha);
        p.publish(b, hb);
        p.release(b);
        p.release(a);
        let _ = p.allocate().unwrap();
        assert_eq!(p.lookup(ha), Some(a), "a was released last, so b went first");
        assert_eq!(p.lookup(hb), None);
    }

    #[test]
    fn chain_hashes_depend_on_every_block_before() {
        let first = chain_hash(None, &[1, 2]);
        assert_ne!(chain_hash(Some(first), &[3, 4]), chain_hash(None, &[3, 4]));
        assert_eq!(chain_hash(Some(first), &[3, 4]), chain_hash(Some(chain_hash(None, &[1, 2])), &[3, 4]));
    }
}
