//! Task storage indexed by task id.
//!
//! Task ids are handed out densely from 1, so the nodes live in fixed-size chunks addressed by
//! id: a lookup is two array indexings (no hashing), and growth never moves existing nodes
//! (a hash map of a million nodes would rehash and copy them all, twice over, on the way).

use swarm_protocol::TaskId;

const CHUNK: usize = 4096;

/// A chunk of slots and how many hold a node.
struct Chunk<T> {
    live: usize,
    slots: Vec<Option<T>>,
}

/// Nodes by dense id. A chunk is allocated when its first node arrives and freed when its last
/// node is removed, so memory follows the live tasks, not the highest id ever handed out.
pub(crate) struct Slab<T> {
    chunks: Vec<Option<Chunk<T>>>,
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

    /// Stores a node (replacing any with the same id).
    pub(crate) fn insert(&mut self, id: TaskId, value: T) {
        let Some((chunk, offset)) = Self::position(id) else {
            return;
        };
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
        }
        let chunk = self.chunks[chunk].get_or_insert_with(|| {
            let mut slots = Vec::with_capacity(CHUNK);
            slots.resize_with(CHUNK, || None);
            Chunk { live: 0, slots }
        });
        // Written in place, and without dropping first into an empty slot (the usual case):
        // the node is large, and a `replace` moves it twice.
        match &mut chunk.slots[offset] {
            Some(node) => *node = value,
            empty => {
                *empty = Some(value);
                chunk.live += 1;
            }
        }
    }

    /// Removes a node, freeing its chunk when it was the chunk's last.
    pub(crate) fn remove(&mut self, id: TaskId) -> Option<T> {
        let (index, offset) = Self::position(id)?;
        let slot = self.chunks.get_mut(index)?;
        let chunk = slot.as_mut()?;
        let value = chunk.slots.get_mut(offset)?.take()?;
        chunk.live -= 1;
        if chunk.live == 0 {
            *slot = None;
        }
        Some(value)
    }

    pub(crate) fn get(&self, id: TaskId) -> Option<&T> {
        let (chunk, offset) = Self::position(id)?;
        self.chunks
            .get(chunk)?
            .as_ref()?
            .slots
            .get(offset)?
            .as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut T> {
        let (chunk, offset) = Self::position(id)?;
        self.chunks
            .get_mut(chunk)?
            .as_mut()?
            .slots
            .get_mut(offset)?
            .as_mut()
    }

    /// Every node with its id, by increasing id (reversible). Freed chunks are skipped whole.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (TaskId, &T)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| chunk.as_ref().map(|chunk| (c, chunk)))
            .flat_map(|(c, chunk)| {
                chunk
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(offset, slot)| {
                        let id = TaskId((c * CHUNK + offset) as u64 + 1);
                        slot.as_ref().map(|node| (id, node))
                    })
            })
    }

    /// Chunks currently allocated.
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
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

    #[test]
    fn iteration_is_by_id_both_ways() {
        let mut slab = Slab::default();
        for id in [3, 1, CHUNK as u64 * 2 + 5, 2] {
            slab.insert(TaskId(id), id);
        }
        slab.remove(TaskId(2));
        let ids: Vec<u64> = slab.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [1, 3, CHUNK as u64 * 2 + 5]);
        let back: Vec<u64> = slab.iter().rev().map(|(_, v)| *v).collect();
        assert_eq!(back, [CHUNK as u64 * 2 + 5, 3, 1]);
    }

    #[test]
    fn removing_the_last_node_of_a_chunk_frees_it() {
        let mut slab = Slab::default();
        let far = TaskId(10 * CHUNK as u64 + 5);
        slab.insert(TaskId(1), 1);
        slab.insert(TaskId(2), 2);
        slab.insert(far, 3);
        assert_eq!(
            slab.allocated(),
            2,
            "only chunks that hold nodes are allocated"
        );
        assert_eq!(slab.remove(TaskId(1)), Some(1));
        assert_eq!(slab.allocated(), 2);
        assert_eq!(slab.remove(TaskId(2)), Some(2));
        assert_eq!(slab.allocated(), 1);
        assert_eq!(slab.remove(TaskId(2)), None);
        assert_eq!(slab.get(far), Some(&3));
        assert_eq!(slab.remove(far), Some(3));
        assert_eq!(slab.allocated(), 0);
    }
}
