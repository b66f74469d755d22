//! A caller's W3C Trace Context (`traceparent`, `tracestate`), kept with the objective it
//! submitted so the objective's spans continue the caller's trace, even after a restart.
//!
//! Only the shape is checked here (the `traceparent` grammar of W3C Trace Context level 1, a
//! bounded `tracestate`); turning it into a span's parent is the `agents` crate's `trace`
//! module, the one place that knows OpenTelemetry.

use serde::{Deserialize, Serialize};

/// The longest `tracestate` kept: W3C allows 32 members of at most 256 characters each, and
/// asks vendors to propagate at least 512 characters.
pub const TRACESTATE_LEN_MAX: usize = 8192;

/// A valid `traceparent` (version `00`: `00-<trace id>-<parent id>-<flags>`, lowercase hex,
/// ids not all zero) and the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceContext {
    /// The `traceparent` header, as received.
    pub traceparent: String,
    /// The `tracestate` header, if one came (and was at most [`TRACESTATE_LEN_MAX`] long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of a `traceparent` and `tracestate` header pair, or `None` when
    /// `traceparent` is not a valid version-00 value. W3C Trace Context says a receiver that
    /// cannot parse `traceparent` starts a new trace, so an invalid one is ignored, never
    /// refused; a `tracestate` that is too long is dropped, as the standard allows.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent.trim();
        if !is_traceparent(traceparent) {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= TRACESTATE_LEN_MAX)
            .map(str::to_owned);
        Some(Self {
            traceparent: traceparent.to_owned(),
            tracestate,
        })
    }

    /// The trace id (32 lowercase hex digits); empty for a context that did not come
    /// through [`TraceContext::parse`] and is not valid (one read from an edited log).
    pub fn trace_id(&self) -> &str {
        self.part(3..35)
    }

    /// The caller's span id (16 lowercase hex digits); empty when not valid.
    pub fn parent_id(&self) -> &str {
        self.part(36..52)
    }

    /// The trace flags (bit 0: sampled); 0 when not valid.
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(self.part(53..55), 16).unwrap_or(0)
    }

    /// True if `traceparent` is a valid version-00 value.
    pub fn is_valid(&self) -> bool {
        is_traceparent(&self.traceparent)
    }

    fn part(&self, range: std::ops::Range<usize>) -> &str {
        if self.is_valid() {
            self.traceparent.get(range).unwrap_or_default()
        } else {
            ""
        }
    }
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return false;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    *version == "00"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_with_its_parts() {
        let cx = TraceContext::parse(VALID, Some(" congo=t61rcWkgMzE ")).expect("valid");
        assert_eq!(cx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.parent_id(), "00f067aa0ba902b7");
        assert_eq!(cx.flags(), 1);
        assert_eq!(cx.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn an_empty_or_oversized_tracestate_is_dropped() {
        let long = "a=".to_owned() + &"b".repeat(TRACESTATE_LEN_MAX);
        for state in ["", "  ", long.as_str()] {
            let cx = TraceContext::parse(VALID, Some(state)).expect("valid");
            assert_eq!(cx.tracestate, None);
        }
    }
}
