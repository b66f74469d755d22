//! Task storage indexed by task id.
//!
//! Task ids are handed out densely from 1, so the nodes live in fixed-size chunks addressed by
//! id: a lookup is two array indexings (no hashing), and growth never moves existing nodes
//! (a hash map of a million nodes would rehash and copy them all, twice over, on the way).

use swarm_protocol::TaskId;

const CHUNK: usize = 4096;

/// Nodes by dense id.
pub(crate) struct Slab<T> {
    chunks: Vec<Vec<Option<T>>>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<T> Slab<T> {
    fn position(id: TaskId) -> Option<(usize, usize)> {
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        Some((index / CHUNK, index % CHUNK))
    }

    /// Stores a node. Ids must be inserted in increasing order (gaps are allowed).
    pub(crate) fn insert(&mut self, id: TaskId, value: T) {
        let Some((chunk, offset)) = Self::position(id) else {
            return;
        };
        while self.chunks.len() <= chunk {
            let mut fresh = Vec::with_capacity(CHUNK);
            fresh.resize_with(CHUNK, || None);
            self.chunks.push(fresh);
        }
        self.chunks[chunk][offset] = Some(value);
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<&T> {
        let (chunk, offset) = Self::position(id)?;
        self.chunks.get(chunk)?.get(offset)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut T> {
        let (chunk, offset) = Self::position(id)?;
        self.chunks.get_mut(chunk)?.get_mut(offset)?.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_found_by_id_across_chunks() {
        let mut slab = Slab::default();
        for i in 1..=10_000u64 {
            slab.insert(TaskId(i), i * 2);
        }
        assert_eq!(slab.get(TaskId(1)), Some(&2));
        assert_eq!(slab.get(TaskId(4097)), Some(&8194));
        assert_eq!(slab.get(TaskId(0)), None);
        assert_eq!(slab.get(TaskId(10_001)), None);
        if let Some(v) = slab.get_mut(TaskId(5)) {
            *v = 1;
        }
        assert_eq!(slab.get(TaskId(5)), Some(&1));
    }
}
