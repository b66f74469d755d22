//! The fingerprint of an objective: what a repeated submit under one idempotency key is
//! compared by, stored in the log's objective index.
//!
//! A fingerprint must not change with the process, the build or an upgrade, or every
//! idempotent retry after one would answer a conflict. Version 2 (this one) is the first eight
//! bytes of SHA-256 over a canonical JSON encoding of the objective (object members sorted by
//! key, whatever order they arrived in and whether or not serde_json preserves it), with the
//! top four bits set to the version, so a later version can tell which one a stored value is.
//! Version 1, written by earlier releases, was `rustc_hash::FxHasher` over the objective's
//! JSON as serialized; its algorithm (rustc-hash 2.1) is frozen here so that old logs still
//! match: [`Fingerprint::matches`] accepts either.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The current fingerprint version, in the top four bits of every fingerprint it makes.
pub const FINGERPRINT_VERSION: u64 = 2;

/// What a stored fingerprint is compared with: the fingerprints of one objective in every
/// version that may have written one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    current: u64,
    legacy: u64,
}

impl Fingerprint {
    /// The fingerprints of `value` (an objective).
    pub fn of<T: Serialize>(value: &T) -> Self {
        // Serializing plain data cannot fail; an empty encoding would compare equal only to
        // another value that also failed to encode.
        let as_written = serde_json::to_vec(value).unwrap_or_default();
        Self {
            current: current(value),
            legacy: fx_v1(&as_written),
        }
    }

    /// The fingerprint to store (the current version's).
    pub fn value(self) -> u64 {
        self.current
    }

    /// True if `stored` is this objective's fingerprint in any version.
    pub fn matches(self, stored: u64) -> bool {
        stored == self.current || stored == self.legacy
    }
}

/// The current version's fingerprint of `value` alone (what is stored).
pub(crate) fn current<T: Serialize>(value: &T) -> u64 {
    let mut canonical = Vec::new();
    if let Ok(tree) = serde_json::to_value(value) {
        write_canonical(&tree, &mut canonical);
    }
    let digest = Sha256::new()
        .chain_update(b"swarm objective fingerprint\n")
        .chain_update(&canonical)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (FINGERPRINT_VERSION << 60) | (u64::from_be_bytes(first) >> 4)
}

/// JSON with every object's members sorted by key, no whitespace. Strings and numbers are
/// written as serde_json writes them.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(key, out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Version 1: `rustc_hash::FxHasher::default()`, `write(bytes)`, `finish()`, as rustc-hash
/// 2.1 computes it on 64-bit targets.
fn fx_v1(bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    // `FxHasher::write` feeds `hash_bytes` to `write_u64` on a hash starting at zero.
    fx_hash_bytes(bytes).wrapping_mul(K).rotate_left(26)
}

fn fx_hash_bytes(bytes: &[u8]) -> u64 {
    const SEED1: u64 = 0x243f_6a88_85a3_08d3;
    const SEED2: u64 = 0x1319_8a2e_0370_7344;
    const PREVENT_TRIVIAL_ZERO_COLLAPSE: u64 = 0xa409_3822_299f_31d0;
    let len = bytes.len();
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    let mut s0 = SEED1;
    let mut s1 = SEED2;
    if len <= 16 {
        if len >= 8 {
            s0 ^= word(0);
            s1 ^= word(len - 8);
        } else if len >= 4 {
            s0 ^= half(0);
            s1 ^= half(len - 4);
        } else if len > 0 {
            s0 ^= u64::from(bytes[0]);
            s1 ^= (u64::from(bytes[len - 1]) << 8) | u64::from(bytes[len / 2]);
        }
    } else {
        let mut at = 0;
        // Whole 16-byte chunks of all but the last byte.
        while at + 16 < len {
            let t = multiply_mix(s0 ^ word(at), PREVENT_TRIVIAL_ZERO_COLLAPSE ^ word(at + 8));
            s0 = s1;
            s1 = t;
            at += 16;
        }
        s0 ^= word(len - 16);
        s1 ^= word(len - 8);
    }
    multiply_mix(s0, s1) ^ (len as u64)
}

fn multiply_mix(x: u64, y: u64) -> u64 {
    let full = u128::from(x).wrapping_mul(u128::from(y));
    (full as u64) ^ ((full >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use std::hash::Hasher;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_frozen_version_1_equals_rustc_hash_on_every_length_class() {
        // Lengths 0, 1-3, 4-7, 8-16, and longer (with and without a partial last chunk).
        for len in [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 100, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut hasher = rustc_hash::FxHasher::default();
            hasher.write(&bytes);
            assert_eq!(fx_v1(&bytes), hasher.finish(), "length {len}");
        }
    }

    #[test]
    fn member_order_does_not_change_the_fingerprint() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap_or_default();
        assert_eq!(Fingerprint::of(&a).value(), Fingerprint::of(&b).value());
        assert_ne!(
            Fingerprint::of(&a).value(),
            Fingerprint::of(&json!({"a": 1})).value()
        );
    }

    #[test]
    fn the_version_is_in_the_top_bits_and_the_value_is_pinned() {
        let fingerprint = Fingerprint::of(&json!({"goal": "g", "tasks": []})).value();
        assert_eq!(fingerprint >> 60, FINGERPRINT_VERSION);
        // Pinned: a change of the encoding or the hash must be a new version, never this one.
        assert_eq!(fingerprint, PINNED);
    }

    #[test]
    fn a_version_1_fingerprint_still_matches() {
        let value = json!({"goal": "g"});
        let written = serde_json::to_vec(&value).unwrap_or_default();
        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(&written);
        let fingerprint = Fingerprint::of(&value);
        assert!(fingerprint.matches(hasher.finish()));
        assert!(fingerprint.matches(fingerprint.value()));
        assert!(!fingerprint.matches(hasher.finish() ^ 1));
    }

    const PINNED: u64 = 0x2c7a_152f_72b6_f23a;
}
